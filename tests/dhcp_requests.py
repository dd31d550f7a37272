"""Client requests for the DHCP tests, as the firmware and clients of the issue send them."""

from __future__ import annotations

from ipaddress import IPv4Address

from protocols.dhcp.options import BOOTREQUEST, FLAG_BROADCAST, MessageType, Opt, encode_ip
from protocols.dhcp.packet import Packet

ZERO = IPv4Address(0)
PARAMS_FULL = bytes([1, 3, 6, 12, 15, 28, 42, 51, 54, 58, 59, 66, 67])
PXE_VENDOR = b"PXEClient:Arch:00000:UNDI:002001"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def request(
    kind: MessageType,
    mac: str,
    *,
    xid: int = 0x1234ABCD,
    broadcast: bool = False,
    ciaddr: str | None = None,
    giaddr: str | None = None,
    requested: str | None = None,
    server_id: str | None = None,
    params: bytes | None = PARAMS_FULL,
    arch: int | None = None,
    vendor: bytes | None = None,
    user_class: bytes | None = None,
    ipxe: bool = False,
    extra: dict[int, bytes] | None = None,
) -> Packet:
    options: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes([kind])}
    if requested is not None:
        options[Opt.REQUESTED_IP] = encode_ip(IPv4Address(requested))
    if server_id is not None:
        options[Opt.SERVER_ID] = encode_ip(IPv4Address(server_id))
    if params is not None:
        options[Opt.PARAM_REQUEST] = params
    if arch is not None:
        options[Opt.CLIENT_ARCH] = arch.to_bytes(2, "big")
        options[Opt.CLIENT_NDI] = b"\x01\x02\x01"
    if vendor is not None:
        options[Opt.VENDOR_CLASS] = vendor
    if user_class is not None:
        options[Opt.USER_CLASS] = user_class
    if ipxe:
        options[Opt.IPXE] = b"\x13\x01\x01\x11\x01\x01"  # bus-id / http feature flags
    options.update(extra or {})
    return Packet(
        op=BOOTREQUEST,
        xid=xid,
        chaddr=mac_bytes(mac),
        flags=FLAG_BROADCAST if broadcast else 0,
        ciaddr=IPv4Address(ciaddr) if ciaddr else ZERO,
        giaddr=IPv4Address(giaddr) if giaddr else ZERO,
        options=options,
    )


def pxe_discover(mac: str, arch: int, **kwargs: object) -> Packet:
    vendor = f"PXEClient:Arch:{arch:05d}:UNDI:003016".encode()
    return request(MessageType.DISCOVER, mac, arch=arch, vendor=vendor, **kwargs)  # type: ignore[arg-type]
