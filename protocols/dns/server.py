"""From a query to its response: local names from the ``Authority``, the rest forwarded.

Two paths. ``fast()`` handles the common query (one question, no answer/authority sections,
at most an EDNS OPT record) for a name answered before: the response is a stored
wire-format template into which the query's ID, RD bit and question (with the client's
letter case) are spliced — no parsing, no encoding. Everything else goes through
``respond()``, which parses with dnslib, answers (and stores the template for next time),
or hands back a ``Forward`` for the endpoint to await. Answers larger than the client's
UDP limit (512, or its EDNS size) are truncated with TC set; TCP gets them whole.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import EDNS0, QTYPE, RCODE, DNSError, DNSHeader, DNSLabel, DNSRecord
from dnslib.label import DNSLabelError

from ..throttle import LogThrottle
from .authority import Answer, Authority, absolute
from .cache import ResponseCache, wire_key
from .forward import Forwarder

__all__ = ["Forward", "Resolver", "header_only", "name_fits", "truncate"]

UDP_PAYLOAD = 1232  # what we advertise in our OPT record (the DNS flag day 2020 value)
MEMO_MAX = 100_000  # stored templates; beyond, the memo starts again
_OPT = b"\x00" + struct.pack("!HHIH", 41, UDP_PAYLOAD, 0, 0)
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # qdcount 1, ancount 0, nscount 0
_TYPE_OPT = 41
_CLASS_IN = 1
_CLASS_ANY = 255
MAX_LABEL = 63  # bytes of one label (RFC 1035 2.3.4)
MAX_NAME = 255  # bytes of a name on the wire, length octets and root included (RFC 1035 2.3.4)
# Records a query may declare in its header (all sections): beyond, FORMERR before parsing — a
# message of thousands of records, each name a pointer to the one before, costs the parser time
# quadratic in their number and a recursion deeper than Python's limit.
MAX_QUERY_RECORDS = 8
# What the parser raises on broken input (a pointer chain too deep raises RecursionError).
_PARSE_ERRORS = (DNSError, ValueError, IndexError, struct.error, UnicodeError, RecursionError)


@dataclass(frozen=True, slots=True)
class Forward:
    """A query to forward: the endpoint awaits ``Resolver.forward(this)``."""

    request: DNSRecord
    name: str
    qtype: int
    qclass: int
    limit: int  # the client's UDP limit; 0 over TCP
    edns: bool


@dataclass(frozen=True, slots=True)
class _Template:
    heads: tuple[bytes, bytes, bytes, bytes]  # bytes 2..12 for (RD 0/1) × (no EDNS / EDNS)
    tails: tuple[bytes, bytes]  # after the question: without / with our OPT record
    valid_until: float
    counter: str


def _flags(rd: int, edns: int) -> int:
    return rd | (edns << 1)


class Resolver:
    def __init__(
        self,
        authority: Authority,
        forwarder: Forwarder | None,
        *,
        cache: ResponseCache | None = None,
        may_recurse: Callable[[str], bool],
        counters: Counter[str],
        clock: Callable[[], float],
        logger: logging.Logger | None = None,
    ) -> None:
        self.authority = authority
        self.forwarder = forwarder
        self.cache = cache
        self.may_recurse = may_recurse
        self.counters = counters
        self.clock = clock
        self._log = logger
        self._throttle = LogThrottle()
        self._memo: dict[bytes, _Template] = {}

    def use(self, authority: Authority) -> None:
        """Serve a new set of local names (a reload); every stored answer is dropped."""
        self.authority = authority
        self._memo = {}
        if self.cache is not None:
            self.cache.clear()

    def invalidate(self) -> None:
        """A host's address changed (a lease): forget stored answers."""
        if self._memo:
            self._memo = {}

    # --- the fast path ------------------------------------------------------------------------

    def fast(self, data: bytes, client: str, now: float) -> bytes | None:
        """The response from a stored template (a local name answered before) or from the
        forwarding cache, or None (then call ``respond``)."""
        if len(data) < 17 or data[4:10] != _ONE_QUESTION or data[2] & 0xFE:
            return None
        arcount = data[10:12]
        if arcount == b"\x00\x00":
            end = len(data)
            edns = 0
            limit = 512
        elif arcount == b"\x00\x01":
            end = data.find(b"\x00", 12) + 5
            # The OPT record: root name, type 41, class = UDP size, TTL = rcode/version/flags.
            if end < 17 or len(data) < end + 11 or data[end : end + 3] != b"\x00\x00\x29":
                return None
            if data[end + 6 : end + 7] != b"\0":  # EDNS version 0 only
                return None
            edns = 1
            limit = max(512, (data[end + 3] << 8) | data[end + 4])
        else:
            return None
        key = wire_key(data, end)
        template = self._memo.get(key)
        if template is None:
            return self._from_cache(data, client, key, end, edns, limit)
        if template.valid_until <= now:
            return None
        head = template.heads[_flags(data[2] & 1, edns)]
        tail = template.tails[edns]
        if end + len(tail) > limit:
            return None
        self.counters[template.counter] += 1
        return b"".join((data[:2], head, data[12:end], tail))

    def _from_cache(
        self, data: bytes, client: str, key: bytes, end: int, edns: int, limit: int
    ) -> bytes | None:
        """A forwarded answer still in the cache, for a client that may recurse."""
        cache = self.cache
        if cache is None or not self.may_recurse(client):
            return None
        body = cache.get(key, time.monotonic())
        if body is None or len(body) < end:
            return None
        flags = bytes(((body[2] & 0xFE) | (data[2] & 1), body[3]))
        if edns:
            counts = _one_more_additional(body[4:12], 6)
            response = b"".join((data[:2], flags, counts, data[12:end], body[end:], _OPT))
        else:
            response = b"".join((data[:2], flags, body[4:12], data[12:end], body[end:]))
        if len(response) > limit:
            return None
        self.counters["forwarded:cached"] += 1
        return response

    # --- the full path ------------------------------------------------------------------------

    def respond(self, data: bytes, client: str, tcp: bool) -> bytes | Forward | None:
        """The response to ``data`` from ``client``: bytes to send, a ``Forward`` to await,
        or None to drop (not a query, or too broken to answer)."""
        data = bytes(data)
        if _records_declared(data) > MAX_QUERY_RECORDS:
            return self._malformed("records", data, client)
        try:
            request = DNSRecord.parse(data)
        except _PARSE_ERRORS:
            self.counters["malformed"] += 1
            return _formerr(data)
        header = request.header
        if header.qr:
            self.counters["malformed"] += 1
            return None  # a response sent to a server: never answer it
        if header.opcode != 0:
            return self._error(request, RCODE.NOTIMP, "other")
        if len(request.questions) != 1 or request.rr or request.auth:
            return self._error(request, RCODE.FORMERR, "other")
        question = request.questions[0]
        if not name_fits(question.qname):
            return self._malformed("name", data, client)
        qtype = int(question.qtype)
        qclass = int(question.qclass)
        opt = [rr for rr in request.ar if rr.rtype == _TYPE_OPT]
        edns = bool(opt)
        limit = 0 if tcp else (max(512, int(opt[0].rclass)) if opt else 512)
        if opt and (opt[0].ttl >> 16) & 0xFF != 0:  # EDNS version other than 0
            return self._badvers(request)
        name = absolute(str(question.qname))
        if qclass not in (_CLASS_IN, _CLASS_ANY):
            return self._error(request, RCODE.REFUSED, _type_name(qtype))
        now = self.clock()
        answer = self.authority.answer(name, qtype, now)
        if answer is not None:
            reply = _build(request, answer, self.forwarder is not None)
            try:
                wire = bytes(reply.pack())  # without OPT: the response, and the template's source
            except DNSLabelError:  # a name of the answer that cannot be written
                return self._malformed("answer", data, client, RCODE.SERVFAIL)
            self.counters[f"{_type_name(qtype)}:{RCODE.get(answer.rcode)}"] += 1
            self._remember(data, wire, answer, qtype)
            return _finish(reply, edns, limit, wire)
        if self.forwarder is not None and self.may_recurse(client):
            return Forward(request, name, qtype, qclass, limit, edns)
        self.counters[f"{_type_name(qtype)}:REFUSED"] += 1
        return self._error(request, RCODE.REFUSED, None)

    async def forward(self, job: Forward) -> bytes:
        """Forward ``job`` (from ``respond``) and build the client's response."""
        assert self.forwarder is not None  # noqa: S101 (invariant: respond() forwards only with a forwarder)
        request = job.request
        body = await self.forwarder.resolve(
            job.name, job.qtype, job.qclass, rd=bool(request.header.rd), cd=False
        )
        type_name = _type_name(job.qtype)
        if body is None:
            self.counters[f"{type_name}:SERVFAIL"] += 1
            return self._error(request, RCODE.SERVFAIL, None, edns=job.edns, limit=job.limit)
        try:
            upstream = DNSRecord.parse(body)
        except _PARSE_ERRORS:
            self.counters[f"{type_name}:SERVFAIL"] += 1
            return self._error(request, RCODE.SERVFAIL, None, edns=job.edns, limit=job.limit)
        rcode = upstream.header.rcode
        self.counters[f"{type_name}:{RCODE.get(rcode, str(rcode))}:forwarded"] += 1
        reply = request.reply(ra=1, aa=0)
        reply.header.ad = 0
        reply.header.rcode = rcode
        reply.header.rd = request.header.rd
        for rr in upstream.rr:
            reply.add_answer(rr)
        for rr in upstream.auth:
            reply.add_auth(rr)
        for rr in upstream.ar:
            if rr.rtype != _TYPE_OPT:
                reply.add_ar(rr)
        try:
            return _finish(reply, job.edns, job.limit)
        except DNSLabelError:  # the upstream's answer holds a name that cannot be written
            self.counters[f"{type_name}:SERVFAIL"] += 1
            self._notice("upstream", "the upstream's answer holds a name too long to write")
            return self._error(request, RCODE.SERVFAIL, None, edns=job.edns, limit=job.limit)

    # --- helpers ------------------------------------------------------------------------------

    def _malformed(
        self, kind: str, data: bytes, client: str, rcode: int = RCODE.FORMERR
    ) -> bytes | None:
        """A bare error header for a query that cannot be answered (``kind``: what is wrong),
        counted as ``malformed:<kind>`` and logged at most once a minute per kind."""
        self.counters[f"malformed:{kind}"] += 1
        self._notice(kind, f"query from {client} refused ({_MALFORMED[kind]})")
        return header_only(data, rcode)

    def _notice(self, kind: str, message: str) -> None:
        """Log ``message`` at warning, at most once a minute for each ``kind``."""
        if self._log is not None and self._throttle.allow(kind, self.clock()):
            self._log.warning(
                "dns: %s; further ones are only counted for a minute",
                message,
                extra={"fields": {"kind": f"malformed:{kind}"}},
            )

    def _badvers(self, request: DNSRecord) -> bytes:
        reply = _build(request, Answer(RCODE.NOERROR), self.forwarder is not None)
        reply.add_ar(EDNS0(udp_len=UDP_PAYLOAD, ext_rcode=1))  # BADVERS = 16 = (1 << 4)
        self.counters["other:BADVERS"] += 1
        return bytes(reply.pack())

    def _error(
        self,
        request: DNSRecord,
        rcode: int,
        counter: str | None,
        *,
        edns: bool = False,
        limit: int = 512,
    ) -> bytes:
        if counter is not None:
            self.counters[f"{counter}:{RCODE.get(rcode)}"] += 1
        reply = request.reply(ra=int(self.forwarder is not None), aa=0)
        reply.header.ad = 0
        reply.header.rcode = rcode
        return _finish(reply, edns, limit)

    def _remember(self, data: bytes, wire: bytes, answer: Answer, qtype: int) -> None:
        """Keep ``wire`` (the response to ``data``, without OPT) as a template when the query
        could take the fast path next time."""
        if answer.valid_until <= self.clock() or len(data) < 17 or data[4:10] != _ONE_QUESTION:
            return
        end = data.find(b"\x00", 12) + 5
        if end < 17:
            return
        key = wire_key(data, end)
        if wire_key(wire, end) != key:  # dnslib wrote the question differently: no template
            return
        head = bytes((wire[2] & 0xFE,)) + wire[3:12]  # from the flags on, RD cleared
        rd_head = bytes((wire[2] | 1,)) + wire[3:12]
        tail = wire[end:]
        # ARCOUNT sits at offset 8 of these slices (they start at the message's byte 2).
        heads = (head, rd_head, _one_more_additional(head, 8), _one_more_additional(rd_head, 8))
        counter = f"{_type_name(qtype)}:{RCODE.get(answer.rcode)}"
        if len(self._memo) >= MEMO_MAX:
            self._memo = {}
        self._memo[key] = _Template(heads, (tail, tail + _OPT), answer.valid_until, counter)


