"""Boot file selection by firmware: the table of the issue, and the never-loop rule for iPXE."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootstrapperd.dhcp.boot import BootPolicy, Firmware, firmware_of
from bootstrapperd.routes import URLs
from protocols.dhcp.options import MessageType
from tests.dhcp_requests import pxe_discover, request

MAC = "52:54:00:77:00:11"
SERVER = IPv4Address("10.77.0.1")


@pytest.fixture
def policy(tmp_path: Path) -> BootPolicy:
    return BootPolicy(SERVER, URLs("http://10.77.0.1:8080"), tmp_path)


@pytest.mark.parametrize(
    ("arch", "firmware", "file"),
    [
        (0, Firmware.BIOS, "undionly.kpxe"),
        (7, Firmware.UEFI_X64, "ipxe.efi"),
        (9, Firmware.UEFI_X64, "ipxe.efi"),
    ],
)
def test_pxe_firmware_gets_its_ipxe_binary(
    policy: BootPolicy, arch: int, firmware: Firmware, file: str
) -> None:
    packet = pxe_discover(MAC, arch)
    assert firmware_of(packet) is firmware
    boot = policy.choose(packet)
    assert boot is not None
    assert (boot.file, boot.server, boot.vendor_class, boot.ipxe) == (
        file,
        SERVER,
        b"PXEClient",
        False,
    )


@pytest.mark.parametrize(("arch", "file"), [(6, "ipxe-i386.efi"), (11, "ipxe-arm64.efi")])
def test_other_architectures_only_when_bsroot_has_the_binary(
    policy: BootPolicy, arch: int, file: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert policy.choose(pxe_discover(MAC, arch)) is None
    assert f"bsroot has no {file}" in caplog.text
    (policy.tftpboot / file).write_bytes(b"efi")
    boot = policy.choose(pxe_discover(MAC, arch))
    assert boot is not None
    assert boot.file == file


@pytest.mark.parametrize(("arch", "file"), [(16, "ipxe.efi"), (19, "ipxe-arm64.efi")])
def test_http_boot_gets_a_url_and_the_vendor_class_echoed(
    policy: BootPolicy, arch: int, file: str
) -> None:
    (policy.tftpboot / file).write_bytes(b"efi")
    packet = request(
        MessageType.DISCOVER, MAC, arch=arch, vendor=f"HTTPClient:Arch:{arch:05d}".encode()
    )
    boot = policy.choose(packet)
    assert boot is not None
    assert boot.file == f"http://10.77.0.1:8080/boot/{file}"
    assert boot.vendor_class == b"HTTPClient"


@pytest.mark.parametrize("user_class", [b"iPXE", b"\x04iPXE", b"\x03foo\x04iPXE"])
def test_ipxe_gets_its_script_url_never_the_binary(policy: BootPolicy, user_class: bytes) -> None:
    packet = pxe_discover(MAC, 0, user_class=user_class, ipxe=True)
    assert firmware_of(packet) is Firmware.IPXE
    boot = policy.choose(packet)
    assert boot is not None
    assert boot.file == f"http://10.77.0.1:8080/ipxe/{MAC}"
    assert boot.ipxe


def test_plain_dhcp_clients_get_no_boot_information(policy: BootPolicy) -> None:
    assert firmware_of(request(MessageType.DISCOVER, MAC)) is None
    assert policy.choose(request(MessageType.DISCOVER, MAC)) is None


def test_pxe_vendor_class_without_architecture_is_bios(policy: BootPolicy) -> None:
    packet = request(MessageType.DISCOVER, MAC, vendor=b"PXEClient:Arch:00000:UNDI:002001")
    assert firmware_of(packet) is Firmware.BIOS
