"""The DHCP/BOOTP message: a dataclass with lazy typed option accessors, ``parse`` and
``serialize`` (RFC 2131 header, RFC 2132 options, RFC 3396 long options, option overload)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..errors import MalformedPacket
from .options import MessageType, decode_suboptions

_HEADER = struct.Struct("!BBBBIHHIIII16s64s128sI")
_COOKIE = 0x63825363
_OPTIONS_START = 240
_SNAME = (44, 108)
_FILE = (108, 236)
_ZERO_IP = IPv4Address(0)
_IP_UDP_HEADERS = 28
_MIN_MAX_SIZE = 576
_HTYPE_ETHERNET = 1
_ETHERNET_HLEN = 6
_BOOTP_MIN_LEN = 300
_END = b"\xff"
_OVERLOAD = 52
_MESSAGE_TYPE = 53


@dataclass(slots=True)
class Packet:
    """One DHCP message. ``options`` maps code -> payload (repeats already joined, overloaded
    ``file``/``sname`` already folded in); the properties decode single options on demand.
    ``sname`` and ``file`` are C strings (cut at the first NUL), ``b""`` when they carried
    overloaded options."""

    op: int
    xid: int
    chaddr: bytes
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = _ZERO_IP
    yiaddr: IPv4Address = _ZERO_IP
    siaddr: IPv4Address = _ZERO_IP
    giaddr: IPv4Address = _ZERO_IP
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    def _sized(self, code: int, *, exactly: int = 0, at_least: int = 1) -> bytes | None:
        value = self.options.get(code)
        if value is None:
            return None
        if exactly and len(value) != exactly:
            raise MalformedPacket(f"option {code} is {len(value)} bytes, expected {exactly}")
        if len(value) < at_least:
            raise MalformedPacket(f"option {code} is {len(value)} bytes, at least {at_least}")
        return value

    def _ip(self, code: int) -> IPv4Address | None:
        value = self._sized(code, exactly=4)
        return None if value is None else IPv4Address(value)

    def _suboptions(self, code: int) -> dict[int, bytes] | None:
        value = self._sized(code)
        return None if value is None else decode_suboptions(value)

    @property
    def mac(self) -> str:
        """The client hardware address as lowercase colon-separated hex."""
        return self.chaddr.hex(":")

    @property
    def message_type(self) -> MessageType | None:
        """Option 53."""
        value = self._sized(_MESSAGE_TYPE, exactly=1)
        if value is None:
            return None
        try:
            return MessageType(value[0])
        except ValueError:
            raise MalformedPacket(f"unknown DHCP message type {value[0]}") from None

    @property
    def requested_ip(self) -> IPv4Address | None:
        """Option 50."""
        return self._ip(50)

    @property
    def server_id(self) -> IPv4Address | None:
        """Option 54."""
        return self._ip(54)

    @property
    def client_id(self) -> bytes | None:
        """Option 61, raw (type byte then identifier)."""
        return self._sized(61, at_least=2)

    @property
    def parameter_requests(self) -> tuple[int, ...]:
        """Option 55, the codes the client asks for, in its order."""
        value = self._sized(55)
        return () if value is None else tuple(value)

    @property
    def max_message_size(self) -> int | None:
        """Option 57, the largest DHCP message (with IP and UDP headers) the client accepts."""
        value = self._sized(57, exactly=2)
        if value is None:
            return None
        size = int.from_bytes(value, "big")
        if size < _MIN_MAX_SIZE:
            raise MalformedPacket(f"maximum message size {size} is below {_MIN_MAX_SIZE}")
        return size

    @property
    def hostname(self) -> str | None:
        """Option 12, decoded as UTF-8 (bad bytes replaced), trailing NULs removed."""
        value = self._sized(12)
        return None if value is None else value.decode("utf-8", "replace").rstrip("\0")

    @property
    def vendor_class(self) -> bytes | None:
        """Option 60, raw (e.g. ``PXEClient:Arch:00007:UNDI:003016``)."""
        return self._sized(60)

    @property
    def user_classes(self) -> tuple[bytes, ...]:
        """Option 77: RFC 3004 (length, data) instances, or the whole payload as one bare
        string when it is not a clean RFC 3004 sequence (iPXE sends plain ``iPXE``)."""
        value = self._sized(77)
        if value is None:
            return ()
        instances: list[bytes] = []
        i, end = 0, len(value)
        while i < end:
            n = value[i]
            if n == 0 or i + 1 + n > end:
                return (value,)
            instances.append(value[i + 1 : i + 1 + n])
            i += 1 + n
        return tuple(instances)

    @property
    def client_arch(self) -> tuple[int, ...]:
        """Option 93, the client system architectures (RFC 4578)."""
        value = self._sized(93, at_least=2)
        if value is None:
            return ()
        if len(value) % 2:
            raise MalformedPacket(f"option 93 has odd length {len(value)}")
        return struct.unpack(f"!{len(value) // 2}H", value)

    @property
    def client_ndi(self) -> bytes | None:
        """Option 94, the network interface identifier (type, major, minor)."""
        return self._sized(94, exactly=3)

    @property
    def client_uuid(self) -> bytes | None:
        """Option 97: type byte 0 followed by the 16-byte machine GUID (17 bytes in all)."""
        value = self._sized(97, exactly=17)
        if value is not None and value[0] != 0:
            raise MalformedPacket(f"option 97 has unknown identifier type {value[0]}")
        return value

    @property
    def relay_agent(self) -> dict[int, bytes] | None:
        """Option 82 sub-options (1 circuit-id, 2 remote-id, ...)."""
        return self._suboptions(82)

    @property
    def vendor_specific(self) -> bytes | None:
        """Option 43, raw; use ``decode_suboptions`` when it is encapsulated."""
        return self._sized(43)

    @property
    def ipxe(self) -> dict[int, bytes] | None:
        """Option 175, iPXE's encapsulated feature and setting sub-options."""
        return self._suboptions(175)

    @property
    def lease_time(self) -> int | None:
        """Option 51, seconds (``INFINITE`` for an infinite lease)."""
        value = self._sized(51, exactly=4)
        return None if value is None else int.from_bytes(value, "big")


