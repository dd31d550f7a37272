"""DHCP option codes, message types and the payload encoders (RFC 2131, 2132, 3046, 4578)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from ipaddress import IPv4Address

from ..errors import MalformedPacket

INFINITE = 0xFFFFFFFF
"""Lease time (option 51) meaning "infinite"."""

BOOTREQUEST = 1
BOOTREPLY = 2
FLAG_BROADCAST = 0x8000


class MessageType(IntEnum):
    """DHCP message type, the value of option 53."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    """DHCP option codes this appliance reads or writes."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    BROADCAST = 28
    NTP = 42
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_REQUEST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER = 66
    BOOTFILE = 67
    USER_CLASS = 77
    RELAY_AGENT = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    IPXE = 175
    END = 255


def encode_ip(a: IPv4Address) -> bytes:
    """One address, 4 bytes."""
    return a.packed


def encode_ips(addrs: Iterable[IPv4Address]) -> bytes:
    """A list of addresses (routers, DNS, NTP), 4 bytes each."""
    return b"".join(a.packed for a in addrs)


def _encode_uint(v: int, size: int) -> bytes:
    if not 0 <= v < 1 << (8 * size):
        raise ValueError(f"{v} does not fit in {size} byte(s)")
    return v.to_bytes(size, "big")


def encode_u8(v: int) -> bytes:
    """An unsigned 8-bit integer."""
    return _encode_uint(v, 1)


def encode_u16(v: int) -> bytes:
    """An unsigned 16-bit integer, network order."""
    return _encode_uint(v, 2)


def encode_u32(v: int) -> bytes:
    """An unsigned 32-bit integer, network order."""
    return _encode_uint(v, 4)


def encode_str(s: str) -> bytes:
    """A text option (hostname, domain, boot file), UTF-8 without a NUL terminator."""
    return s.encode("utf-8")


def encode_suboptions(subs: Mapping[int, bytes]) -> bytes:
    """Encapsulated options (43, 82, 175) as code, length, data...; no END."""
    parts: list[bytes] = []
    for code, data in subs.items():
        if not 1 <= code <= 254:
            raise ValueError(f"sub-option code {code} is not in 1..254")
        if len(data) > 255:
            raise ValueError(f"sub-option {code} is {len(data)} bytes, more than 255")
        parts.append(bytes((code, len(data))))
        parts.append(data)
    return b"".join(parts)


def decode_suboptions(data: bytes) -> dict[int, bytes]:
    """Encapsulated options back to code -> data. Stops at END, skips PAD, joins repeats."""
    subs: dict[int, bytes] = {}
    end = len(data)
    i = 0
    while i < end:
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= end:
            raise MalformedPacket(f"sub-option {code} has no length byte")
        j = i + 2 + data[i + 1]
        if j > end:
            raise MalformedPacket(f"sub-option {code} runs past the end of its option")
        value = data[i + 2 : j]
        prev = subs.get(code)
        subs[code] = value if prev is None else prev + value
        i = j
    return subs
