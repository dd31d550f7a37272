"""The forwarder's response cache: keys, TTL ageing, OPT removal, what is (not) cached, eviction,
and the message walker on malformed input."""

from __future__ import annotations

from collections.abc import Callable

import dnslib
import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord

from protocols.dns.cache import (
    ResponseCache,
    encode_question,
    parse_response,
    question_key,
    wire_key,
)
from protocols.errors import MalformedPacket

NAME = "host.Example.org."
KEY = question_key(NAME, QTYPE.A, 1)
T0 = 1000.0


def response(
    name: str = NAME,
    *,
    ttl: int = 60,
    extra_ttl: int = 300,
    rcode: int = RCODE.NOERROR,
    answers: bool = True,
    soa: tuple[int, int] | None = None,  # (SOA TTL, SOA MINIMUM)
    edns: bool = True,
    tc: bool = False,
    ident: int = 4321,
) -> bytes:
    record = DNSRecord(
        DNSHeader(id=ident, qr=1, ra=1, rd=1, rcode=rcode, tc=int(tc)),
        q=DNSQuestion(name, QTYPE.A),
    )
    if answers:
        record.add_answer(RR(name, QTYPE.A, rdata=A("10.0.0.1"), ttl=ttl))
        record.add_answer(RR(name, QTYPE.A, rdata=A("10.0.0.2"), ttl=ttl + 10))
        record.add_auth(RR("Example.org.", QTYPE.NS, rdata=dnslib.NS("ns.example.org."), ttl=ttl))
        record.add_ar(RR("ns.example.org.", QTYPE.A, rdata=A("10.0.0.53"), ttl=extra_ttl))
    if soa is not None:
        soa_ttl, minimum = soa
        rdata = SOA("ns.example.org.", "admin.example.org.", (1, 3600, 600, 86400, minimum))
        record.add_auth(RR("example.org.", QTYPE.SOA, rdata=rdata, ttl=soa_ttl))
    if edns:
        record.add_ar(EDNS0(udp_len=1232))
    packed: bytes = record.pack()
    return packed


def ttls(wire: bytes) -> list[int]:
    record = DNSRecord.parse(wire)
    return [rr.ttl for rr in [*record.rr, *record.auth, *record.ar]]


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "qname", ["host.example.org", "host.example.org.", "HOST.Example.ORG", "Host.EXAMPLE.org."]
)
def test_key_is_the_lower_cased_question_section(qname: str) -> None:
    query = DNSRecord.question("Host.Example.Org.", "A").pack()
    assert question_key(qname, QTYPE.A, 1) == query[12:].lower()
    assert question_key(qname, QTYPE.A, 1) == b"\x04host\x07example\x03org\x00\x00\x01\x00\x01"


def test_key_folds_the_name_only_as_the_endpoint_does() -> None:
    # Only the name is case-folded: HTTPS (65 = 0x0041) must not become type 97 (0x0061).
    query = DNSRecord.question("A.b", "HTTPS").pack()
    assert (
        question_key("a.B", 65, 1)
        == wire_key(query, len(query))
        == b"\x01a\x01b\x00\x00\x41\x00\x01"
    )
    assert question_key("a.b", 97, 1) != question_key("a.b", 65, 1)
    assert encode_question("A.b", 65, 1) == b"\x01A\x01b\x00\x00\x41\x00\x01"


def test_key_root_and_escapes() -> None:
    assert question_key(".", QTYPE.NS, 1) == b"\x00\x00\x02\x00\x01"
    assert question_key("", QTYPE.NS, 1) == b"\x00\x00\x02\x00\x01"
    assert encode_question("a\\032b.c\\.d.", 1, 1) == b"\x03a b\x03c.d\x00\x00\x01\x00\x01"
    # dnslib renders a non-printable byte as \DDD; the key reads it back
    name = str(DNSRecord.parse(DNSRecord.question("x\\001y.z", "A").pack()).q.qname)
    assert encode_question(name, 1, 1) == b"\x03x\x01y\x01z\x00\x00\x01\x00\x01"


@pytest.mark.parametrize("bad", ["a..b", "x" * 64 + ".org", ".".join(["abcdefg"] * 40), "é€.x"])
def test_key_rejects_what_is_not_a_name(bad: str) -> None:
    with pytest.raises(ValueError, match=r"label of|is not a byte|name longer than 255 bytes"):
        question_key(bad, 1, 1)


