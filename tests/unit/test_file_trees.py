"""Files never leave their tree: a symlink battery against every file route, TFTP names and HTTP
``/boot/<name>`` and ``/static/...``. Links to the host, to ``tls/``, ``state/`` and ``config/``,
directory links, loops, ``..`` in names, a FIFO, and a file or a directory replaced by a link
between the check and the open are refused and counted; links that stay inside the route's
trees (Sextant's relative links, a link from ``tftpboot/`` into the mirror for TFTP) work."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bootstrapperd.bsroot.layout import (
    REFUSAL_LOG_INTERVAL,
    Bsroot,
    Refused,
    TreeRefusals,
    open_inside,
)
from bootstrapperd.bsroot.pki import ClusterPKI
from bootstrapperd.model.holder import ModelHolder
from bootstrapperd.pack import init_bsroot
from bootstrapperd.render import Renderer
from bootstrapperd.tftp.files import TFTPFiles
from protocols.tftp.endpoint import Opened, Refusal
from protocols.tftp.packet import ErrorCode, Opcode, Request
from tests.conftest import EXAMPLE
from tests.httpapp import serve

PEER = ("10.77.0.10", 40000)
SERVER = "http://10.77.0.1"
SECRET = b"-----BEGIN PRIVATE KEY----- not for the network\n"
GOOD = b"an iPXE binary\n"
KERNEL = b"a kernel from the mirror\n"


@pytest.fixture
def root(tmp_path: Path) -> Bsroot:
    """A bsroot with a secret in ``tls/``, ``state/`` and ``config/``, a file in ``tftpboot/``
    and a kernel in the mirror."""
    bsroot = init_bsroot(EXAMPLE, tmp_path / "bsroot")
    (bsroot.tls / "ca-key.pem").write_bytes(SECRET)
    bsroot.state.mkdir(parents=True, exist_ok=True)
    (bsroot.state / "leases.db").write_bytes(SECRET)
    (bsroot.tftpboot / "ipxe.efi").write_bytes(GOOD)
    (bsroot.html_static / "flatcar").mkdir(parents=True, exist_ok=True)
    (bsroot.html_static / "flatcar" / "kernel").write_bytes(KERNEL)
    return bsroot


@pytest.fixture
def files(root: Bsroot) -> TFTPFiles:
    holder = ModelHolder.load(root.cluster_desc)
    return TFTPFiles(root, lambda: holder.model, SERVER, Renderer(root, ClusterPKI(root.tls)))


def tftp(files: TFTPFiles, name: str) -> bytes | ErrorCode:
    """What TFTP answers for ``name``: the file's bytes, or the error code."""
    opened = files(Request(Opcode.RRQ, name, "octet", ()), PEER)
    if isinstance(opened, Refusal):
        return opened.code
    assert isinstance(opened, Opened)
    try:
        return opened.source.read(1 << 20)
    finally:
        opened.close()


async def http(root: Bsroot, path: str) -> tuple[int, bytes]:
    async with serve(root) as served:
        response = await served.client.get(path)
        return response.status, await response.read()


def link(at: Path, target: str | Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target)


# --- links out of the tree, over every route --------------------------------------------------