def reply_size(packet: Packet) -> int:
    """The size to build a reply to ``packet`` for: option 57 clamped to at least 576, the size
    every client must accept (RFC 2132 §9.10); 576 when the option is absent or not 2 bytes."""
    value = packet.options.get(57)
    if value is None or len(value) != 2:
        return _MIN_MAX_SIZE
    return max(int.from_bytes(value, "big"), _MIN_MAX_SIZE)


def ethernet_ok(packet: Packet) -> bool:
    """False for an Ethernet packet (htype 1) whose hardware address is not 6 bytes."""
    return packet.htype != _HTYPE_ETHERNET or len(packet.chaddr) == _ETHERNET_HLEN


def _ip(v: int) -> IPv4Address:
    return _ZERO_IP if v == 0 else IPv4Address(v)


def _cstring(raw: bytes) -> bytes:
    nul = raw.find(0)
    return raw if nul < 0 else raw[:nul]


def _scan(data: bytes, i: int, end: int, options: dict[int, bytes], region: str) -> None:
    """Read options from ``data[i:end]`` into ``options`` up to END, joining repeats."""
    while i < end:
        code = data[i]
        if code == 255:
            return
        if code == 0:
            i += 1
            continue
        if i + 1 >= end:
            break
        j = i + 2 + data[i + 1]
        if j > end:
            break
        value = data[i + 2 : j]
        prev = options.get(code)
        options[code] = value if prev is None else prev + value
        i = j
    raise MalformedPacket(f"{region} field ends in the middle of an option or without END")


