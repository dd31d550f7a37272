"""Every command on bad input, as an operator runs it (the console scripts, subprocesses): no
traceback ever; a bad flag or ``BOOTSTRAPPERD_*`` variable, or a path that is no bsroot, is one
line naming the bad thing and exit 2 (argparse's own usage lines may precede a bad flag's line;
a variable's error is that line alone); a cluster description that cannot be read is exit 1, as
an invalid one is. And ``serve`` refuses a bsroot with nothing to boot, before it binds
anything, unless told to serve anyway.

Nothing here binds a socket: every ``serve`` that could get as far as resolving where to listen
is given ``--interface`` of an interface that does not exist, so it stops there (exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootstrapperd import cli
from bootstrapperd import pack as pack_module
from bootstrapperd.pack import init_bsroot
from tests.conftest import EXAMPLE, need_tools

BIN = Path(sys.executable).parent
BOOTSTRAPPERD = str(BIN / "bootstrapperd")
PACK = str(BIN / "bootstrapperd-pack")
NO_SUCH_IF = "bsd-none0"  # a valid interface name that no machine has: serve stops before binding
TIMEOUT = 60  # a command that hangs (a FIFO read forever) fails the test instead of the suite
MAC = "52:54:00:77:00:11"  # the example's master


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.err.splitlines()


def run(argv: list[str], env: dict[str, str] | None = None, prefix: list[str] | None = None) -> Run:
    """Run a console script with a clean BOOTSTRAPPERD_* environment plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOOTSTRAPPERD_")}
    result = subprocess.run(
        [*(prefix or []), *argv],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    return Run(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def bare(scratch: Path) -> Path:
    """A bsroot as ``bootstrapperd-pack --no-downloads`` leaves it: nothing to boot."""
    return init_bsroot(EXAMPLE, scratch / "bare").root


@pytest.fixture(scope="module")
def files(scratch: Path) -> dict[str, Path]:
    """Paths that are bad in every place a file or directory is wanted."""
    base = scratch / "files"
    base.mkdir()
    (base / "a-directory").mkdir()
    (base / "a-file").write_text("not a bsroot\n")
    (base / "non-utf8.yml").write_bytes(b"bootstrapper: \xff\xfe\n")
    (base / "no-read.yml").write_bytes(EXAMPLE.read_bytes())
    (base / "no-read.yml").chmod(0)
    os.mkfifo(base / "a-fifo")
    (base / "no-desc").mkdir()
    desc = base / "bad-desc"
    init_bsroot(EXAMPLE, desc)
    (desc / "config" / "cluster-desc.yml").write_bytes(b"\xff\xfe not utf-8\n")
    return {p.name: p for p in base.iterdir()} | {"missing": base / "missing"}


def without_read_override() -> list[str]:
    """A prefix that makes a file without read permission unreadable to this test's user:
    for root, drop the capabilities that ignore file modes."""
    if os.geteuid() != 0:
        return []
    need_tools("setpriv")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def one_line(result: Run, *words: str, usage: bool = False) -> str:
    """The error is one line holding ``words``; with ``usage``, argparse's usage lines may
    precede it (a bad flag), else nothing else is on stderr (a bad variable)."""
    assert result.code == 2, result
    lines = result.lines
    assert lines, result
    if usage:
        assert lines[0].startswith("usage: "), result
        assert all(line.startswith(" ") for line in lines[1:-1]), result
    else:
        assert len(lines) == 1, result
    last = lines[-1]
    assert ": error: " in last, result
    for word in words:
        assert word in last, (word, result)
    return last


# ---- bootstrapperd: every variable -----------------------------------------------------------

SERVE_VARIABLES = [
    ("LOG_LEVEL", "loud", "is not one of debug, info, warning, error"),
    ("LOG_LEVEL", "INFO", "is not one of debug, info, warning, error"),
    ("LOG_FORMAT", "xml", "is not one of text, json"),
    ("VERIFY_BSROOT", "sometimes", "is not one of full, quick, off"),
    ("HTTP_PORT", "0", "is not a port number"),
    ("HTTP_PORT", "70000", "is not a port number"),
    ("HTTP_PORT", "http", "is not a port number"),
    ("HTTP_PORT", "٨٠", "is not a port number"),
    ("GRACE_PERIOD", "-1", "is not a number of seconds"),
    ("GRACE_PERIOD", "soon", "is not a number of seconds"),
    ("GRACE_PERIOD", "nan", "is not a number of seconds"),
    ("GRACE_PERIOD", "inf", "is not a number of seconds"),
    ("ADDRESS", "10.77.0.300", "is not an IPv4 address"),
    ("ADDRESS", "::1", "is not an IPv4 address"),
    ("INTERFACE", "eth0/1", "is not an interface name"),
    ("INTERFACE", "a-name-too-long-for-linux", "is not an interface name"),
    ("INTERFACE", "bs 0", "is not an interface name"),
    ("SERVE_WITHOUT_BOOT_FILES", "maybe", "is not a boolean"),
]


@pytest.mark.parametrize(
    ("name", "value", "says"), SERVE_VARIABLES, ids=[f"{n}={v}" for n, v, _ in SERVE_VARIABLES]
)
def test_serve_refuses_a_bad_variable(name: str, value: str, says: str, bare: Path) -> None:
    # (the bare bsroot would stop serve before it looks for an interface anyway)
    interface = [] if name == "INTERFACE" else ["--interface", NO_SUCH_IF]
    result = run(
        [BOOTSTRAPPERD, "serve", *interface],
        {f"BOOTSTRAPPERD_{name}": value, "BOOTSTRAPPERD_BSROOT": str(bare)},
    )
    line = one_line(result, f"BOOTSTRAPPERD_{name}={value!r} {says}")
    assert line.startswith("bootstrapperd serve: error: "), line


def test_a_flag_wins_over_its_variable(bare: Path) -> None:
    """The flag is used, so the variable it overrides is not looked at."""
    result = run(
        [BOOTSTRAPPERD, "serve", "--interface", NO_SUCH_IF, "--serve-without-boot-files"],
        {"BOOTSTRAPPERD_BSROOT": str(bare), "BOOTSTRAPPERD_INTERFACE": "eth0/1"},
    )
    assert result.code == 1, result
    assert f"interface '{NO_SUCH_IF}' does not exist" in result.err


def test_an_empty_variable_counts_as_unset(bare: Path) -> None:
    """An empty line of an environment file (``BOOTSTRAPPERD_INTERFACE=``) is the default."""
    empty = {f"BOOTSTRAPPERD_{name}": "" for name, _, _ in SERVE_VARIABLES}
    result = run(
        [BOOTSTRAPPERD, "serve", "--interface", NO_SUCH_IF, "--serve-without-boot-files"],
        {**empty, "BOOTSTRAPPERD_BSROOT": str(bare)},
    )
    assert result.code == 1, result
    assert f"cannot start: interface '{NO_SUCH_IF}' does not exist" in result.err
    assert "interface ''" not in result.err
    # and an empty BSROOT is no bsroot at all
    result = run([BOOTSTRAPPERD, "serve"], {**empty, "BOOTSTRAPPERD_BSROOT": ""})
    one_line(result, "no bsroot", "--bsroot", "BOOTSTRAPPERD_BSROOT")


@pytest.mark.parametrize("command", ["serve", "render"])
def test_bsroot_variable_naming_no_bsroot(command: str, files: dict[str, Path]) -> None:
    argv = [BOOTSTRAPPERD, command]
    if command == "render":
        argv += ["--mac", MAC, "--kind", "ipxe"]
    result = run(argv, {"BOOTSTRAPPERD_BSROOT": str(files["missing"])})
    one_line(result, str(files["missing"]), "does not exist", "bootstrapperd-pack")


DEMO_VARIABLES = [
    ("LOG_LEVEL", "loud", "is not one of debug, info, warning, error"),
    ("LOG_FORMAT", "xml", "is not one of text, json"),
    ("LAB_ACCEL", "xen", "is not one of kvm, tcg"),
]


@pytest.mark.parametrize(
    ("name", "value", "says"), DEMO_VARIABLES, ids=[f"{n}={v}" for n, v, _ in DEMO_VARIABLES]
)
def test_demo_refuses_a_bad_variable(name: str, value: str, says: str) -> None:
    result = run([BOOTSTRAPPERD, "demo"], {f"BOOTSTRAPPERD_{name}": value})
    line = one_line(result, f"BOOTSTRAPPERD_{name}={value!r} {says}")
    assert line.startswith("bootstrapperd demo: error: "), line


def test_demo_refuses_a_lab_cache_that_is_a_file(files: dict[str, Path]) -> None:
    cache = str(files["a-file"])
    result = run([BOOTSTRAPPERD, "demo"], {"BOOTSTRAPPERD_LAB_CACHE": cache})
    one_line(result, f"BOOTSTRAPPERD_LAB_CACHE={cache!r} is not a directory")


# ---- bootstrapperd: every flag and argument --------------------------------------------------

FLAGS = [
    (["serve", "--http-port", "0"], ["--http-port", "'0' is not a port number"]),
    (["serve", "--http-port", "70000"], ["--http-port", "'70000' is not a port number"]),
    (["serve", "--grace-period", "-1"], ["--grace-period", "'-1' is not a number of seconds"]),
    (["serve", "--grace-period", "nan"], ["--grace-period", "is not a number of seconds"]),
    (["serve", "--address", "10.0.0"], ["--address", "'10.0.0' is not an IPv4 address"]),
    (["serve", "--interface", ""], ["--interface", "'' is not an interface name"]),
    (["serve", "--verify-bsroot", "no"], ["--verify-bsroot", "'no' is not one of full"]),
    (["serve", "--log-level", "loud"], ["--log-level", "'loud' is not one of debug"]),
    (["serve", "--log-format", "xml"], ["--log-format", "'xml' is not one of text, json"]),
    (["serve", "--bsroot", ""], ["--bsroot", "'' is not a path"]),
    (["serve", "--serve-without-boot-files=yes"], ["--serve-without-boot-files"]),
    (["serve", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["render", "--mac", "zz", "--kind", "ipxe"], ["--mac", "'zz' is not a MAC address"]),
    (["render", "--mac", MAC, "--kind", "bios"], ["--kind", "'bios'"]),
    (["render", "--kind", "ipxe"], ["--mac"]),
    (["render", "--mac", MAC, "--kind", "ipxe", "--server", "ftp://x"], ["--server", "'ftp://x'"]),
    (["render", "--mac", MAC, "--kind", "ipxe", "--server", "http://"], ["--server", "'http://'"]),
    (["preflight"], ["--bsroot"]),
    (["preflight", "--bsroot", "x", "--http-port", "0"], ["--http-port", "'0' is not a port"]),
    (["preflight", "--bsroot", "x", "--interface", "a b"], ["--interface", "'a b'"]),
    (["check"], ["file"]),
    (["check", "a.yml", "b.yml"], ["unrecognized arguments: b.yml"]),
    (["demo", "--example", ""], ["--example", "'' is not a path"]),
    (["demo", "--log-level", "loud"], ["--log-level", "'loud' is not one of debug"]),
    ([], ["COMMAND"]),
    (["boot"], ["'boot'"]),
]


@pytest.mark.parametrize(("argv", "words"), FLAGS, ids=[" ".join(a) or "-" for a, _ in FLAGS])
def test_bootstrapperd_refuses_a_bad_flag(argv: list[str], words: list[str], bare: Path) -> None:
    # A good bsroot, so that the bad flag is the only thing wrong.
    result = run([BOOTSTRAPPERD, *argv], {"BOOTSTRAPPERD_BSROOT": str(bare)})
    one_line(result, *words, usage=True)


@pytest.mark.parametrize("command", ["serve", "render", "preflight"])
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("missing", "does not exist"),
        ("a-file", "is not a directory"),
        ("no-desc", "is not a bsroot: it has no config/cluster-desc.yml"),
    ],
)
def test_a_path_that_is_no_bsroot(
    command: str, name: str, says: str, files: dict[str, Path]
) -> None:
    path = files[name]
    argv = [BOOTSTRAPPERD, command, "--bsroot", str(path)]
    if command == "render":
        argv += ["--mac", MAC, "--kind", "ipxe"]
    elif command == "serve":
        argv += ["--interface", NO_SUCH_IF]
    line = one_line(run(argv), str(path), says)
    assert line.startswith(f"bootstrapperd {command}: error: "), line
    if name != "a-file":
        assert f"bootstrapperd-pack CLUSTER-DESC.yml -o {path}" in line


def test_serve_without_any_bsroot() -> None:
    one_line(run([BOOTSTRAPPERD, "serve"]), "no bsroot", "--bsroot", "BOOTSTRAPPERD_BSROOT")


# A cluster description that cannot be read is exit 1, as an invalid one is (`check`'s
# contract: 0 it is good, 1 it is not): the error names the file and why.
UNREADABLE = [
    ("missing", "No such file or directory"),
    ("a-directory", "is a directory"),
    ("a-fifo", "not a regular file"),
    ("non-utf8.yml", "utf-8"),
    ("no-read.yml", "Permission denied"),
]


@pytest.mark.parametrize(("name", "says"), UNREADABLE, ids=[n for n, _ in UNREADABLE])
@pytest.mark.parametrize("command", ["check", "pack", "demo"])
def test_a_description_that_cannot_be_read(
    command: str, name: str, says: str, files: dict[str, Path], scratch: Path
) -> None:
    path = str(files[name])
    prefix = without_read_override() if name == "no-read.yml" else []
    argv = {
        "check": [BOOTSTRAPPERD, "check", path],
        "pack": [PACK, path, "-o", str(scratch / f"out-{name}"), "--no-downloads"],
        "demo": [BOOTSTRAPPERD, "demo", "--example", path],
    }[command]
    result = run(argv, prefix=prefix)
    assert result.code == 1, result
    assert path in result.err, result
    assert says in result.err, result
    assert len(result.lines) <= 2, result  # "FILE: 1 error(s):" and the reason, or one line


def test_check_of_dev_zero_ends() -> None:
    result = run([BOOTSTRAPPERD, "check", "/dev/zero"])
    assert result.code == 1, result
    assert "/dev/zero" in result.err


def test_serve_a_description_that_cannot_be_read(files: dict[str, Path]) -> None:
    result = run(
        [BOOTSTRAPPERD, "serve", "--bsroot", str(files["bad-desc"]), "--interface", NO_SUCH_IF]
    )
    assert result.code == 1, result
    assert "cannot load the cluster description" in result.err
    assert "utf-8" in result.err


# ---- bootstrapperd-pack ----------------------------------------------------------------------


def pack_flags(files: dict[str, Path]) -> Iterator[tuple[list[str], list[str]]]:
    desc = str(EXAMPLE)
    a_file, a_dir = str(files["a-file"]), str(files["a-directory"])
    yield ["-j", "x"], ["--jobs", "'x'"]
    yield [desc, "-j", "0"], ["--jobs", "at least 1"]
    yield [desc, "-j", "-3"], ["--jobs", "at least 1"]
    yield [desc, "--retries", "-1"], ["--retries", "0 or more"]
    yield [desc, "--retries", "many"], ["--retries", "'many'"]
    yield [desc, "--registry-mirror", "quay.io"], ["--registry-mirror", "'quay.io'"]
    yield [desc, "--mirror", "ftp://x"], ["--mirror", "'ftp://x'", "http://, https:// or file://"]
    yield [desc, "--kubernetes-mirror", "dl.k8s.io"], ["--kubernetes-mirror", "'dl.k8s.io'"]
    yield [desc, "--ipxe-url", "boot.ipxe.org"], ["--ipxe-url", "'boot.ipxe.org'"]
    yield [desc, "--signing-key-fingerprint", "zz"], ["--signing-key-fingerprint", "'zz'"]
    yield [desc, "--signing-key", ""], ["--signing-key", "''"]
    yield [desc, "-o", a_file], ["--output", a_file, "is not a directory"]
    yield [desc, "--cache", a_file], ["--cache", a_file, "is not a directory"]
    yield [desc, "--tarball", a_dir], ["--tarball", a_dir, "is a directory"]
    yield [desc, "--site-python", "2.7x"], ["--site-python '2.7x'", "expected 3.N"]
    yield [desc, "--site-arch", "sparc"], ["--site-arch 'sparc'", "x86_64 or aarch64"]
    yield [desc, "--site-glibc", "musl"], ["--site-glibc 'musl'", "expected 2.N"]
    yield [desc, "--bootstrapper-image", "Not An Image"], ["--bootstrapper-image", "image name"]
    yield [], ["the cluster description is required"]
    yield ["--bogus"], ["unrecognized arguments: --bogus"]
    yield ["--verify", str(files["missing"])], ["--verify", "does not exist"]
    yield ["--verify", a_file], ["--verify", "is not a directory"]
    yield ["--verify", str(files["no-desc"])], ["--verify", "is not a bsroot"]


def test_pack_refuses_every_bad_flag(files: dict[str, Path], scratch: Path) -> None:
    for argv, words in pack_flags(files):
        out = [] if {"-o", "--verify"} & set(argv) else ["-o", str(scratch / "never")]
        one_line(run([PACK, *argv, *out]), *words, usage=True)
    assert not (scratch / "never").exists()  # nothing was written for a bad command line


def test_pack_verify_of_a_bsroot_without_manifest_is_incomplete(bare: Path) -> None:
    """A bsroot without its manifest is not a bad command line: it is an unfinished pack."""
    result = run([PACK, "--verify", str(bare)])
    assert result.code == 1, result
    assert "manifest.json is missing" in result.err


# ---- serve on a bsroot with nothing to boot --------------------------------------------------

# What the example's machines fetch to boot, as bsroot paths: the iPXE binaries, and the OS's
# PXE kernel and initrd as the boot script names them (the example installs flatcar stable
# `current`, which is the newest version present).
BOOT_FILES = [
    "tftpboot/undionly.kpxe",
    "tftpboot/ipxe.efi",
    "html/static/flatcar/stable/current/flatcar_production_pxe.vmlinuz",
    "html/static/flatcar/stable/current/flatcar_production_pxe_image.cpio.gz",
]


def serve(bsroot: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    argv = [BOOTSTRAPPERD, "serve", "--bsroot", str(bsroot), "--interface", NO_SUCH_IF, *args]
    return run(argv, env)


def test_serve_refuses_a_bsroot_with_nothing_to_boot(bare: Path) -> None:
    result = serve(bare)
    assert result.code == 1, result
    for name in BOOT_FILES:
        assert f"{bare}/{name}" in result.err, (name, result)
    assert f"bootstrapperd-pack {bare}/config/cluster-desc.yml -o {bare}" in result.err
    assert "--serve-without-boot-files" in result.err
    assert "cannot start" not in result.err  # it stopped before resolving where to listen
    named = [line for line in result.lines if "boot file" in line or "bootstrapperd-pack" in line]
    assert len(named) == len(BOOT_FILES) + 1, result
    assert all(" ERROR " in line for line in named), result


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--serve-without-boot-files"], {}),
        ([], {"BOOTSTRAPPERD_SERVE_WITHOUT_BOOT_FILES": "1"}),
        ([], {"BOOTSTRAPPERD_SERVE_WITHOUT_BOOT_FILES": "yes"}),
    ],
)
def test_serve_without_boot_files_when_asked(
    args: list[str], env: dict[str, str], bare: Path
) -> None:
    result = serve(bare, "--verify-bsroot", "off", *args, env=env)
    assert result.code == 1, result
    # one warning line (a bench's or a lab's log stays readable) naming every file
    named = [line for line in result.lines if "boot file" in line or "bootstrapperd-pack" in line]
    assert len(named) == 1, result
    assert " WARNING " in named[0], result
    assert "serving anyway" in named[0], result
    for name in BOOT_FILES:
        assert f"{bare}/{name} missing" in named[0], (name, result)
    # it went on, as far as the interface that is not there
    last = result.lines[-1]
    assert last.endswith(f"cannot start: interface '{NO_SUCH_IF}' does not exist on this machine")