# name in the served tree → where it points (relative to that tree, or absolute)
HOSTILE = {
    "hostname": "/etc/hostname",
    "ca-key.pem": "../tls/ca-key.pem",
    "leases.db": "../state/leases.db",
    "cluster-desc.yml": "../config/cluster-desc.yml",
    "ca-key-abs.pem": "{root}/tls/ca-key.pem",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_tftp_refuses_links_out_of_its_trees(files: TFTPFiles, root: Bsroot, name: str) -> None:
    link(root.tftpboot / name, HOSTILE[name].format(root=root.root))
    assert tftp(files, name) is ErrorCode.ACCESS_VIOLATION
    assert root.refusals.counts[("tftp", "outside")] == 1


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_http_boot_refuses_links_out_of_tftpboot(root: Bsroot, name: str) -> None:
    link(root.tftpboot / name, HOSTILE[name].format(root=root.root))
    status, body = await http(root, f"/boot/{name}")
    assert status == 404
    assert SECRET not in body
    assert root.refusals.counts[("boot", "outside")] == 1


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_http_static_refuses_links_out_of_the_mirror(root: Bsroot, name: str) -> None:
    link(root.html_static / name, HOSTILE[name].replace("..", "../..").format(root=root.root))
    status, body = await http(root, f"/static/{name}")
    assert status == 404
    assert SECRET not in body
    assert root.refusals.counts[("static", "outside")] == 1


def test_tftp_refuses_directory_links_out_of_its_trees(files: TFTPFiles, root: Bsroot) -> None:
    link(root.tftpboot / "keys", "../tls")
    link(root.tftpboot / "etc", "/etc")
    link(root.tftpboot / "static", "../config")  # the static/ name, pointed elsewhere
    assert tftp(files, "keys/ca-key.pem") is ErrorCode.ACCESS_VIOLATION
    assert tftp(files, "etc/hostname") is ErrorCode.ACCESS_VIOLATION
    assert tftp(files, "static/cluster-desc.yml") is ErrorCode.ACCESS_VIOLATION
    assert root.refusals.counts[("tftp", "outside")] == 3


async def test_http_static_refuses_directory_links_out_of_the_mirror(root: Bsroot) -> None:
    link(root.html_static / "keys", "../../tls")
    link(root.html_static / "flatcar" / "stable" / "current", "../../../../config")
    async with serve(root) as served:
        for path in ("/static/keys/ca-key.pem", "/static/flatcar/stable/current/cluster-desc.yml"):
            response = await served.client.get(path)
            assert response.status == 404, path
            assert SECRET not in await response.read()
    assert root.refusals.counts[("static", "outside")] == 2


def test_tftp_refuses_a_link_loop(files: TFTPFiles, root: Bsroot) -> None:
    link(root.tftpboot / "a", "b")
    link(root.tftpboot / "b", "a")
    assert tftp(files, "a") is ErrorCode.ACCESS_VIOLATION
    assert root.refusals.counts[("tftp", "loop")] == 1


async def test_http_refuses_a_link_loop(root: Bsroot) -> None:
    link(root.tftpboot / "a", "b")
    link(root.tftpboot / "b", "a")
    link(root.html_static / "a", "a")
    assert (await http(root, "/boot/a"))[0] == 404
    assert (await http(root, "/static/a"))[0] == 404
    assert root.refusals.counts[("boot", "loop")] == 1
    assert root.refusals.counts[("static", "loop")] == 1


@pytest.mark.parametrize(
    "name",
    [
        "../tls/ca-key.pem",
        "static/../../tls/ca-key.pem",
        "..\\tls\\ca-key.pem",
        "/../tls/ca-key.pem",
        "./../state/leases.db",
    ],
)
def test_tftp_refuses_dotdot_in_names(files: TFTPFiles, name: str) -> None:
    assert tftp(files, name) is ErrorCode.ACCESS_VIOLATION


@pytest.mark.parametrize(
    "path",
    [
        "/boot/..%2ftls%2fca-key.pem",
        "/boot/.%2e%2fconfig%2fcluster-desc.yml",
        "/static/..%2f..%2ftls%2fca-key.pem",
        "/static/%2e%2e/%2e%2e/tls/ca-key.pem",
        "/static/flatcar/..%5c..%5ctls%5cca-key.pem",
    ],
)
async def test_http_refuses_dotdot_in_names(root: Bsroot, path: str) -> None:
    status, body = await http(root, path)
    assert status == 404
    assert SECRET not in body


# --- links that stay inside ------------------------------------------------------------------


def test_tftp_follows_links_inside_its_trees(files: TFTPFiles, root: Bsroot) -> None:
    link(root.tftpboot / "mirror", "../html/static")  # Sextant's link into the mirror
    link(root.tftpboot / "vmlinuz", "../html/static/flatcar/kernel")
    link(root.tftpboot / "relative.efi", "ipxe.efi")
    link(root.tftpboot / "absolute.efi", root.tftpboot / "ipxe.efi")
    assert tftp(files, "mirror/flatcar/kernel") == KERNEL
    assert tftp(files, "vmlinuz") == KERNEL
    assert tftp(files, "static/flatcar/kernel") == KERNEL  # the mirror behind static/
    assert tftp(files, "relative.efi") == GOOD
    assert tftp(files, "absolute.efi") == GOOD
    assert not root.refusals.counts


async def test_http_follows_links_inside_each_tree(root: Bsroot) -> None:
    link(root.tftpboot / "relative.efi", "ipxe.efi")
    link(root.tftpboot / "absolute.efi", root.tftpboot / "ipxe.efi")
    link(root.html_static / "flatcar" / "vmlinuz", "kernel")
    async with serve(root) as served:
        for path, data in (
            ("/boot/relative.efi", GOOD),
            ("/boot/absolute.efi", GOOD),
            ("/static/flatcar/vmlinuz", KERNEL),
            ("/static/flatcar/kernel", KERNEL),
        ):
            response = await served.client.get(path)
            assert response.status == 200, path
            assert await response.read() == data, path
    assert not root.refusals.counts


async def test_http_boot_serves_tftpboot_alone(root: Bsroot) -> None:
    """The mirror is TFTP's second tree, not ``/boot``'s."""
    link(root.tftpboot / "vmlinuz", "../html/static/flatcar/kernel")
    assert (await http(root, "/boot/vmlinuz"))[0] == 404
    assert root.refusals.counts[("boot", "outside")] == 1


async def test_http_boot_keeps_content_type_and_ranges(root: Bsroot) -> None:
    (root.tftpboot / "boot.txt").write_bytes(b"0123456789")
    async with serve(root) as served:
        response = await served.client.get("/boot/boot.txt", headers={"Range": "bytes=2-4"})
        assert response.status == 206
        assert response.content_type == "text/plain"
        assert await response.read() == b"234"


# --- special files and swaps between the check and the open ----------------------------------


def test_tftp_refuses_a_fifo(files: TFTPFiles, root: Bsroot) -> None:
    """A FIFO is refused as it is; an open that waited for a writer would stall the daemon (the
    writer here lets an open that waits go on, so the test itself cannot hang)."""
    fifo = root.tftpboot / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    writer.start()
    try:
        assert tftp(files, "fifo") is ErrorCode.ACCESS_VIOLATION
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open finish
        writer.join()
        os.close(reader)
    assert root.refusals.counts[("tftp", "special")] == 1


async def test_http_refuses_a_fifo(root: Bsroot) -> None:
    os.mkfifo(root.tftpboot / "fifo")
    os.mkfifo(root.html_static / "fifo")
    assert (await http(root, "/boot/fifo"))[0] == 404
    assert (await http(root, "/static/fifo"))[0] == 404


@pytest.fixture
def after_check(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[Path, Callable[[], None]], None]:
    """``after_check(path, swap)``: run ``swap`` once, right after ``path`` has been resolved
    (checked) and before it is opened."""
    original = os.path.realpath

    def arm(target: Path, swap: Callable[[], None]) -> None:
        def realpath(path: str | os.PathLike[str], *, strict: bool = False) -> str:
            real = original(path, strict=strict)
            if Path(path) == target:
                monkeypatch.setattr(os.path, "realpath", original)
                swap()
            return real

        monkeypatch.setattr(os.path, "realpath", realpath)

    return arm


def replace_by_link(path: Path, target: Path) -> None:
    """Atomically replace ``path`` by a symlink to ``target``."""
    temporary = path.with_name(f".{path.name}.swap")
    temporary.symlink_to(target)
    os.replace(temporary, path)


def replace_dir_by_link(directory: Path, outside: Path) -> None:
    """Move ``directory`` away and put a link to ``outside`` (which has the same file names) in
    its place."""
    directory.rename(directory.with_name(f".{directory.name}.old"))
    directory.symlink_to(outside, target_is_directory=True)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside bsroot whose files hold the secret under the served names."""
    where = tmp_path / "outside"
    where.mkdir()
    for name in ("kernel", "ipxe.efi"):
        (where / name).write_bytes(SECRET)
    return where


def test_tftp_refuses_a_file_replaced_by_a_link(
    files: TFTPFiles,
    root: Bsroot,
    outside: Path,
    after_check: Callable[[Path, Callable[[], None]], None],
) -> None:
    target = root.tftpboot / "ipxe.efi"
    after_check(target, lambda: replace_by_link(target, outside / "ipxe.efi"))
    assert tftp(files, "ipxe.efi") is ErrorCode.ACCESS_VIOLATION
    assert root.refusals.counts[("tftp", "changed")] == 1


def test_tftp_refuses_a_directory_replaced_by_a_link(
    files: TFTPFiles,
    root: Bsroot,
    outside: Path,
    after_check: Callable[[Path, Callable[[], None]], None],
) -> None:
    directory = root.html_static / "flatcar"
    link(root.tftpboot / "mirror", "../html/static")
    after_check(
        root.tftpboot / "mirror" / "flatcar" / "kernel",
        lambda: replace_dir_by_link(directory, outside),
    )
    assert tftp(files, "mirror/flatcar/kernel") is ErrorCode.ACCESS_VIOLATION
    assert root.refusals.counts[("tftp", "changed")] == 1


async def test_http_boot_refuses_a_file_replaced_by_a_link(
    root: Bsroot, outside: Path, after_check: Callable[[Path, Callable[[], None]], None]
) -> None:
    target = root.tftpboot / "ipxe.efi"
    after_check(target, lambda: replace_by_link(target, outside / "ipxe.efi"))
    status, body = await http(root, "/boot/ipxe.efi")
    assert SECRET not in body
    assert status == 404
    assert root.refusals.counts[("boot", "changed")] == 1


@pytest.mark.parametrize("swap", ["file", "directory"])
async def test_http_static_refuses_what_was_replaced_by_a_link(
    root: Bsroot,
    outside: Path,
    after_check: Callable[[Path, Callable[[], None]], None],
    swap: str,
) -> None:
    directory = root.html_static / "flatcar"
    if swap == "file":
        kernel = directory / "kernel"
        after_check(kernel, lambda: replace_by_link(kernel, outside / "kernel"))
    else:
        after_check(directory / "kernel", lambda: replace_dir_by_link(directory, outside))
    status, body = await http(root, "/static/flatcar/kernel")
    assert SECRET not in body
    assert status == 404
    assert root.refusals.counts[("static", "changed")] == 1


# --- the helper itself -----------------------------------------------------------------------


def test_open_inside_accepts_a_tree_that_is_itself_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"f")
    (tmp_path / "tree").symlink_to(real)
    fd = open_inside(tmp_path / "tree" / "f", (tmp_path / "tree",))
    with os.fdopen(fd, "rb") as file:
        assert file.read() == b"f"
    with pytest.raises(FileNotFoundError):
        open_inside(tmp_path / "tree" / "missing", (tmp_path / "tree",))
    (tmp_path / "treeish").mkdir()  # a sibling whose name starts like the tree's
    (tmp_path / "treeish" / "f").write_bytes(b"x")
    with pytest.raises(Refused) as refused:
        open_inside(tmp_path / "treeish" / "f", (real,))
    assert refused.value.kind == "outside"


def test_refusals_are_counted_and_logged_once_a_minute_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    refusals = TreeRefusals(clock=lambda: now[0])
    outside = Refused("outside", Path("tftpboot/x"), "/etc/hostname")
    with caplog.at_level(logging.WARNING, logger="bootstrapperd.files"):
        for _ in range(5):
            refusals.record("tftp", outside, "10.77.0.10:4000")
        refusals.record("tftp", Refused("loop", Path("tftpboot/a")))
        refusals.record("boot", outside)
        assert len(caplog.records) == 3
        now[0] += REFUSAL_LOG_INTERVAL
        refusals.record("tftp", outside)
    assert len(caplog.records) == 4
    assert caplog.records[-1].fields["unlogged_since"] == 4  # type: ignore[attr-defined]
    assert refusals.events() == {"boot_outside": 1, "tftp_loop": 1, "tftp_outside": 6}