_MALFORMED = {
    "records": f"more than {MAX_QUERY_RECORDS} records declared",
    "name": f"a label over {MAX_LABEL} bytes or a name over {MAX_NAME} bytes",
    "answer": "a name of the answer cannot be written",
}


def _records_declared(data: bytes) -> int:
    """The number of records the header of ``data`` declares in all four sections."""
    if len(data) < 12:
        return 0
    return sum(struct.unpack("!4H", data[4:12]))


def name_fits(name: DNSLabel) -> bool:
    """True when ``name`` can be written on the wire: labels of at most 63 bytes, 255 in all."""
    labels = name.label
    if any(len(label) > MAX_LABEL for label in labels):
        return False
    return sum(len(label) + 1 for label in labels) + 1 <= MAX_NAME


def _build(request: DNSRecord, answer: Answer, recursion: bool) -> DNSRecord:
    reply = request.reply(ra=int(recursion), aa=int(answer.authoritative))
    reply.header.ad = 0  # nothing here is DNSSEC-validated
    reply.header.rcode = answer.rcode
    reply.rr = list(answer.answers)
    reply.auth = list(answer.authority)
    reply.ar = list(answer.additional)
    return reply


def _one_more_additional(data: bytes, at: int) -> bytes:
    """``data`` with the 16-bit ARCOUNT found at offset ``at`` raised by one."""
    count = ((data[at] << 8) | data[at + 1]) + 1
    return data[:at] + struct.pack("!H", count) + data[at + 2 :]


