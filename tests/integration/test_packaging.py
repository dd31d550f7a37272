"""Packaging: the Containerfile and the two systemd units.

No image builder can run in the suite: a build pulls ``debian:12-slim`` and runs ``apt-get``
against the Debian archive, and tests never send traffic off the machine. So the install is
followed step by step from the Containerfile itself: its build stage's COPY lines fill a
scratch "root" from this tree, its RUN lines (python3 -m venv, pip install) run there with
their paths moved under that root, pip restricted to local package sources (the wheelhouse
scripts/setup.sh fills, the machine's local indexes) and run inside an empty network namespace
(it cannot reach anything). The final stage's ENV, ENTRYPOINT and CMD then start the daemon in
a lab namespace, as ``docker run`` would.

The direct unit is run the way systemd would run it, as far as that works without systemd:
its ExecStart and Environment, an unprivileged user holding exactly its AmbientCapabilities,
no new privileges, and a notify socket for its Type=notify. Both units pass
``systemd-analyze verify`` and keep the properties docs/packaging.md promises.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bootstrapperd
from bootstrapperd.lab.netlab import Namespace, NetLab, unavailable_reason, wait_for_http
from bootstrapperd.pack import init_bsroot
from bootstrapperd.runtime.fdlimit import transfer_cap
from protocols.tftp.endpoint import MAX_TRANSFERS
from tests.conftest import EXAMPLE, REPO, need, need_tools
from tests.integration.dhcp_lab import SERVER, wait_until
from tests.wheelhouse import WHEELHOUSE, local_pip_environment

pytestmark = pytest.mark.netns

CONTAINERFILE = REPO / "Containerfile"
CONTAINERIGNORE = REPO / ".containerignore"
DIRECT_UNIT = REPO / "systemd" / "bootstrapperd.service"
CONTAINER_UNIT = REPO / "systemd" / "bootstrapperd-container.service"
# scripts/setup.sh downloads the runtime dependencies and the build backend (hatchling and its
# own dependencies) here: the offline install takes them from this directory.

# What a Debian image's RUN lines see as PATH (the builder's default), and what systemd gives
# a service on Debian 12 (merged /usr): the tests resolve programs the same way.
IMAGE_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEMD_SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
CLIENT = "10.77.0.254/24"
MASTER_MAC = "52:54:00:77:00:10"  # the bundled example's master, reserved at 10.77.0.10
# One exchange, the lease left unconfigured (the test adds its own address afterwards).
UDHCPC = shlex.split("busybox udhcpc -i node0 -n -q -f -t 5 -T 1 -s /bin/true")
NOBODY = 65534  # stands in for the unit's `bootstrapperd` user, which this machine lacks
# The tests' bsroots are pack's without downloads (no iPXE binaries, no OS kernel): the shipped
# commands are told to serve them anyway through the environment, which they do not set.
SERVE_WITHOUT_BOOT_FILES = {"BOOTSTRAPPERD_SERVE_WITHOUT_BOOT_FILES": "1"}
DEV_ONLY = {"pytest", "ruff", "mypy", "hypothesis", "scapy", "playwright", "pytest-asyncio"}
# linux/capability.h, for the capabilities the unit may name.
CAP_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}


# ---- the Containerfile, read -----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def json(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not a JSON array"
        return [str(v) for v in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"{len(found)} {keyword} instructions in stage {self.name}"
        return found[0]


def parse_containerfile(text: str) -> list[Stage]:
    """Stages and their instructions: comment lines dropped (also inside a continuation, as
    the builders do), backslash continuations joined."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"line {number}: {keyword} before FROM"
            stages[-1].instructions.append(instruction)
    assert not pending, "the Containerfile ends inside a continuation"
    return stages


def apt_packages(run: Instruction) -> set[str] | None:
    """The packages an `apt-get install` RUN line installs; None for other RUN lines."""
    for command in run.args.split("&&"):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            return {w for w in words[2:] if not w.startswith("-")}
    return None