def test_serve_names_only_the_boot_file_that_is_missing(scratch: Path) -> None:
    bsroot = init_bsroot(EXAMPLE, scratch / "partial").root
    for name in BOOT_FILES:
        path = bsroot / name.replace("/current/", "/4081.2.0/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stand-in")
    result = serve(bsroot, "--verify-bsroot", "off")
    assert "--serve-without-boot-files" not in result.err, result
    assert f"cannot start: interface '{NO_SUCH_IF}'" in result.err, result
    (bsroot / "tftpboot" / "undionly.kpxe").unlink()
    result = serve(bsroot, "--verify-bsroot", "off")
    assert result.code == 1, result
    assert "tftpboot/undionly.kpxe" in result.err
    assert "ipxe.efi" not in result.err
    assert "vmlinuz" not in result.err
    assert "cannot start" not in result.err


# ---- the last resort -------------------------------------------------------------------------


def test_a_bug_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What no input above reaches: an exception nobody expected, said in one line with where
    it was raised, for the operator to report."""

    def broken(args: object) -> int:
        raise ValueError("a\nbug")

    monkeypatch.setattr(cli, "cmd_check", broken)
    assert cli.main(["check", str(EXAMPLE)]) == cli.EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("bootstrapperd: internal error: ValueError: a bug (at "), err
    assert "test_bad_input.py:" in err
    assert err.endswith("; please report it\n")


def test_a_bug_in_pack_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scratch: Path
) -> None:
    def broken(*args: object) -> object:
        raise KeyError("surprise")

    monkeypatch.setattr(pack_module, "load_cluster_file", broken)
    assert pack_module.main([str(EXAMPLE), "-o", str(scratch / "out"), "--no-downloads"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("bootstrapperd-pack: internal error: KeyError: 'surprise' (at "), err
