"""IPv6 Neighbor Discovery's router messages (RFC 4861 §4.1, §4.2, §4.6): Router Solicitation
and Router Advertisement, sans-IO. The endpoint that sends them is bootstrapperd/dhcp/ra.py."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from .errors import MalformedPacket

ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
OPT_SOURCE_LLADDR = 1
OPT_PREFIX_INFORMATION = 3
ALL_NODES = IPv6Address("ff02::1")
ALL_ROUTERS = IPv6Address("ff02::2")
UNSPECIFIED = IPv6Address("::")
ND_HOP_LIMIT = 255  # ND messages are sent with 255 and accepted only with 255 (§6.1.1)
CUR_HOP_LIMIT = 64
VALID_LIFETIME = 86400  # seconds
PREFERRED_LIFETIME = 14400
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MIN_DELAY_BETWEEN_RAS = 3.0  # between two multicast RAs
MIN_INTERVAL_FACTOR = 0.75  # unsolicited RAs go out every 75–100 % of `interval`

_RA_HEADER = struct.Struct("!BBHBBHII")  # type, code, checksum, hop limit, flags, lifetime, …
_PREFIX_OPTION = struct.Struct("!BBBBIII16s")
_FLAG_MANAGED, _FLAG_OTHER = 0x80, 0x40
_FLAG_ON_LINK, _FLAG_AUTONOMOUS = 0x80, 0x40


class MalformedSolicitation(MalformedPacket):
    """An RS that RFC 4861 §6.1.1 says to drop; ``reason`` names the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Solicitation:
    source: IPv6Address
    source_lladdr: bytes | None  # the Source Link-Layer Address option, if any


@dataclass(frozen=True)
class Advertisement:
    source_lladdr: bytes | None  # the interface's MAC
    prefix: IPv6Network | None
    cur_hop_limit: int = CUR_HOP_LIMIT
    managed: bool = False
    other: bool = False
    router_lifetime: int = 0  # seconds; 0: not a default router
    reachable_time: int = 0
    retrans_timer: int = 0
    valid_lifetime: int = VALID_LIFETIME
    preferred_lifetime: int = PREFERRED_LIFETIME


def _options(data: bytes, offset: int) -> list[tuple[int, bytes]]:
    """ND options (type, body after the 2-byte header); a zero or overlong length is malformed."""
    found = []
    while offset < len(data):
        if len(data) - offset < 2:
            raise MalformedSolicitation("options", "option header cut short")
        kind, units = data[offset], data[offset + 1]
        end = offset + units * 8
        if units == 0 or end > len(data):
            raise MalformedSolicitation("options", f"option {kind} has a bad length ({units})")
        found.append((kind, data[offset + 2 : end]))
        offset = end
    return found


def parse_solicitation(data: bytes, source: IPv6Address, hop_limit: int | None) -> Solicitation:
    """An RS as received on a raw ICMPv6 socket (the kernel has checked the checksum).
    ``hop_limit`` is the IPv6 hop limit (None when the kernel did not say)."""
    if len(data) < 8:
        raise MalformedSolicitation("short", f"{len(data)} bytes, an RS has at least 8")
    if data[0] != ROUTER_SOLICITATION:
        raise MalformedSolicitation("type", f"ICMPv6 type {data[0]}, not an RS")
    if hop_limit is not None and hop_limit != ND_HOP_LIMIT:
        raise MalformedSolicitation("hop_limit", f"hop limit {hop_limit}, not 255")
    if data[1] != 0:
        raise MalformedSolicitation("code", f"ICMPv6 code {data[1]}, not 0")
    lladdr = None
    for kind, body in _options(data, 8):
        if kind == OPT_SOURCE_LLADDR:
            lladdr = body
    if lladdr is not None and source == UNSPECIFIED:
        raise MalformedSolicitation("lladdr", "source link-layer address from the address ::")
    return Solicitation(source, lladdr)


def serialize_solicitation(source_lladdr: bytes | None) -> bytes:
    """An RS as a host sends it (checksum 0: the kernel fills it in)."""
    out = bytes([ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0])
    return out + (_lladdr_option(source_lladdr) if source_lladdr is not None else b"")


def _lladdr_option(lladdr: bytes) -> bytes:
    units = -(-(len(lladdr) + 2) // 8)
    return bytes([OPT_SOURCE_LLADDR, units]) + lladdr.ljust(units * 8 - 2, b"\0")


def serialize_advertisement(ad: Advertisement) -> bytes:
    """The RA's ICMPv6 message, checksum 0 (the kernel computes it on raw ICMPv6 sockets)."""
    flags = (_FLAG_MANAGED if ad.managed else 0) | (_FLAG_OTHER if ad.other else 0)
    out = _RA_HEADER.pack(
        ROUTER_ADVERTISEMENT,
        0,
        0,
        ad.cur_hop_limit,
        flags,
        ad.router_lifetime,
        ad.reachable_time,
        ad.retrans_timer,
    )
    if ad.source_lladdr is not None:
        out += _lladdr_option(ad.source_lladdr)
    if ad.prefix is not None:
        out += _PREFIX_OPTION.pack(
            OPT_PREFIX_INFORMATION,
            4,
            ad.prefix.prefixlen,
            _FLAG_ON_LINK | _FLAG_AUTONOMOUS,
            ad.valid_lifetime,
            ad.preferred_lifetime,
            0,
            ad.prefix.network_address.packed,
        )
    return out


def parse_advertisement(data: bytes) -> Advertisement:
    """The inverse of ``serialize_advertisement`` (for tests and tools)."""
    if len(data) < _RA_HEADER.size or data[0] != ROUTER_ADVERTISEMENT or data[1] != 0:
        raise MalformedPacket("not a router advertisement")
    _, _, _, hops, flags, lifetime, reachable, retrans = _RA_HEADER.unpack_from(data)
    lladdr, prefix, valid, preferred = None, None, VALID_LIFETIME, PREFERRED_LIFETIME
    for kind, body in _options(data, _RA_HEADER.size):
        if kind == OPT_SOURCE_LLADDR:
            lladdr = body
        elif kind == OPT_PREFIX_INFORMATION and len(body) == 30:
            length, _, valid, preferred, _, raw = _PREFIX_OPTION.unpack(b"\0\0" + body)[2:]
            prefix = IPv6Network((IPv6Address(raw), min(length, 128)), strict=False)
    return Advertisement(
        lladdr,
        prefix,
        cur_hop_limit=hops,
        managed=bool(flags & _FLAG_MANAGED),
        other=bool(flags & _FLAG_OTHER),
        router_lifetime=lifetime,
        reachable_time=reachable,
        retrans_timer=retrans,
        valid_lifetime=valid,
        preferred_lifetime=preferred,
    )


# ---- the interface ----------------------------------------------------------------------------
