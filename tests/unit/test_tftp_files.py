"""What a TFTP file name opens: files under tftpboot (normalised, never outside bsroot), the
image mirror behind ``static/``, and the boot scripts generated from the model. Also the iPXE
routes of the HTTP app, which serve the same scripts."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.bsroot.pki import ClusterPKI
from bootstrapperd.machines.resolver import machine_view
from bootstrapperd.model.holder import ModelHolder
from bootstrapperd.pack import init_bsroot
from bootstrapperd.render import Renderer
from bootstrapperd.routes import base_url
from bootstrapperd.tftp.files import TFTPFiles
from protocols.tftp.endpoint import Opened, Refusal
from protocols.tftp.packet import ErrorCode, Opcode, Request
from tests.conftest import EXAMPLE
from tests.httpapp import serve

PEER = ("10.77.0.10", 40000)
SERVER = "http://10.77.0.1"
MASTER = "52:54:00:77:00:10"


@pytest.fixture
def root(tmp_path: Path) -> Bsroot:
    return init_bsroot(EXAMPLE, tmp_path / "bsroot")


@pytest.fixture
def files(root: Bsroot) -> TFTPFiles:
    holder = ModelHolder.load(root.cluster_desc)
    return TFTPFiles(root, lambda: holder.model, SERVER, Renderer(root, ClusterPKI(root.tls)))


def rrq(name: str, mode: str = "octet") -> Request:
    return Request(Opcode.RRQ, name, mode, ())


def read(opened: Opened | Refusal) -> bytes:
    assert isinstance(opened, Opened), opened
    try:
        chunks = []
        while chunk := opened.source.read(4096):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        opened.close()


def refusal(opened: Opened | Refusal) -> ErrorCode:
    assert isinstance(opened, Refusal), opened
    return opened.code


@pytest.mark.parametrize(
    "name",
    ["undionly.kpxe", "./undionly.kpxe", ".//./undionly.kpxe"],
)
def test_plain_names_and_normalisation(files: TFTPFiles, root: Bsroot, name: str) -> None:
    (root.tftpboot / "undionly.kpxe").write_bytes(b"ROM" * 1000)
    opened = files(rrq(name), PEER)
    assert isinstance(opened, Opened)
    assert opened.size == 3000
    assert opened.name == "undionly.kpxe"
    assert read(opened) == b"ROM" * 1000


def test_backslashes_are_path_separators(files: TFTPFiles, root: Bsroot) -> None:
    (root.tftpboot / "pxelinux.cfg").mkdir()
    (root.tftpboot / "pxelinux.cfg" / "site").write_text("x")
    assert read(files(rrq("pxelinux.cfg\\site"), PEER)) == b"x"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../config/cluster-desc.yml", ErrorCode.ACCESS_VIOLATION),
        ("a/../../config/cluster-desc.yml", ErrorCode.ACCESS_VIOLATION),
        ("..\\config\\cluster-desc.yml", ErrorCode.ACCESS_VIOLATION),
        ("/etc/passwd", ErrorCode.ACCESS_VIOLATION),
        ("\\etc\\passwd", ErrorCode.ACCESS_VIOLATION),
        ("bad\x7fname", ErrorCode.ACCESS_VIOLATION),
        ("bad\nname", ErrorCode.ACCESS_VIOLATION),
        ("x" * 600, ErrorCode.ACCESS_VIOLATION),
        ("", ErrorCode.FILE_NOT_FOUND),
        (".", ErrorCode.FILE_NOT_FOUND),
        ("missing.bin", ErrorCode.FILE_NOT_FOUND),
        ("pxelinux.cfg/C0A84D0A", ErrorCode.FILE_NOT_FOUND),
        ("ipxe/not-a-mac", ErrorCode.FILE_NOT_FOUND),
    ],
)
def test_refusals(files: TFTPFiles, name: str, code: ErrorCode) -> None:
    assert refusal(files(rrq(name), PEER)) is code


def test_symlinks_inside_bsroot_work_and_outside_are_refused(
    files: TFTPFiles, root: Bsroot, tmp_path: Path
) -> None:
    (root.html_static / "flatcar").mkdir()
    (root.html_static / "flatcar" / "kernel").write_bytes(b"K")
    (root.tftpboot / "mirror").symlink_to("../html/static")
    assert read(files(rrq("mirror/flatcar/kernel"), PEER)) == b"K"
    secret = tmp_path / "secret"
    secret.write_text("s")
    (root.tftpboot / "leak").symlink_to(secret)
    (root.tftpboot / "leakdir").symlink_to(tmp_path)
    (root.tftpboot / "cfg").symlink_to("../config")  # outside tftpboot/ and html/static
    assert refusal(files(rrq("leak"), PEER)) is ErrorCode.ACCESS_VIOLATION
    assert refusal(files(rrq("leakdir/secret"), PEER)) is ErrorCode.ACCESS_VIOLATION
    assert refusal(files(rrq("cfg/cluster-desc.yml"), PEER)) is ErrorCode.ACCESS_VIOLATION
    (root.tftpboot / "dir").mkdir()
    assert refusal(files(rrq("dir"), PEER)) is ErrorCode.FILE_NOT_FOUND


def test_static_falls_back_to_the_image_mirror(files: TFTPFiles, root: Bsroot) -> None:
    version = root.html_static / "flatcar" / "stable" / "4081.2.0"
    version.mkdir(parents=True)
    (version / "flatcar_production_pxe.vmlinuz").write_bytes(b"vmlinuz")
    (version.parent / "current").symlink_to("4081.2.0")
    name = "static/flatcar/stable/current/flatcar_production_pxe.vmlinuz"
    assert read(files(rrq(name), PEER)) == b"vmlinuz"
    # Once tftpboot has its own static/, that is what is served.
    (root.tftpboot / "static").mkdir()
    assert refusal(files(rrq(name), PEER)) is ErrorCode.FILE_NOT_FOUND


def test_netascii_size_is_the_converted_size(files: TFTPFiles, root: Bsroot) -> None:
    (root.tftpboot / "text").write_bytes(b"a\nb\r\nc\r")
    opened = files(rrq("text", "netascii"), PEER)
    assert isinstance(opened, Opened)
    assert opened.size == 7 + 3 + 1  # each LF gains a CR, each lone CR a NUL
    assert read(opened) == b"a\nb\r\nc\r"  # the session converts; the opener hands raw bytes


@pytest.mark.parametrize(
    "name",
    [
        "ipxe/52:54:00:77:00:10",
        "ipxe/52-54-00-77-00-10",
        "ipxe/525400770010.ipxe",
        "IPXE/5254.0077.0010",
    ],
)
def test_per_machine_ipxe_script_in_any_mac_spelling(files: TFTPFiles, name: str) -> None:
    text = read(files(rrq(name), PEER)).decode()
    assert text.startswith("#!ipxe\n")
    assert "master1 (52:54:00:77:00:10)" in text
    assert f"kernel {SERVER}/static/flatcar/stable/current/flatcar_production_pxe.vmlinuz" in text
    assert "initrd=flatcar_production_pxe_image.cpio.gz" in text
    assert f"ignition.config.url={SERVER}/ignition/52-54-00-77-00-10.json" in text
    assert "flatcar.first_boot=1" in text
    assert f"initrd {SERVER}/static/flatcar/stable/current/flatcar_production_pxe_image" in text
    assert text.rstrip().endswith("boot")


def test_pxelinux_files(files: TFTPFiles) -> None:
    own = read(files(rrq("pxelinux.cfg/01-52-54-00-77-00-10"), PEER)).decode()
    assert "KERNEL static/flatcar/stable/current/flatcar_production_pxe.vmlinuz" in own
    assert "INITRD static/flatcar/stable/current/flatcar_production_pxe_image.cpio.gz" in own
    assert "ignition.config.url=http://10.77.0.1/ignition/52-54-00-77-00-10.json" in own
    default = read(files(rrq("pxelinux.cfg/default"), PEER)).decode()
    assert "APPEND cloud-config-url=http://10.77.0.1/install.sh" in default
    assert "SYSAPPEND 2" in default
    # An unknown machine is allowed by the example (unknown_machines: allow): it gets a file.
    unknown = read(files(rrq("pxelinux.cfg/01-52-54-00-ab-cd-ef"), PEER)).decode()
    assert "52-54-00-ab-cd-ef (52:54:00:ab:cd:ef)" in unknown


def test_unknown_machines_ignored_get_nothing(root: Bsroot) -> None:
    text = root.cluster_desc.read_text().replace(
        "unknown_machines: allow", "unknown_machines: ignore"
    )
    root.cluster_desc.write_text(text)
    holder = ModelHolder.load(root.cluster_desc)
    files = TFTPFiles(root, lambda: holder.model, SERVER, Renderer(root, ClusterPKI(root.tls)))
    assert refusal(files(rrq("ipxe/52:54:00:ab:cd:ef"), PEER)) is ErrorCode.FILE_NOT_FOUND
    assert isinstance(files(rrq("ipxe/52:54:00:77:00:10"), PEER), Opened)


def test_a_file_on_disk_wins_over_the_generated_one(files: TFTPFiles, root: Bsroot) -> None:
    (root.tftpboot / "boot.ipxe").write_text("#!ipxe\necho pinned\n")
    assert read(files(rrq("boot.ipxe"), PEER)) == b"#!ipxe\necho pinned\n"


def test_coreos_boots_with_cloud_config_url(root: Bsroot) -> None:
    text = root.cluster_desc.read_text()
    root.cluster_desc.write_text(text + "os:\n  name: coreos\n  channel: stable\n")
    model = ModelHolder.load(root.cluster_desc).model
    spec = machine_view(model, MASTER).boot("http://b:8080")
    assert spec is not None
    assert spec.kernel == "coreos/stable/current/coreos_production_pxe.vmlinuz"
    assert spec.args[0] == "cloud-config-url=http://b:8080/install.sh"


def test_base_url() -> None:
    assert base_url(IPv4Address("10.0.0.1"), 80) == "http://10.0.0.1"
    assert base_url(IPv4Address("10.0.0.1"), 8080) == "http://10.0.0.1:8080"


async def test_http_serves_the_same_ipxe_scripts(files: TFTPFiles, root: Bsroot) -> None:
    async with serve(root) as served:
        client = served.client
        response = await client.get("/ipxe/52-54-00-77-00-10")
        assert response.status == 200
        text = await response.text()
        model = served.context.holder.model
        token = re.search(r"bootstrapperd\.token=(\S+)", text)
        assert token is not None  # each boot script hands its machine a fresh install token
        assert text == files._renderer.ipxe(model, MASTER, served.base, token.group(1))
        chain = await (await client.get("/boot.ipxe")).text()
        assert f"chain {served.base}/ipxe/${{mac:hexhyp}}" in chain
        assert (await client.get("/ipxe/not-a-mac")).status == 404


def test_boot_scripts_over_tftp_hand_out_a_fresh_install_token(root: Bsroot) -> None:
    holder = ModelHolder.load(root.cluster_desc)
    issued: list[str] = []

    def issue(mac: str) -> str:
        issued.append(mac)
        return f"token{len(issued)}"

    files = TFTPFiles(
        root, lambda: holder.model, SERVER, Renderer(root, ClusterPKI(root.tls)), issue
    )
    assert b"bootstrapperd.token=token1 " in read(files(rrq(f"ipxe/{MASTER}"), PEER))
    pxelinux = read(files(rrq("pxelinux.cfg/01-52-54-00-77-00-10"), PEER))
    assert b"bootstrapperd.token=token2 " in pxelinux
    assert issued == [MASTER, MASTER]
    assert b"token" not in read(files(rrq("boot.ipxe"), PEER))  # no machine: no token
    assert issued == [MASTER, MASTER]
