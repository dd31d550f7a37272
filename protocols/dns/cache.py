"""The forwarder's response cache: upstream answers kept as wire bytes, keyed by question.

Sans-IO: the time is an argument. An answer is parsed once, when it is stored
(``parse_response``): its OPT record is removed, its ID zeroed, and the byte offset of every
record's TTL noted, so serving it is a dictionary lookup plus, at most once per elapsed second,
a copy with the TTLs rewritten in place. Positive answers live for their smallest TTL;
NXDOMAIN and NODATA answers for the RFC 2308 negative TTL (the SOA's TTL and MINIMUM, whichever
is smaller, capped). SERVFAIL, REFUSED, FORMERR, truncated answers and TTL 0 are never kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MalformedPacket

__all__ = [
    "ParsedResponse",
    "ResponseCache",
    "encode_question",
    "parse_response",
    "question_key",
]

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
TTL = struct.Struct("!I")
SOA_TAIL = struct.Struct("!IIIII")  # serial, refresh, retry, expire, minimum

QR = 0x8000
TC = 0x0200
OPCODE_MASK = 0x7800
RCODE_MASK = 0x000F
NOERROR = 0
NXDOMAIN = 3
TYPE_SOA = 6
TYPE_OPT = 41
MAX_NAME = 255
MAX_LABEL = 63


def encode_question(qname: str, qtype: int, qclass: int) -> bytes:
    """The question section for ``qname`` (presentation form: with or without the final dot,
    ``\\DDD`` and ``\\X`` escapes as in master files) in the case it was given.

    Raises ``ValueError`` for a name that cannot be a domain name (empty label, label over 63
    bytes, name over 255 bytes, a character above U+00FF) or a type/class outside 16 bits."""
    if not (0 <= qtype <= 0xFFFF and 0 <= qclass <= 0xFFFF):
        raise ValueError(f"qtype/qclass out of range: {qtype}/{qclass}")
    wire = bytearray()
    if qname not in ("", "."):
        for label in _labels(qname):
            if not 0 < len(label) <= MAX_LABEL:
                raise ValueError(f"{qname!r}: label of {len(label)} bytes")
            wire.append(len(label))
            wire += label
    wire.append(0)
    if len(wire) > MAX_NAME:
        raise ValueError(f"{qname!r}: name longer than {MAX_NAME} bytes")
    return bytes(wire) + struct.pack("!HH", qtype, qclass)


def question_key(qname: str, qtype: int, qclass: int) -> bytes:
    """The cache key for a question: its wire form with the name's ASCII letters lower-cased
    (type and class untouched) — the same bytes as ``wire_key(packet, end_of_question)``."""
    wire = encode_question(qname, qtype, qclass)
    return wire[:-4].lower() + wire[-4:]


def wire_key(packet: bytes, end: int) -> bytes:
    """The key of the question in ``packet[12:end]`` (a query's single question)."""
    return packet[12 : end - 4].lower() + packet[end - 4 : end]


def _labels(qname: str) -> list[bytes]:
    labels: list[bytes] = []
    label = bytearray()
    i, end = 0, len(qname)
    while i < end:
        ch = qname[i]
        if ch == ".":
            labels.append(bytes(label))
            label = bytearray()
        elif ch == "\\":
            digits = qname[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit() and int(digits) <= 255:
                label.append(int(digits))
                i += 3
            elif i + 1 < end:
                label += _byte(qname[i + 1], qname)
                i += 1
            else:
                raise ValueError(f"{qname!r}: dangling escape")
        else:
            label += _byte(ch, qname)
        i += 1
    if label or not labels:  # else the name ended with an unescaped dot: the root
        labels.append(bytes(label))
    return labels


def _byte(ch: str, qname: str) -> bytes:
    if ord(ch) > 0xFF:
        raise ValueError(f"{qname!r}: {ch!r} is not a byte (use IDNA or \\DDD)")
    return bytes((ord(ch),))


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """An answer made ready to cache and hand on: ``wire`` is the message with ID 0, its OPT
    record removed (ARCOUNT lowered) and nothing after the last record; ``ttl_offsets`` are the
    positions of the records' TTL fields in ``wire`` and ``ttls`` their values (a TTL with the
    top bit set counts as 0, RFC 2181 §8)."""

    wire: bytes
    flags: int
    question_end: int  # offset just past the question section
    answers: int  # ANCOUNT
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    negative_ttl: int | None  # min(SOA TTL, SOA MINIMUM) of the authority SOA, when there is one

    @property
    def rcode(self) -> int:
        return self.flags & RCODE_MASK

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)


def _skip_name(data: bytes, pos: int, limit: int) -> int:
    """The offset just past the (possibly compressed) name at ``pos``."""
    length = 0
    while True:
        if pos >= limit:
            raise MalformedPacket("name runs past its end")
        size = data[pos]
        if size == 0:
            return pos + 1
        if size & 0xC0 == 0xC0:
            if pos + 2 > limit:
                raise MalformedPacket("truncated compression pointer")
            return pos + 2
        if size & 0xC0:
            raise MalformedPacket(f"unknown label type {size:#x}")
        length += size + 1
        if length > MAX_NAME:
            raise MalformedPacket("name longer than 255 bytes")
        pos += size + 1


def parse_response(data: bytes) -> ParsedResponse:
    """Walk a DNS message and prepare it for caching; ``MalformedPacket`` for anything that does
    not hold together (sections running past the end, bad names, two OPT records, an OPT outside
    the additional section)."""
    if len(data) < HEADER.size:
        raise MalformedPacket(f"message of {len(data)} bytes is shorter than a header")
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    size = len(data)
    pos = HEADER.size
    for _ in range(qdcount):
        pos = _skip_name(data, pos, size) + 4
        if pos > size:
            raise MalformedPacket("truncated question")
    question_end = pos
    offsets: list[int] = []
    ttls: list[int] = []
    negative_ttl: int | None = None
    opt: tuple[int, int] | None = None
    for index in range(ancount + nscount + arcount):
        start = pos
        pos = _skip_name(data, pos, size)
        if pos + RR_FIXED.size > size:
            raise MalformedPacket("truncated resource record")
        rtype, _, ttl, rdlength = RR_FIXED.unpack_from(data, pos)
        rdata = pos + RR_FIXED.size
        end = rdata + rdlength
        if end > size:
            raise MalformedPacket("rdata runs past the end of the message")
        if rtype == TYPE_OPT:
            if opt is not None or index < ancount + nscount:
                raise MalformedPacket("misplaced or repeated OPT record")
            opt = (start, end)
        else:
            if ttl & 0x80000000:
                ttl = 0
            offsets.append(pos + 4)
            ttls.append(ttl)
            if rtype == TYPE_SOA and ancount <= index < ancount + nscount:
                tail = _skip_name(data, _skip_name(data, rdata, end), end)
                if tail + SOA_TAIL.size != end:
                    raise MalformedPacket("bad SOA rdata")
                minimum = SOA_TAIL.unpack_from(data, tail)[4]
                soa_ttl = min(ttl, minimum)
                negative_ttl = soa_ttl if negative_ttl is None else min(negative_ttl, soa_ttl)
        pos = end
    if opt is None:
        wire = bytearray(data[:pos])
    elif opt[1] == pos:  # the OPT is the last record, as every resolver sends it
        wire = bytearray(data[: opt[0]])
        arcount -= 1
    else:
        return parse_response(_without_opt(data))
    HEADER.pack_into(wire, 0, 0, flags, qdcount, ancount, nscount, arcount)
    return ParsedResponse(
        bytes(wire), flags, question_end, ancount, tuple(offsets), tuple(ttls), negative_ttl
    )


def _without_opt(data: bytes) -> bytes:
    """The message re-encoded without its OPT record, for the rare sender that puts the OPT
    before other additional records (cutting it out in place could break compression
    pointers into the records after it)."""
    import dnslib  # only on this rare path

    try:
        record = dnslib.DNSRecord.parse(data)
        record.ar = [rr for rr in record.ar if rr.rtype != TYPE_OPT]
        packed: bytes = record.pack()
    except Exception as exc:  # dnslib raises a variety of errors for bad input
        raise MalformedPacket(f"cannot re-encode without OPT: {exc}") from exc
    return packed


@dataclass(slots=True)
class _Entry:
    template: bytes  # the message with the TTLs as stored
    offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    stored: float
    lifetime: int
    elapsed: int  # whole seconds since ``stored`` that ``rendered`` is for
    rendered: bytes


_pack_ttl = TTL.pack_into


class ResponseCache:
    """Answers by question key, oldest evicted first when ``max_entries`` are held. TTLs are
    capped at ``max_ttl``; negative answers at ``negative_ttl_cap``."""

    def __init__(
        self, max_entries: int = 10000, max_ttl: int = 86400, negative_ttl_cap: int = 300
    ) -> None:
        self._max_entries = max_entries
        self._max_ttl = max_ttl
        self._negative_ttl_cap = negative_ttl_cap
        self._entries: dict[bytes, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget everything (the local names changed: a forwarded answer may now be wrong)."""
        self._entries.clear()

    def get(self, key: bytes, now: float) -> bytes | None:
        """The stored answer (ID 0, no OPT) with every TTL lowered by the whole seconds since
        it was stored; None when there is none or it has expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = now - entry.stored
        if age >= entry.lifetime:
            del self._entries[key]
            return None
        elapsed = int(age) if age > 0 else 0
        if elapsed == entry.elapsed:
            return entry.rendered
        buf = bytearray(entry.template)
        for offset, ttl in zip(entry.offsets, entry.ttls, strict=True):
            _pack_ttl(buf, offset, ttl - elapsed)
        entry.elapsed = elapsed
        entry.rendered = bytes(buf)
        return entry.rendered

    def put(self, key: bytes, response: bytes, now: float) -> None:
        """Keep ``response`` (wire bytes, any ID, OPT allowed) under ``key`` when it may be
        cached; anything malformed, uncacheable, or not answering ``key`` is ignored."""
        try:
            parsed = parse_response(response)
        except MalformedPacket:
            return
        self.store(key, parsed, now)

    def store(self, key: bytes, response: ParsedResponse, now: float) -> None:
        """``put`` for an answer already parsed."""
        lifetime, negative = self._lifetime(response)
        if lifetime <= 0 or self._max_entries <= 0:
            return
        wire = response.wire
        question = wire[HEADER.size : response.question_end]
        if HEADER.unpack_from(wire)[2] != 1 or question.lower() != key:
            return  # not an answer to exactly the question ``key`` stands for
        # A negative answer's records (its SOA above all) say how long the negative answer
        # lasts, so they are clamped to it; a positive answer's keep their own TTLs.
        cap = lifetime if negative else self._max_ttl
        ttls = tuple(min(ttl, cap) for ttl in response.ttls)
        template = bytearray(wire)
        for offset, ttl in zip(response.ttl_offsets, ttls, strict=True):
            _pack_ttl(template, offset, ttl)
        rendered = bytes(template)
        self._entries.pop(key, None)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        entry = _Entry(rendered, response.ttl_offsets, ttls, now, lifetime, 0, rendered)
        self._entries[key] = entry

    def _lifetime(self, response: ParsedResponse) -> tuple[int, bool]:
        """How long ``response`` may be cached, in seconds (0: not at all), and whether it is
        a negative (NXDOMAIN or NODATA) answer."""
        flags = response.flags
        if not flags & QR or flags & (OPCODE_MASK | TC):
            return 0, False
        rcode = flags & RCODE_MASK
        if rcode == NXDOMAIN or (rcode == NOERROR and response.answers == 0):
            if response.negative_ttl is None:
                return 0, True  # no SOA: RFC 2308 §5 says not to cache
            return min(response.negative_ttl, self._negative_ttl_cap, *response.ttls), True
        if rcode != NOERROR or not response.ttls:
            return 0, False
        return min(self._max_ttl, *response.ttls), False