# --- ageing -----------------------------------------------------------------------------------


def test_ttls_fall_by_whole_seconds_until_expiry() -> None:
    cache = ResponseCache()
    cache.put(KEY, response(ttl=60, extra_ttl=300), T0)
    assert len(cache) == 1
    expected = {0.0: 0, 0.5: 0, 1.2: 1, 59.0: 59, 59.99: 59}
    for offset, elapsed in expected.items():
        wire = cache.get(KEY, T0 + offset)
        assert wire is not None
        assert ttls(wire) == [60 - elapsed, 70 - elapsed, 60 - elapsed, 300 - elapsed]
    assert cache.get(KEY, T0 + 60) is None
    assert len(cache) == 0


def test_ttls_are_rewritten_once_per_second() -> None:
    cache = ResponseCache()
    cache.put(KEY, response(), T0)
    first = cache.get(KEY, T0 + 2.1)
    assert cache.get(KEY, T0 + 2.9) is first
    assert cache.get(KEY, T0 + 3.0) is not first


def test_returned_message_matches_what_dnslib_reads() -> None:
    original = DNSRecord.parse(response(ident=999))
    cache = ResponseCache()
    cache.put(KEY, response(ident=999), T0)
    wire = cache.get(KEY, T0 + 5.5)
    assert wire is not None
    got = DNSRecord.parse(wire)
    assert got.header.id == 0
    assert got.header.rcode == RCODE.NOERROR
    assert got.header.ra == 1
    assert got.header.qr == 1
    assert got.questions == original.questions
    assert got.header.a == 2
    assert got.header.auth == 1
    assert got.header.ar == 1
    sections = [(got.rr, original.rr), (got.auth, original.auth), (got.ar, original.ar[:1])]
    for mine, theirs in sections:
        assert [(r.rname, r.rtype, r.rclass, r.rdata) for r in mine] == [
            (r.rname, r.rtype, r.rclass, r.rdata) for r in theirs
        ]
        assert [r.ttl for r in mine] == [r.ttl - 5 for r in theirs]


def test_opt_is_stripped_and_arcount_fixed() -> None:
    parsed = parse_response(response(edns=True))
    assert parsed.wire == parse_response(response(edns=False)).wire
    record = DNSRecord.parse(parsed.wire)
    assert record.header.ar == 1
    assert all(rr.rtype != QTYPE.OPT for rr in record.ar)
    assert parsed.wire[:2] == b"\0\0"


def test_opt_before_other_additional_records_is_removed_too() -> None:
    record = DNSRecord.parse(response(edns=False))
    record.ar = [EDNS0(udp_len=4096), *record.ar]
    record.add_ar(RR("ns2.example.org.", QTYPE.A, rdata=A("10.0.0.54"), ttl=300))
    parsed = parse_response(record.pack())
    got = DNSRecord.parse(parsed.wire)
    assert [str(rr.rname) for rr in got.ar] == ["ns.example.org.", "ns2.example.org."]
    assert got.header.id == 0
    assert len(parsed.ttls) == 5


def test_ttls_are_capped_at_max_ttl() -> None:
    cache = ResponseCache(max_ttl=100)
    cache.put(KEY, response(ttl=50, extra_ttl=1000), T0)
    wire = cache.get(KEY, T0 + 10)
    assert wire is not None
    assert ttls(wire) == [40, 50, 40, 90]


# --- what is cached ---------------------------------------------------------------------------


def test_nxdomain_is_cached_for_the_soa_negative_ttl() -> None:
    cache = ResponseCache(negative_ttl_cap=300)
    cache.put(KEY, response(rcode=RCODE.NXDOMAIN, answers=False, soa=(900, 120)), T0)
    wire = cache.get(KEY, T0 + 20.5)
    assert wire is not None
    record = DNSRecord.parse(wire)
    assert record.header.rcode == RCODE.NXDOMAIN
    assert [(rr.rtype, rr.ttl) for rr in record.auth] == [(QTYPE.SOA, 100)]  # min(900, 120) - 20
    assert cache.get(KEY, T0 + 119.9) is not None
    assert cache.get(KEY, T0 + 120) is None