def _finish(reply: DNSRecord, edns: bool, limit: int, wire: bytes | None = None) -> bytes:
    """The response (``wire``: ``reply`` already packed) with our OPT record when the client
    used EDNS; truncated when longer than ``limit`` (0: no limit)."""
    plain = bytes(reply.pack()) if wire is None else wire
    full = _one_more_additional(plain, 10) + _OPT if edns else plain
    if limit and len(full) > limit:
        return truncate(reply, edns)
    return full


def truncate(reply: DNSRecord, edns: bool) -> bytes:
    """The header and question only, with TC set: the client retries over TCP."""
    short = DNSRecord(DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap), q=reply.q)
    short.header.tc = 1
    if edns:
        short.add_ar(EDNS0(udp_len=UDP_PAYLOAD))
    return bytes(short.pack())


def _formerr(data: bytes) -> bytes | None:
    """FORMERR for a query whose header at least is readable; None (drop) otherwise."""
    return header_only(data, RCODE.FORMERR)


def header_only(data: bytes, rcode: int) -> bytes | None:
    """A bare response header (no sections) to the query ``data``; None if it is no query."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    flags = 0x80 | (data[2] & 0x79)  # QR, the opcode and RD of the query
    return data[:2] + bytes((flags, rcode)) + b"\x00" * 8


def _type_name(qtype: int) -> str:
    name = QTYPE.get(qtype, None)
    return str(name) if name is not None else f"TYPE{qtype}"