def env_values(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for env in stage.all("ENV"):
        for word in shlex.split(env.args):
            key, sep, value = word.partition("=")
            assert sep, f"line {env.line}: use ENV KEY=VALUE"
            values[key] = value
    return values


def containerignore_allows(name: str) -> bool:
    """Whether a top-level name of the context survives .containerignore (last match wins)."""
    allowed = True
    for line in CONTAINERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#") or "/" in pattern.lstrip("!"):
            continue
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(name, pattern.lstrip("!")):
            allowed = negated
    return allowed


def build_and_final() -> tuple[Stage, Stage]:
    stages = parse_containerfile(CONTAINERFILE.read_text())
    assert len(stages) == 2, "expected a build stage and a runtime stage"
    return stages[0], stages[1]


# ---- the Containerfile, followed --------------------------------------------------------------


class Rootfs:
    """Container paths moved under a scratch directory: the paths the image build creates (COPY
    destinations, WORKDIR, what the runtime stage copies from the build stage)."""

    def __init__(self, root: Path, owned: set[str]) -> None:
        self.root = root
        self.owned = sorted({p.rstrip("/") for p in owned}, key=len, reverse=True)

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def rewrite(self, text: str) -> str:
        for prefix in self.owned:
            pattern = rf"(?<![\w./-]){re.escape(prefix)}(?=/|\s|:|$)"
            # A function, not a replacement string: the path is inserted as it is.
            text = re.sub(pattern, functools.partial(_moved_to, str(self.path(prefix))), text)
        return text


def _moved_to(moved: str, _: re.Match[str]) -> str:
    return moved


@dataclass(frozen=True)
class Installed:
    rootfs: Rootfs
    venv: Path
    env: dict[str, str]  # the runtime stage's ENV, paths moved
    entrypoint: list[str]
    cmd: list[str]
    volume: str

    def command(self, bsroot: Path) -> list[str]:
        """ENTRYPOINT + CMD with the bsroot volume's mount point replaced by ``bsroot``."""
        return [str(bsroot) if a == self.volume else a for a in (*self.entrypoint, *self.cmd)]


def _run_step(ns: Namespace, argv: list[str], cwd: Path, env: dict[str, str], step: str) -> None:
    result = ns.run(argv, timeout=900, cwd=cwd, env=env)
    output = result.stdout + result.stderr
    missing = re.findall(r"No matching distribution found for (\S+)", output)
    need(
        not missing,
        f"neither {WHEELHOUSE} nor the local package indexes hold {', '.join(missing)} "
        f"(needed by: {step}): run scripts/setup.sh, which fills the wheelhouse",
    )
    assert result.returncode == 0, f"{step} failed ({result.returncode}):\n{output[-3000:]}"


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """The image's venv, made once per module by following the Containerfile."""
    reason = unavailable_reason()
    need(reason is None, reason or "")
    probe = subprocess.run(
        ["python3", "-c", "import ensurepip, sys; sys.exit(sys.version_info < (3, 11))"],
        env={"PATH": IMAGE_DEFAULT_PATH},
        capture_output=True,
    )
    need(
        probe.returncode == 0,
        "the image's interpreter, `python3` (>= 3.11) with venv (Debian: python3-venv), is not "
        f"on {IMAGE_DEFAULT_PATH}",
    )
    build, final = build_and_final()
    copied = {shlex.split(i.args)[-1] for i in build.all("COPY")}
    copied |= {i.args for i in build.all("WORKDIR")}
    for copy in final.all("COPY"):
        words = shlex.split(copy.args)
        assert words[0] == f"--from={build.name}", f"line {copy.line}: copies from elsewhere"
        # A venv is not relocatable: the runtime stage must keep the build stage's path.
        assert words[1] == words[2], f"line {copy.line}: {words[1]} lands at {words[2]}"
        copied.add(words[1])
    pip_env = local_pip_environment()
    # A scratch root the unprivileged test user can traverse (pytest's tmp dirs are 0700).
    root = Path(tempfile.mkdtemp(prefix="bsd-image-", dir="/tmp"))
    try:
        root.chmod(0o755)
        rootfs = Rootfs(root, copied)
        home = rootfs.path("/root")
        home.mkdir()
        env = {"PATH": IMAGE_DEFAULT_PATH, "HOME": str(home), **pip_env}
        workdir = rootfs.root
        with NetLab() as lab:
            offline = lab.namespace("pip")  # a loopback and no route: nothing else answers
            for step in build.instructions:
                if step.keyword == "COPY":
                    *sources, dest = shlex.split(step.args)
                    for source in sources:
                        origin = REPO / source
                        target = rootfs.path(dest)
                        if dest.endswith("/"):
                            target = target / origin.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        if origin.is_dir():
                            shutil.copytree(origin, target)
                        else:
                            shutil.copy2(origin, target)
                elif step.keyword == "WORKDIR":
                    workdir = rootfs.path(step.args)
                    workdir.mkdir(parents=True, exist_ok=True)
                elif step.keyword == "RUN" and apt_packages(step) is None:
                    command = rootfs.rewrite(step.args)
                    _run_step(offline, ["sh", "-c", command], workdir, env, step.args)
                # ARG and the apt-get lines: the machine's own packages stand in (the probe
                # above checks python3 and its venv; the tests that start the daemon check
                # docker-registry).
        venvs = [shlex.split(i.args)[-1] for i in build.all("RUN") if " -m venv " in f" {i.args} "]
        assert len(venvs) == 1, "expected one `python3 -m venv` line"
        runtime_env = {k: rootfs.rewrite(v) for k, v in env_values(final).items()}
        yield Installed(
            rootfs=rootfs,
            venv=rootfs.path(venvs[0]),
            env=runtime_env,
            entrypoint=final.one("ENTRYPOINT").json(),
            cmd=final.one("CMD").json(),
            volume=final.one("VOLUME").args,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- the systemd units, read ----------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (repeatable keys keep every value); continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")) or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times"
    return values[0]


def unit_words(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> set[str]:
    return {w for v in unit.get(section, {}).get(key, []) for w in v.split()}


def unit_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit["Service"].get("Environment", []):
        for word in shlex.split(value):
            key, _, val = word.partition("=")
            env[key] = val
    return env


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


# ---- lab helpers ----------------------------------------------------------------------------


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def start(ns: Namespace, argv: list[str], env: dict[str, str], log: Path) -> Started:
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = ns.spawn(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Started(proc, log)


def pair(netlab: NetLab, client_address: str | None) -> tuple[Namespace, Namespace]:
    srv = netlab.namespace("srv")
    cli = netlab.namespace("cli")
    netlab.veth(srv, "bs0", cli, "node0", f"{SERVER}/24", client_address)
    return srv, cli


def registry_ready(cli: Namespace) -> dict[str, object]:
    """/api/v1/registry once it has left `starting`."""
    url = f"http://{SERVER}/api/v1/registry"
    status: dict[str, object] = {}

    def settled() -> bool:
        nonlocal status
        status = json.loads(wait_for_http(cli, url))
        return status["state"] not in ("starting", "restarting")

    wait_until(settled, timeout=30, what="registry settled")
    return status


def program_of(pid: int) -> list[str]:
    """The process's argv; empty when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else []


def runs(pid: int, program: str) -> bool:
    argv = program_of(pid)
    return bool(argv) and Path(argv[0]).name == program


class NotifySocket:
    """A stand-in for systemd's $NOTIFY_SOCKET: collects what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o666)  # the daemon runs as another user
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def collect(self) -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                data = self.sock.recv(4096).decode()
                self.messages.append(dict(x.split("=", 1) for x in data.splitlines() if "=" in x))

    def wait_for(self, key: str, count: int = 1, timeout: float = 20.0) -> dict[str, str]:
        def seen() -> bool:
            self.collect()
            return sum(key in m for m in self.messages) >= count

        wait_until(seen, timeout=timeout, what=f"{key} #{count} on the notify socket")
        return [m for m in self.messages if key in m][count - 1]

    def close(self) -> None:
        self.sock.close()


# ---- tests: the Containerfile ----------------------------------------------------------------


def test_containerfile_is_debian_slim_with_only_the_runtime_tools() -> None:
    build, final = build_and_final()
    assert (build.base, final.base) == ("debian:12-slim", "debian:12-slim")
    assert build.name is not None
    assert final.name is None
    final_packages = [p for i in final.all("RUN") if (p := apt_packages(i)) is not None]
    assert final_packages == [{"python3", "docker-registry", "ca-certificates"}]
    build_packages = [p for i in build.all("RUN") if (p := apt_packages(i)) is not None]
    assert build_packages == [{"python3", "python3-venv"}]
    for stage in (build, final):
        for run in stage.all("RUN"):
            if apt_packages(run) is not None:
                assert "--no-install-recommends" in run.args, f"line {run.line}"
                assert "rm -rf /var/lib/apt/lists/*" in run.args, f"line {run.line}: lists kept"
    # Nothing but the venv reaches the runtime stage: no source tree, no build tools.
    assert [shlex.split(i.args)[0] for i in final.all("COPY")] == [f"--from={build.name}"]
    assert len(final.all("RUN")) == 1


def test_containerfile_installs_the_package_alone_into_a_venv() -> None:
    build, final = build_and_final()
    runs = [i.args for i in build.all("RUN") if apt_packages(i) is None]
    venv_lines = [r for r in runs if " -m venv " in f" {r} "]
    assert len(venv_lines) == 1
    assert "--system-site-packages" not in venv_lines[0]
    venv = shlex.split(venv_lines[0])[-1]
    pip_lines = [shlex.split(r) for r in runs if "pip" in r]
    assert pip_lines == [[f"{venv}/bin/pip", "install", "--no-cache-dir", "."]]
    assert env_values(final)["PATH"].split(":")[0] == f"{venv}/bin"
    assert final.one("ENTRYPOINT").json() == ["bootstrapperd"]
    assert final.one("CMD").json() == ["serve", "--bsroot", "/bsroot"]
    assert final.one("VOLUME").args == "/bsroot"
    # Every COPY source exists and survives .containerignore (podman/buildah would miss it).
    for copy in build.all("COPY"):
        for source in shlex.split(copy.args)[:-1]:
            assert (REPO / source).exists(), f"line {copy.line}: {source} does not exist"
            assert containerignore_allows(source), f".containerignore drops {source}"


def test_install_holds_the_package_and_its_data_and_no_dev_tools(installed: Installed) -> None:
    python = installed.venv / "bin" / "python"
    assert "include-system-site-packages = false" in (installed.venv / "pyvenv.cfg").read_text()
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import bootstrapperd, protocols, bootstrapperd.runtime.resources as r; "
            "print(bootstrapperd.__file__); print(protocols.__file__); print(r.config_dir()); "
            "print(bootstrapperd.__version__)",
        ],
        env=installed.env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    site = installed.venv / "lib"
    assert all(Path(p).is_relative_to(site) for p in where[:3]), where
    assert Path(where[2]).name == "_config"  # the shipped data, not the repository's config/
    assert (Path(where[2]) / "templates" / "ipxe.j2").is_file()
    assert where[3] == bootstrapperd.__version__
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        env={**installed.env, "PIP_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {p["name"].lower() for p in json.loads(listing)}
    assert "bootstrapperd" in names
    assert not names & DEV_ONLY, f"dev tools in the image's venv: {names & DEV_ONLY}"


def test_image_command_serves_then_stops_on_sigterm(
    installed: Installed, netlab: NetLab, bsroot: Path
) -> None:
    need_tools("curl", "docker-registry")
    srv, cli = pair(netlab, CLIENT)
    argv = installed.command(bsroot)
    assert argv == ["bootstrapperd", "serve", "--bsroot", str(bsroot)]
    # The bsroot has no boot files (pack without downloads): the image's command as shipped,
    # told to serve anyway through its environment, as `docker run -e` would.
    env = {**installed.env, **SERVE_WITHOUT_BOOT_FILES}
    daemon = start(srv, argv, env, bsroot.parent / "image.log")
    health = json.loads(wait_for_http(cli, f"http://{SERVER}/healthz"))
    assert health["status"] == "ok"
    assert health["version"] == bootstrapperd.__version__
    assert health["model"]["nodes"] == 3
    # PATH from the image's ENV found the venv's console script, run by the venv's Python.
    script = installed.venv / "bin" / "bootstrapperd"
    assert program_of(daemon.proc.pid)[1:3] == [str(script), "serve"]
    # Templates (config/ → bootstrapperd/_config) and the status page made it into the wheel.
    assert "#!ipxe" in wait_for_http(cli, f"http://{SERVER}/ipxe/{MASTER_MAC}")
    assert "<html" in wait_for_http(cli, f"http://{SERVER}/").lower()
    # The registry's binary mode, which is why the image carries docker-registry.
    registry = registry_ready(cli)
    assert (registry["backend"], registry["state"]) == ("binary", "ready"), registry
    instance = registry["instance"]
    assert isinstance(instance, dict)
    child = int(instance["pid"])
    assert runs(child, "docker-registry")

    assert daemon.stop() == 0, daemon.output
    assert "SIGTERM: shutting down" in daemon.output
    assert "stopped" in daemon.output
    assert not runs(child, "docker-registry")  # the daemon stopped its child


# ---- tests: the systemd units ----------------------------------------------------------------


def test_direct_unit_keeps_its_promises() -> None:
    unit = parse_unit(DIRECT_UNIT.read_text())
    service = "Service"
    assert unit_value(unit, service, "Type") == "notify"
    assert unit_value(unit, service, "Restart") == "on-failure"
    assert float(unit_value(unit, service, "RestartSec")) > 0
    assert unit_value(unit, service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    argv = shlex.split(unit_value(unit, service, "ExecStart"))
    # The same venv as the image, so one set of instructions installs both.
    build, _ = build_and_final()
    venv = next(shlex.split(i.args)[-1] for i in build.all("RUN") if " -m venv " in i.args)
    assert argv[:2] == [f"{venv}/bin/bootstrapperd", "serve"]
    bsroot = option(argv, "--bsroot")
    assert bsroot in unit_words(unit, service, "ReadWritePaths")
    caps = {"CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert unit_words(unit, service, "AmbientCapabilities") == caps
    assert unit_words(unit, service, "CapabilityBoundingSet") == caps
    assert unit_value(unit, service, "User") not in ("root", "0")
    assert unit_value(unit, service, "NoNewPrivileges") == "yes"
    assert unit_value(unit, service, "ProtectSystem") == "strict"
    for key in ("ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules"):
        assert unit_value(unit, service, key) == "yes", key
    for key in ("ProtectControlGroups", "LockPersonality", "MemoryDenyWriteExecute"):
        assert unit_value(unit, service, key) == "yes", key
    families = unit_words(unit, service, "RestrictAddressFamilies")
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"} <= families
    assert "AF_PACKET" not in families
    # The daemon's grace period (3 s) and the registry child's (5 s) fit in the stop timeout.
    assert float(unit_value(unit, service, "TimeoutStopSec")) >= 10
    assert "KillMode" not in unit[service] or unit_value(unit, service, "KillMode") == "mixed"


def test_direct_unit_allows_descriptors_for_every_transfer() -> None:
    """LimitNOFILE (soft, or soft:hard) affords every TFTP transfer slot and the reserve."""
    unit = parse_unit(DIRECT_UNIT.read_text())
    limit = unit_value(unit, "Service", "LimitNOFILE")
    soft, _, hard = limit.partition(":")
    assert transfer_cap(int(soft), MAX_TRANSFERS) == MAX_TRANSFERS
    assert not hard or int(hard) >= int(soft)


def test_container_unit_keeps_its_promises() -> None:
    unit = parse_unit(CONTAINER_UNIT.read_text())
    service = "Service"
    assert unit_words(unit, "Unit", "Requires") >= {"docker.service"}
    assert unit_words(unit, "Unit", "After") >= {"docker.service"}
    assert unit_value(unit, service, "Restart") == "on-failure"
    assert unit_value(unit, service, "ExecStartPre") == "-/usr/bin/docker rm -f bootstrapperd"
    argv = shlex.split(unit_value(unit, service, "ExecStart"))
    assert argv[:6] == ["/usr/bin/docker", "run", "--rm", "--name", "bootstrapperd", "--network"]
    assert argv[6] == "host"
    assert "--privileged" not in argv  # least privilege: only what Docker's defaults lack
    assert argv[argv.index("--cap-add") + 1] == "NET_ADMIN"
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in mounts
    image_at = argv.index("bootstrapperd:latest")
    bsroot = option(argv[image_at:], "--bsroot")
    assert argv[image_at + 1 :] == ["serve", "--bsroot", bsroot]
    # The Docker engine resolves the registry container's mounts on the host: bsroot must be
    # at the same path on both sides (docs/registry.md).
    assert f"{bsroot}:{bsroot}" in mounts
    stop = shlex.split(unit_value(unit, service, "ExecStop"))
    assert stop[:3] == ["/usr/bin/docker", "stop", "-t"]
    assert stop[4] == "bootstrapperd"
    assert int(stop[3]) < float(unit_value(unit, service, "TimeoutStopSec"))
    assert unit_value(unit, service, "ExecReload") == "/usr/bin/docker kill -s HUP bootstrapperd"


@pytest.mark.parametrize("shipped", [DIRECT_UNIT, CONTAINER_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify(
    shipped: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`systemd-analyze verify` prints nothing for a good unit; it exits 0 even on unknown
    keys and bad values, so the output is what is checked. It also wants every Exec program to
    exist: unless this machine has /opt/bootstrapperd, the direct unit is checked against the
    venv the Containerfile's steps made (the unit is otherwise as shipped)."""
    need_tools("systemd-analyze")
    text = shipped.read_text()
    if shipped == DIRECT_UNIT and not Path("/opt/bootstrapperd/bin/bootstrapperd").exists():
        installed: Installed = request.getfixturevalue("installed")
        text = text.replace("/opt/bootstrapperd", str(installed.venv))
    for program in re.findall(r"^Exec\w+=[-@+!:]*(/\S+)", text, re.MULTILINE):
        need(Path(program).exists(), f"{program} (named by {shipped.name}) is not installed")
    copy = tmp_path / shipped.name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},  # a debug level set outside is noise
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    if shipped == DIRECT_UNIT:
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", str(copy)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        level = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
        assert level is not None, security.stdout[-2000:] + security.stderr
        assert float(level.group(1)) <= 3.0, security.stdout[-3000:]


@pytest.fixture
def open_bsroot() -> Iterator[Path]:
    """A bsroot the unprivileged user can reach, owned as docs/packaging.md says: state/ and
    tls/ by the daemon's user, the rest by root."""
    base = Path(tempfile.mkdtemp(prefix="bsd-unit-", dir="/tmp"))
    try:
        base.chmod(0o755)
        root = init_bsroot(EXAMPLE, base / "bsroot").root
        for top in (root / "state", root / "tls"):
            for path in (top, *top.rglob("*")):
                os.chown(path, NOBODY, NOBODY)
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_direct_unit_runs_with_only_its_capabilities(
    installed: Installed, netlab: NetLab, open_bsroot: Path
) -> None:
    """Its ExecStart, as a user that is not root with the unit's capabilities: it gets ready
    (READY=1), gives a client its reserved address by a unicast reply (the ARP entry needs
    CAP_NET_ADMIN), starts the registry child, reloads on SIGHUP and stops on SIGTERM."""
    need_tools("setpriv", "busybox", "curl", "docker-registry")
    unit = parse_unit(DIRECT_UNIT.read_text())
    argv = shlex.split(unit_value(unit, "Service", "ExecStart"))
    argv[0] = str(installed.venv / "bin" / Path(argv[0]).name)
    argv[argv.index("--bsroot") + 1] = str(open_bsroot)
    caps = sorted(unit_words(unit, "Service", "AmbientCapabilities"))
    listed = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    setpriv = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        f"--inh-caps={listed}",
        f"--ambient-caps={listed}",
        f"--bounding-set=-all,{listed}",
        "--no-new-privs",
    ]
    notify = NotifySocket(installed.rootfs.root / f"notify-{os.getpid()}")
    try:
        srv, cli = pair(netlab, None)
        cli.ip("link", "set", "node0", "address", MASTER_MAC)
        env = {"PATH": SYSTEMD_SERVICE_PATH, **unit_environment(unit), **SERVE_WITHOUT_BOOT_FILES}
        env["NOTIFY_SOCKET"] = str(notify.path)
        log = open_bsroot.parent / "unit.log"
        daemon = start(srv, [*setpriv, *argv], env, log)
        ready = notify.wait_for("READY")
        assert int(ready["MAINPID"]) == daemon.proc.pid
        status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{NOBODY}\s", status, re.MULTILINE)
        mask = sum(1 << CAP_BITS[c] for c in caps)
        assert re.search(rf"^CapEff:\s+{mask:016x}$", status, re.MULTILINE), status

        lease = cli.run(UDHCPC, timeout=30)
        assert "lease of 10.77.0.10 obtained" in lease.stdout + lease.stderr, lease
        assert "cannot set ARP entries" not in daemon.output
        cli.ip("addr", "add", CLIENT, "dev", "node0")
        registry = registry_ready(cli)
        assert (registry["backend"], registry["state"]) == ("binary", "ready"), registry

        daemon.proc.send_signal(signal.SIGHUP)  # what ExecReload does
        notify.wait_for("RELOADING")
        notify.wait_for("READY", count=2)
        assert daemon.stop() == 0, daemon.output
        notify.wait_for("STOPPING")
        assert "ERROR" not in daemon.output, daemon.output
    finally:
        notify.close()