@pytest.mark.parametrize(
    ("soa", "lifetime"), [((60, 600), 60), ((3600, 3600), 300), ((30, 10), 10)]
)
def test_nodata_is_cached_capped(soa: tuple[int, int], lifetime: int) -> None:
    cache = ResponseCache(negative_ttl_cap=300)
    cache.put(KEY, response(answers=False, soa=soa), T0)
    wire = cache.get(KEY, T0)
    assert wire is not None
    assert ttls(wire) == [lifetime]
    assert cache.get(KEY, T0 + lifetime - 0.01) is not None
    assert cache.get(KEY, T0 + lifetime) is None


@pytest.mark.parametrize(
    "wire",
    [
        response(rcode=RCODE.SERVFAIL, answers=False),
        response(rcode=RCODE.REFUSED, answers=False),
        response(rcode=RCODE.FORMERR, answers=False),
        response(rcode=RCODE.SERVFAIL),
        response(tc=True),
        response(ttl=0),
        response(extra_ttl=0),
        response(ttl=0x80000000),  # top bit set: 0 (RFC 2181)
        response(rcode=RCODE.NXDOMAIN, answers=False),  # no SOA
        response(answers=False),  # NODATA without SOA
        response(rcode=RCODE.NXDOMAIN, answers=False, soa=(0, 300)),
        DNSRecord.question(NAME, "A").pack(),  # a query, not a response
        b"\x12\x34",
        response()[:-1],
    ],
)
def test_not_cached(wire: bytes) -> None:
    cache = ResponseCache()
    cache.put(KEY, wire, T0)
    assert len(cache) == 0
    assert cache.get(KEY, T0) is None


def test_answer_to_another_question_is_not_cached() -> None:
    cache = ResponseCache()
    cache.put(question_key("other.example.org", QTYPE.A, 1), response(), T0)
    cache.put(question_key(NAME, QTYPE.AAAA, 1), response(), T0)
    assert len(cache) == 0


def test_the_oldest_is_evicted_when_full() -> None:
    cache = ResponseCache(max_entries=3)
    names = [f"h{i}.example.org." for i in range(5)]
    for i, name in enumerate(names[:3]):
        cache.put(question_key(name, QTYPE.A, 1), response(name), T0 + i)
    cache.put(question_key(names[0], QTYPE.A, 1), response(names[0]), T0 + 3)  # now the newest
    cache.put(question_key(names[3], QTYPE.A, 1), response(names[3]), T0 + 4)
    assert len(cache) == 3
    present = [cache.get(question_key(n, QTYPE.A, 1), T0 + 5) is not None for n in names]
    assert present == [True, False, True, True, False]


def test_a_new_answer_replaces_the_old_one() -> None:
    cache = ResponseCache()
    cache.put(KEY, response(ttl=60), T0)
    cache.put(KEY, response(ttl=10), T0 + 30)
    wire = cache.get(KEY, T0 + 31)
    assert wire is not None
    assert ttls(wire)[0] == 9
    assert len(cache) == 1


def test_disabled_cache_keeps_nothing() -> None:
    cache = ResponseCache(max_entries=0)
    cache.put(KEY, response(), T0)
    assert len(cache) == 0


# --- the walker -------------------------------------------------------------------------------


def test_every_truncation_is_malformed() -> None:
    wire = response(soa=(60, 60))
    for cut in range(len(wire)):
        with pytest.raises(MalformedPacket):
            parse_response(wire[:cut])


def test_trailing_bytes_are_dropped() -> None:
    assert parse_response(response() + b"junk").wire == parse_response(response()).wire


@pytest.mark.parametrize(
    "damage",
    [
        lambda w: w[:12] + b"\x80" + w[13:],  # label type 0b10
        lambda w: w[:12] + b"\x3f" * 8 + w[20:],  # labels running past the end
        lambda w: w[:11] + b"\x03" + w[12:],  # ARCOUNT claims a record that is not there
    ],
)
def test_damaged_messages_are_malformed(damage: Callable[[bytes], bytes]) -> None:
    with pytest.raises(MalformedPacket):
        parse_response(damage(response()))


def test_two_opt_records_are_malformed() -> None:
    record = DNSRecord.parse(response(edns=False))
    record.add_ar(EDNS0())
    record.add_ar(EDNS0())
    with pytest.raises(MalformedPacket):
        parse_response(record.pack())