def parse(data: bytes) -> Packet:
    """Decode one DHCP message. Raises ``MalformedPacket`` (and nothing else) for bad input;
    option payloads are only checked when their accessor is used."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < _OPTIONS_START:
        raise MalformedPacket(f"{len(data)} bytes is shorter than a DHCP message")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file, cookie) = (
        _HEADER.unpack_from(data)
    )
    if cookie != _COOKIE:
        raise MalformedPacket("no DHCP magic cookie")
    if hlen > 16:
        raise MalformedPacket(f"hardware address length {hlen} is more than 16")
    options: dict[int, bytes] = {}
    _scan(data, _OPTIONS_START, len(data), options, "options")
    overload = options.pop(_OVERLOAD, None)
    if overload is not None:
        if overload not in (b"\x01", b"\x02", b"\x03"):
            raise MalformedPacket(f"bad option overload value {overload.hex()}")
        if overload[0] & 1:
            _scan(data, *_FILE, options, "file")
            file = b""
        if overload[0] & 2:
            _scan(data, *_SNAME, options, "sname")
            sname = b""
        options.pop(_OVERLOAD, None)
    return Packet(
        op=op,
        xid=xid,
        chaddr=chaddr[:hlen],
        htype=htype,
        hops=hops,
        secs=secs,
        flags=flags,
        ciaddr=_ip(ci),
        yiaddr=_ip(yi),
        siaddr=_ip(si),
        giaddr=_ip(gi),
        sname=_cstring(sname),
        file=_cstring(file),
        options=options,
    )


def _ordered(options: dict[int, bytes]) -> list[tuple[int, bytes]]:
    """The options in the order they are written: message type first, then dict order."""
    first = options.get(_MESSAGE_TYPE)
    rest = [(code, value) for code, value in options.items() if code != _MESSAGE_TYPE]
    return rest if first is None else [(_MESSAGE_TYPE, first), *rest]


def _encode(code: int, payload: bytes) -> bytes:
    """One option as code, length, data; split into 255-byte instances when longer."""
    if not 0 < code < 255 or code == _OVERLOAD:
        raise ValueError(f"option code {code} cannot be serialized")
    n = len(payload)
    if n <= 255:
        return bytes((code, n)) + payload
    return b"".join(
        bytes((code, len(chunk))) + chunk
        for chunk in (payload[k : k + 255] for k in range(0, n, 255))
    )


def _body(options: dict[int, bytes]) -> bytearray:
    """All options encoded back to back (message type first), without END."""
    out = bytearray()
    first = options.get(_MESSAGE_TYPE)
    if first is not None:
        out += _encode(_MESSAGE_TYPE, first)
    for code, payload in options.items():
        if code == _MESSAGE_TYPE:
            continue
        n = len(payload)
        if n <= 255 and 0 < code < 255 and code != _OVERLOAD:
            out.append(code)
            out.append(n)
            out += payload
        else:
            out += _encode(code, payload)
    return out


class _Region:
    """A place options can be written to: the options field, or an overloaded file/sname."""

    __slots__ = ("free", "parts")

    def __init__(self, capacity: int) -> None:
        self.free = capacity
        self.parts: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        self.parts.append(chunk)
        self.free -= len(chunk)


def _overload(
    items: list[tuple[int, bytes]], regions: list[_Region], size: int, limit: int
) -> None:
    """Distribute options over ``regions`` in order: each option whole in the first region
    (from the current one on) with room, else split across regions (RFC 3396)."""
    cur = 0
    for code, payload in items:
        encoded = _encode(code, payload)
        fits = [k for k in range(cur, len(regions)) if len(encoded) <= regions[k].free]
        if fits:
            cur = fits[0]
            regions[cur].add(encoded)
            continue
        rest, placed = payload, False
        while rest or not placed:
            room = min(255, regions[cur].free - 2)
            if room < (1 if rest else 0):
                cur += 1
                if cur == len(regions):
                    raise ValueError(
                        f"DHCP message too large: {size} bytes of options do not fit in "
                        f"{limit} bytes, even overloading file/sname"
                    )
                continue
            regions[cur].add(bytes((code, len(rest[:room]))) + rest[:room])
            rest, placed = rest[room:], True


def serialize(packet: Packet, max_size: int = _MIN_MAX_SIZE) -> bytes:
    """Encode ``packet`` for a client that accepts ``max_size`` bytes of IP datagram
    (option 57; at least 576). Overloads empty ``file``/``sname`` when the options do not
    fit; raises ``ValueError`` when even that is not enough or a field is out of range."""
    limit = max(max_size, _MIN_MAX_SIZE) - _IP_UDP_HEADERS
    body = _body(packet.options)
    sname, file = packet.sname, packet.file
    if len(sname) > 64 or len(file) > 128 or len(packet.chaddr) > 16:
        raise ValueError("chaddr, sname or file is longer than its BOOTP field")
    if _OPTIONS_START + len(body) + 1 > limit:
        main = _Region(limit - _OPTIONS_START - 1 - 3)
        file_region = _Region(0 if file else 127)
        sname_region = _Region(0 if sname else 63)
        _overload(_ordered(packet.options), [main, file_region, sname_region], len(body), limit)
        overload = (1 if file_region.parts else 0) | (2 if sname_region.parts else 0)
        at = 1 if main.parts and main.parts[0][0] == _MESSAGE_TYPE else 0
        main.parts.insert(at, bytes((_OVERLOAD, 1, overload)))
        body = bytearray().join(main.parts)
        if file_region.parts:
            file = b"".join(file_region.parts) + _END
        if sname_region.parts:
            sname = b"".join(sname_region.parts) + _END
    try:
        header = _HEADER.pack(
            packet.op,
            packet.htype,
            len(packet.chaddr),
            packet.hops,
            packet.xid,
            packet.secs,
            packet.flags,
            int(packet.ciaddr),
            int(packet.yiaddr),
            int(packet.siaddr),
            int(packet.giaddr),
            packet.chaddr,
            sname,
            file,
            _COOKIE,
        )
    except struct.error as e:
        raise ValueError(f"header field out of range: {e}") from None
    body += _END
    short = _BOOTP_MIN_LEN - _OPTIONS_START - len(body)
    if short > 0:
        body += bytes(short)
    return header + body
