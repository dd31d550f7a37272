"""Which boot program a PXE client gets, by firmware (option 93, vendor class 60, user class 77).

The rule: a client that already is iPXE gets the HTTP URL of its own iPXE script (so iPXE never
chain-loads itself); PXE firmware gets the iPXE binary for its architecture over TFTP; UEFI
HTTP-boot firmware gets that binary as an ``http://`` URL. Anything else (a plain DHCP client)
gets no boot information.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address
from pathlib import Path

from protocols.dhcp.packet import Packet
from protocols.dhcp.server import Boot

from ..routes import URLs

log = logging.getLogger("bootstrapperd.dhcp")


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI_IA32 = "uefi-ia32"
    UEFI_X64 = "uefi-x64"
    UEFI_ARM64 = "uefi-arm64"
    HTTP_IA32 = "uefi-http-ia32"
    HTTP_X64 = "uefi-http-x64"
    HTTP_ARM64 = "uefi-http-arm64"
    IPXE = "ipxe"


# RFC 4578 / IANA processor architecture types -> firmware. 9 is "EFI BC", which x64 UEFI
# firmware of several vendors sends; dnsmasq and ISC examples treat it as x64.
ARCHITECTURES = {
    0: Firmware.BIOS,
    6: Firmware.UEFI_IA32,
    7: Firmware.UEFI_X64,
    9: Firmware.UEFI_X64,
    11: Firmware.UEFI_ARM64,
    15: Firmware.HTTP_IA32,
    16: Firmware.HTTP_X64,
    19: Firmware.HTTP_ARM64,
}

BINARIES = {
    Firmware.BIOS: "undionly.kpxe",
    Firmware.UEFI_IA32: "ipxe-i386.efi",
    Firmware.UEFI_X64: "ipxe.efi",
    Firmware.UEFI_ARM64: "ipxe-arm64.efi",
    Firmware.HTTP_IA32: "ipxe-i386.efi",
    Firmware.HTTP_X64: "ipxe.efi",
    Firmware.HTTP_ARM64: "ipxe-arm64.efi",
}
# The binaries every bsroot has (pack puts them there); the others are served only when present.
ALWAYS_PRESENT = frozenset({"undionly.kpxe", "ipxe.efi"})
HTTP_FIRMWARE = frozenset({Firmware.HTTP_IA32, Firmware.HTTP_X64, Firmware.HTTP_ARM64})


def firmware_of(request: Packet) -> Firmware | None:
    """What is asking: iPXE, a PXE or HTTP-boot firmware, or (None) a plain DHCP client."""
    if b"iPXE" in request.user_classes:
        return Firmware.IPXE
    vendor = request.vendor_class or b""
    arches = request.client_arch
    if arches:
        known = ARCHITECTURES.get(arches[0])
        if known is not None:
            return known
    if vendor.startswith(b"HTTPClient"):
        return Firmware.HTTP_X64
    if vendor.startswith(b"PXEClient"):
        return Firmware.BIOS if not arches else None
    return None


@dataclass(frozen=True)
class BootPolicy:
    server: IPv4Address
    urls: URLs  # the HTTP server's, for iPXE and HTTP-boot firmware
    tftpboot: Path

    def choose(self, request: Packet) -> Boot | None:
        firmware = firmware_of(request)
        if firmware is None:
            return None
        vendor = request.vendor_class or b""
        echoed = b"PXEClient" if vendor.startswith(b"PXEClient") else None
        if firmware is Firmware.IPXE:
            return Boot(self.urls.ipxe_script(request.mac), self.server, echoed, ipxe=True)
        binary = BINARIES[firmware]
        if binary not in ALWAYS_PRESENT and not (self.tftpboot / binary).is_file():
            log.warning(
                "no boot file for this firmware: bsroot has no %s",
                binary,
                extra={"fields": {"mac": request.mac, "firmware": str(firmware)}},
            )
            return None
        if firmware in HTTP_FIRMWARE:
            return Boot(self.urls.boot_file(binary), self.server, b"HTTPClient")
        return Boot(binary, self.server, echoed)
