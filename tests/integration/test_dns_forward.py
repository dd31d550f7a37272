"""The forwarder against fake upstream resolvers on 127.0.0.1: answers and caching, failover,
resting upstreams, recovery and its log lines, coalescing, source port and ID randomness,
spoofed replies, SERVFAIL, truncation and TCP, malformed replies, reload and shutdown.

Every socket here is on loopback; nothing is sent anywhere else."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, SOA, A, DNSRecord

from protocols.dns.cache import ResponseCache
from protocols.dns.forward import Forwarder, Upstream

LOOPBACK = "127.0.0.1"
TIMEOUT = 0.2
LOGGER = "bootstrapperd.dns.forward-test"


@dataclass
class Query:
    port: int  # the forwarder's source port
    ident: int
    qname: str
    rd: bool
    cd: bool
    edns_size: int | None


@dataclass
class FakeUpstream(asyncio.DatagramProtocol):
    """A resolver that answers A queries with ``address``, as ``mode`` says:
    answer | silent | wrong-first | servfail | refused | nxdomain | truncate | garbage."""

    address: str
    mode: str = "answer"
    delay: float = 0.0
    seen: list[Query] = field(default_factory=list)
    tcp_seen: list[Query] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    server: asyncio.Server | None = None

    @property
    def upstream(self) -> Upstream:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return (LOOPBACK, port)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = DNSRecord.parse(data)
        self.seen.append(record_of(query, addr[1]))
        assert self.transport is not None
        transport = self.transport
        replies = self.replies(query)
        loop = asyncio.get_running_loop()
        for delay, reply in replies:
            loop.call_later(self.delay + delay, transport.sendto, reply, addr)

    def replies(self, query: DNSRecord) -> list[tuple[float, bytes]]:
        mode = self.mode
        if mode == "silent":
            return []
        if mode == "garbage":
            return [(0, reply(query, self.address).pack()[: 12 + len(qsection(query)) + 3])]
        if mode in ("servfail", "refused"):
            rcode = RCODE.SERVFAIL if mode == "servfail" else RCODE.REFUSED
            return [(0, reply(query, None, rcode=rcode).pack())]
        if mode == "nxdomain":
            return [(0, reply(query, None, rcode=RCODE.NXDOMAIN, soa=True).pack())]
        if mode == "truncate":
            truncated = reply(query, None)
            truncated.header.tc = 1
            return [(0, truncated.pack())]
        good = reply(query, self.address).pack()
        if mode == "wrong-first":
            wrong_id = reply(query, "10.6.6.6")
            wrong_id.header.id = (query.header.id + 1) & 0xFFFF
            wrong_question = reply(query, "10.6.6.7")
            wrong_question.q.qname = "other.example."
            return [(0, wrong_id.pack()), (0.01, wrong_question.pack()), (0.05, good)]
        return [(0, good)]

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            length = int.from_bytes(await reader.readexactly(2), "big")
            query = DNSRecord.parse(await reader.readexactly(length))
            self.tcp_seen.append(record_of(query, writer.get_extra_info("peername")[1]))
            answer = reply(query, self.address)
            for last in range(2, 5):
                answer.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(f"10.0.1.{last}"), ttl=60))
            wire = answer.pack()
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
        finally:
            writer.close()


def record_of(query: DNSRecord, port: int) -> Query:
    edns = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
    return Query(
        port,
        query.header.id,
        str(query.q.qname),
        bool(query.header.rd),
        bool(query.header.cd),
        edns[0].rclass if edns else None,
    )


def qsection(query: DNSRecord) -> bytes:
    packed: bytes = query.pack()
    return packed[12:]


def reply(
    query: DNSRecord, address: str | None, *, rcode: int = RCODE.NOERROR, soa: bool = False
) -> DNSRecord:
    answer = query.reply()
    answer.header.rcode = rcode
    answer.header.aa = 0
    if address is not None:
        answer.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=60))
    if soa:
        rdata = SOA("ns.example.", "admin.example.", (1, 3600, 600, 86400, 30))
        answer.add_auth(RR("example.", QTYPE.SOA, rdata=rdata, ttl=60))
    answer.add_ar(EDNS0(udp_len=1232))
    return answer


@dataclass
class Lab:
    upstreams: list[FakeUpstream] = field(default_factory=list)
    forwarders: list[Forwarder] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    async def upstream(self, mode: str = "answer", *, tcp: bool = False) -> FakeUpstream:
        loop = asyncio.get_running_loop()
        fake = FakeUpstream(f"10.0.0.{len(self.upstreams) + 1}", mode)
        for _ in range(10):  # TCP on the same port number as UDP: retry if it is taken
            fake.transport, _ = await loop.create_datagram_endpoint(
                lambda: fake, local_addr=(LOOPBACK, 0)
            )
            if not tcp:
                break
            try:
                fake.server = await asyncio.start_server(fake.serve_tcp, LOOPBACK, fake.upstream[1])
                break
            except OSError:
                assert fake.transport is not None
                fake.transport.close()
        self.upstreams.append(fake)
        return fake

    def forwarder(self, *fakes: FakeUpstream, down_for: float = 5.0, **kw: Any) -> Forwarder:
        kw.setdefault("timeout", TIMEOUT)
        forwarder = Forwarder(
            [fake.upstream for fake in fakes],
            cache=ResponseCache(),
            counters=self.counters,
            logger=logging.getLogger(LOGGER),
            down_for=down_for,
            **kw,
        )
        self.forwarders.append(forwarder)
        return forwarder


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    lab = Lab()
    yield lab
    for forwarder in lab.forwarders:
        await forwarder.close()
    for fake in lab.upstreams:
        if fake.transport is not None:
            fake.transport.close()
        if fake.server is not None:
            fake.server.close()
            await fake.server.wait_closed()


def addresses(wire: bytes | None) -> list[str]:
    assert wire is not None
    return [str(rr.rdata) for rr in DNSRecord.parse(wire).rr]


async def timed(call: Awaitable[bytes | None]) -> tuple[bytes | None, float]:
    start = time.monotonic()
    result = await call
    return result, time.monotonic() - start


def log_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


# --- answers and the cache --------------------------------------------------------------------


async def test_answer_is_returned_without_opt_and_cached(lab: Lab) -> None:
    fake = await lab.upstream()
    forwarder = lab.forwarder(fake)
    wire = await forwarder.resolve("Host.Example.", QTYPE.A, 1)
    assert wire is not None
    record = DNSRecord.parse(wire)
    assert record.header.id == 0
    assert record.header.rcode == RCODE.NOERROR
    assert record.ar == []
    assert record.header.ar == 0
    assert addresses(wire) == ["10.0.0.1"]
    assert [(q.qname, q.rd, q.cd, q.edns_size) for q in fake.seen] == [
        ("Host.Example.", True, False, 1232)
    ]
    again = await forwarder.resolve("host.example", QTYPE.A, 1)
    assert again is not None
    assert addresses(again) == ["10.0.0.1"]
    assert len(fake.seen) == 1
    assert lab.counters["forwarded"] == 1
    assert lab.counters["cache_hits"] == 1


async def test_negative_answer_is_returned_and_cached(lab: Lab) -> None:
    fake = await lab.upstream("nxdomain")
    forwarder = lab.forwarder(fake)
    for _ in range(2):
        wire = await forwarder.resolve("missing.example.", QTYPE.A, 1)
        assert wire is not None
        assert DNSRecord.parse(wire).header.rcode == RCODE.NXDOMAIN
    assert len(fake.seen) == 1
    assert lab.counters["servfail"] == 0


async def test_cd_and_rd_reach_the_upstream_and_are_not_cached(lab: Lab) -> None:
    fake = await lab.upstream()
    forwarder = lab.forwarder(fake)
    assert await forwarder.resolve("a.example.", QTYPE.A, 1, rd=False, cd=True) is not None
    assert (fake.seen[0].rd, fake.seen[0].cd) == (False, True)
    assert await forwarder.resolve("a.example.", QTYPE.A, 1) is not None
    assert len(fake.seen) == 2


async def test_no_upstream_is_servfail(lab: Lab) -> None:
    forwarder = lab.forwarder()
    assert await forwarder.resolve("a.example.", QTYPE.A, 1) is None
    assert lab.counters["servfail"] == 1


# --- failover and resting upstreams -----------------------------------------------------------


async def test_failover_after_a_timeout_then_the_silent_one_is_skipped(lab: Lab) -> None:
    silent, good = await lab.upstream("silent"), await lab.upstream()
    forwarder = lab.forwarder(silent, good)
    wire, took = await timed(forwarder.resolve("one.example.", QTYPE.A, 1))
    assert addresses(wire) == ["10.0.0.2"]
    assert TIMEOUT * 0.9 <= took < TIMEOUT * 2
    assert lab.counters["upstream_timeouts"] == 1
    wire, took = await timed(forwarder.resolve("two.example.", QTYPE.A, 1))
    assert addresses(wire) == ["10.0.0.2"]
    assert took < TIMEOUT * 0.75  # no second timeout
    assert len(silent.seen) == 1
    assert len(good.seen) == 2


async def test_the_upstream_that_answered_last_is_asked_first(lab: Lab) -> None:
    first, second = await lab.upstream("servfail"), await lab.upstream()
    forwarder = lab.forwarder(first, second)
    assert addresses(await forwarder.resolve("one.example.", QTYPE.A, 1)) == ["10.0.0.2"]
    first.mode = "answer"
    assert addresses(await forwarder.resolve("two.example.", QTYPE.A, 1)) == ["10.0.0.2"]
    assert len(first.seen) == 1


async def test_all_down_is_none_within_a_timeout_each_then_one(lab: Lab) -> None:
    silent = [await lab.upstream("silent") for _ in range(3)]
    forwarder = lab.forwarder(*silent)
    wire, took = await timed(forwarder.resolve("one.example.", QTYPE.A, 1))
    assert wire is None
    assert TIMEOUT * 3 * 0.9 <= took < TIMEOUT * 3 + 0.3
    # All are resting now: they are still asked (at once), and the answer is quick.
    wire, took = await timed(forwarder.resolve("two.example.", QTYPE.A, 1))
    assert wire is None
    assert took < TIMEOUT * 2
    assert [len(fake.seen) for fake in silent] == [2, 2, 2]
    assert lab.counters["servfail"] == 2
    assert lab.counters["upstream_timeouts"] == 6


async def test_unreachable_upstream_fails_over_at_once(lab: Lab) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind((LOOPBACK, 0))
    dead: Upstream = (LOOPBACK, closed.getsockname()[1])
    closed.close()
    good = await lab.upstream()
    forwarder = lab.forwarder(good)
    forwarder.use([dead, good.upstream])
    wire, took = await timed(forwarder.resolve("one.example.", QTYPE.A, 1))
    assert addresses(wire) == ["10.0.0.1"]
    assert took < TIMEOUT
    assert lab.counters["upstream_errors"] == 1


async def test_one_warning_per_outage_and_one_line_on_recovery(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    fake = await lab.upstream("silent")
    forwarder = lab.forwarder(fake, down_for=0.1)
    for i in range(4):
        assert await forwarder.resolve(f"n{i}.example.", QTYPE.A, 1) is None
    warnings = log_lines(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert fake.upstream[1]
    assert "stopped answering" in warnings[0]
    fake.mode = "answer"
    for i in range(4):
        assert await forwarder.resolve(f"m{i}.example.", QTYPE.A, 1) is not None
    assert len(log_lines(caplog, logging.INFO)) == 1
    assert "answering again" in log_lines(caplog, logging.INFO)[0]
    fake.mode = "silent"
    await forwarder.resolve("x.example.", QTYPE.A, 1)
    assert len(log_lines(caplog, logging.WARNING)) == 2  # a second outage, a second line
    assert [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.DEBUG] == []


async def test_servfail_and_refused_fail_over_without_resting(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    servfail, refused, good = (
        await lab.upstream("servfail"),
        await lab.upstream("refused"),
        await lab.upstream(),
    )
    forwarder = lab.forwarder(servfail, refused, good)
    assert addresses(await forwarder.resolve("one.example.", QTYPE.A, 1)) == ["10.0.0.3"]
    assert lab.counters["upstream_errors"] == 2
    only_bad = lab.forwarder(servfail, refused)
    assert await only_bad.resolve("two.example.", QTYPE.A, 1) is None
    assert await only_bad.resolve("three.example.", QTYPE.A, 1) is None
    assert len(servfail.seen) == 3
    assert len(refused.seen) == 3
    assert log_lines(caplog, logging.WARNING) == []


# --- one query for many, and what a spoofer has to guess -------------------------------------


async def test_identical_concurrent_lookups_share_one_query(lab: Lab) -> None:
    fake = await lab.upstream()
    fake.delay = 0.05
    forwarder = lab.forwarder(fake)
    answers = await asyncio.gather(
        *(forwarder.resolve("same.example.", QTYPE.A, 1) for _ in range(10))
    )
    assert len(set(answers)) == 1
    assert answers[0] is not None
    assert len(fake.seen) == 1
    assert lab.counters["coalesced"] == 9
    assert lab.counters["forwarded"] == 1


async def test_one_waiter_cancelled_does_not_cancel_the_others(lab: Lab) -> None:
    fake = await lab.upstream()
    fake.delay = 0.05
    forwarder = lab.forwarder(fake)
    first = asyncio.ensure_future(forwarder.resolve("same.example.", QTYPE.A, 1))
    second = asyncio.ensure_future(forwarder.resolve("same.example.", QTYPE.A, 1))
    await asyncio.sleep(0.01)
    first.cancel()
    assert addresses(await second) == ["10.0.0.1"]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_source_ports_and_ids_are_random(lab: Lab) -> None:
    fake = await lab.upstream()
    forwarder = lab.forwarder(fake)
    for i in range(8):
        assert await forwarder.resolve(f"n{i}.example.", QTYPE.A, 1) is not None
    ports = {q.port for q in fake.seen}
    ids = {q.ident for q in fake.seen}
    assert len(ports) >= 7
    assert len(ids) >= 7
    assert max(ports) - min(ports) > 8  # not handed out one after the other


async def test_replies_with_the_wrong_id_or_question_are_ignored(lab: Lab) -> None:
    fake = await lab.upstream("wrong-first")
    forwarder = lab.forwarder(fake)
    assert addresses(await forwarder.resolve("one.example.", QTYPE.A, 1)) == ["10.0.0.1"]
    assert lab.counters["upstream_mismatched"] == 2


async def test_truncated_answer_is_asked_again_over_tcp(lab: Lab) -> None:
    fake = await lab.upstream("truncate", tcp=True)
    forwarder = lab.forwarder(fake)
    wire = await forwarder.resolve("big.example.", QTYPE.A, 1)
    assert addresses(wire) == ["10.0.0.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"]
    assert wire is not None
    assert DNSRecord.parse(wire).header.tc == 0
    assert len(fake.seen) == 1
    assert len(fake.tcp_seen) == 1
    assert fake.tcp_seen[0].ident == fake.seen[0].ident
    assert await forwarder.resolve("big.example.", QTYPE.A, 1) == wire  # cached
    assert len(fake.tcp_seen) == 1


async def test_truncated_answer_without_tcp_fails_over(lab: Lab) -> None:
    truncating, good = await lab.upstream("truncate"), await lab.upstream()
    forwarder = lab.forwarder(truncating, good)
    assert addresses(await forwarder.resolve("big.example.", QTYPE.A, 1)) == ["10.0.0.2"]
    assert lab.counters["upstream_errors"] == 1


async def test_malformed_reply_is_counted_not_raised(lab: Lab) -> None:
    garbage, good = await lab.upstream("garbage"), await lab.upstream()
    forwarder = lab.forwarder(garbage)
    assert await forwarder.resolve("one.example.", QTYPE.A, 1) is None
    assert lab.counters["upstream_errors"] == 1
    forwarder.use([garbage.upstream, good.upstream])
    assert addresses(await forwarder.resolve("two.example.", QTYPE.A, 1)) == ["10.0.0.2"]


# --- reload and shutdown ----------------------------------------------------------------------


async def test_use_replaces_the_upstreams(lab: Lab) -> None:
    old, new = await lab.upstream(), await lab.upstream()
    forwarder = lab.forwarder(old)
    assert addresses(await forwarder.resolve("one.example.", QTYPE.A, 1)) == ["10.0.0.1"]
    forwarder.use([new.upstream])
    assert forwarder.upstreams == (new.upstream,)
    assert addresses(await forwarder.resolve("two.example.", QTYPE.A, 1)) == ["10.0.0.2"]
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        forwarder.use([("resolver.example", 53)])
    assert forwarder.upstreams == (new.upstream,)


async def test_close_cancels_lookups_in_flight(lab: Lab) -> None:
    fake = await lab.upstream("silent")
    forwarder = lab.forwarder(fake, timeout=5.0)
    pending: list[asyncio.Future[bytes | None]] = [
        asyncio.ensure_future(forwarder.resolve(f"n{i % 2}.example.", QTYPE.A, 1)) for i in range(4)
    ]
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await forwarder.close()
    assert await asyncio.gather(*pending) == [None] * 4
    assert time.monotonic() - start < 0.5
    assert await forwarder.resolve("later.example.", QTYPE.A, 1) is None
