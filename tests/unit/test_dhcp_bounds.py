"""The DHCP server's bounds against hostile input, without sockets: Ethernet addresses that are
not 6 bytes, option 57 below 576, replies the kernel cannot take now (EAGAIN), first contact
from unknown MACs rate-limited (listed nodes never), and offers that expire after OFFER_HOLD."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootstrapperd.dhcp.backend import (
    NEW_UNKNOWN_BURST,
    NEW_UNKNOWN_PER_SECOND,
    OFFER_HOLD,
    RECENT_UNKNOWN,
    ModelBackend,
)
from bootstrapperd.machines.leases import LeaseStore
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.model import load_cluster_text
from protocols.dhcp.endpoint import SEND_QUEUE_MAX, DHCPEndpoint
from protocols.dhcp.options import MessageType, Opt
from protocols.dhcp.packet import ethernet_ok, parse, reply_size, serialize
from protocols.dhcp.ratelimit import FirstContactLimiter
from protocols.dhcp.server import Destination, DHCPServer, Outcome
from protocols.udp import SO_RXQ_OVFL, DropWatch
from tests.conftest import EXAMPLE
from tests.dhcp_requests import request

SERVER = IPv4Address("10.77.0.1")
MASTER = "52:54:00:77:00:10"  # listed in the example (static 10.77.0.10)
T0 = 1_800_000_000.0


def stranger(n: int) -> str:
    """The n-th MAC the example does not list."""
    return "02:00:" + n.to_bytes(4, "big").hex(":")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    database = StateDB(tmp_path / "state" / "bootstrapperd.db")
    yield database
    database.close()


def backend(db: StateDB, tmp_path: Path, clock: Clock) -> ModelBackend:
    model = load_cluster_text(EXAMPLE.read_text())
    return ModelBackend(model, LeaseStore(db), SERVER, 80, tmp_path, Counter(), clock=clock)


# ---- finding 1: htype 1 with hlen != 6


def raw(htype: int, hlen: int) -> bytes:
    header = struct.pack(
        "!BBBBIHH16s16s64s128s", 1, htype, hlen, 0, 7, 0, 0, b"", b"\x02" * 16, b"", b""
    )
    return header + bytes.fromhex("63825363") + b"\x35\x01\x01\xff"


@pytest.mark.parametrize(("htype", "hlen", "ok"), [(1, 6, True), (1, 0, False), (1, 5, False),
                                                    (1, 7, False), (1, 16, False),
                                                    (32, 0, True), (6, 6, True)])  # fmt: skip
def test_only_six_byte_ethernet_addresses_pass(htype: int, hlen: int, ok: bool) -> None:
    assert ethernet_ok(parse(raw(htype, hlen))) is ok


class Recorder:
    """Stands in for DHCPServer: remembers the MACs it was asked about, answers nothing."""

    def __init__(self) -> None:
        self.macs: list[str] = []

    def handle(self, packet: object, now: float, port: int = 67, source: object = None) -> None:
        self.macs.append(packet.mac)  # type: ignore[attr-defined]


class FullSocket:
    """A socket stand-in whose send buffer is full while ``full`` is set (EAGAIN)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.full = False
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def fileno(self) -> int:
        return self.fd

    def sendto(self, data: bytes, target: tuple[str, int]) -> int:
        if self.full:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.sent.append((data, target))
        return len(data)

    def close(self) -> None:
        return None


def endpoint(sock: FullSocket, server: object, counters: Counter[str]) -> DHCPEndpoint:
    async def flush() -> None:
        return None

    return DHCPEndpoint(
        server,  # type: ignore[arg-type]
        sock,  # type: ignore[arg-type]
        interface="lo",
        port=67,
        flush=flush,
        observe=lambda outcome, packet: None,
        counters=counters,
        logger=logging.getLogger("test.dhcp"),
    )


def test_short_ethernet_address_is_malformed_and_never_reaches_the_server() -> None:
    recorder = Recorder()
    counters: Counter[str] = Counter()
    point = endpoint(FullSocket(-1), recorder, counters)
    point._datagram(raw(1, 4), ("0.0.0.0", 68))
    point._datagram(raw(1, 6), ("0.0.0.0", 68))
    assert counters["malformed"] == 1
    assert recorder.macs == ["02:02:02:02:02:02"]


# ---- finding 2: option 57 below 576 is clamped


@pytest.mark.parametrize(
    ("option", "size"),
    [(None, 576), (b"\x00\x00", 576), (b"\x01\x2c", 576), (b"\x02\x3f", 576),
     (b"\x02\x40", 576), (b"\x05\xc0", 1472), (b"\x05", 576)],
)  # fmt: skip
def test_reply_size_clamps_option_57(option: bytes | None, size: int) -> None:
    packet = request(MessageType.DISCOVER, MASTER, extra={} if option is None else {57: option})
    assert reply_size(packet) == size


def test_client_asking_300_bytes_gets_its_offer(db: StateDB, tmp_path: Path) -> None:
    sock = FullSocket(-1)
    counters: Counter[str] = Counter()
    server = DHCPServer(backend(db, tmp_path, Clock()))
    point = endpoint(sock, server, counters)
    wire = serialize(request(MessageType.DISCOVER, MASTER, broadcast=True, extra={57: b"\x01\x2c"}))
    point._datagram(wire, ("0.0.0.0", 68))
    assert counters["out_offer"] == 1
    assert counters["errors"] == 0
    assert len(sock.sent) == 1
    assert len(sock.sent[0][0]) <= 576 - 28
    offer = parse(sock.sent[0][0])
    assert offer.options[Opt.MESSAGE_TYPE] == bytes((MessageType.OFFER,))


# ---- finding 3: EAGAIN waits for the socket to be writable, within a bound


async def test_replies_wait_for_a_writable_socket_then_go_out_in_order() -> None:
    read_end, write_end = os.pipe()  # always writable: the loop calls the writer at once
    try:
        sock = FullSocket(write_end)
        counters: Counter[str] = Counter()
        point = endpoint(sock, Recorder(), counters)
        point.start()
        sock.full = True
        targets = [(f"10.77.0.{n}", 68) for n in range(1, 4)]
        for n, (address, port) in enumerate(targets):
            point._send_now(bytes([n]), (address, port))
        assert (counters["send_waited"], sock.sent) == (3, [])
        sock.full = False
        point._send(b"\x09", _destination("10.77.0.9"))  # queued behind the others, not ahead
        for _ in range(10):
            await asyncio.sleep(0)
        assert [data for data, _ in sock.sent] == [b"\x00", b"\x01", b"\x02", b"\x09"]
        assert counters["send_errors"] == 0
        assert not point._writer
        await point.close()
    finally:
        os.close(read_end)
        os.close(write_end)


def _destination(address: str) -> Destination:
    return Destination(IPv4Address(address), 68)


async def test_send_queue_is_bounded_and_overflow_is_counted() -> None:
    read_end, write_end = os.pipe()
    try:
        sock = FullSocket(write_end)
        counters: Counter[str] = Counter()
        point = endpoint(sock, Recorder(), counters)
        point.start()
        sock.full = True
        for n in range(SEND_QUEUE_MAX + 5):
            point._send_now(n.to_bytes(4, "big"), ("10.77.0.9", 68))
        assert counters["send_waited"] == SEND_QUEUE_MAX
        assert counters["send_queue_full"] == 5
        sock.full = False
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(sock.sent) == SEND_QUEUE_MAX
        await point.close()
    finally:
        os.close(read_end)
        os.close(write_end)


# ---- finding 4: first contact from unknown MACs is rate-limited


def test_limiter_spends_a_token_per_new_key_and_refills() -> None:
    limiter = FirstContactLimiter(rate=2.0, burst=3, table_size=100, remember=600.0)
    assert [limiter.allow(k, T0) for k in "abcd"] == [True, True, True, False]
    assert limiter.allow("a", T0)  # seen recently: free
    assert limiter.allow("e", T0 + 0.5)  # one token back after half a second
    assert not limiter.allow("f", T0 + 0.5)


def test_limiter_forgets_after_remember_and_then_charges_again() -> None:
    limiter = FirstContactLimiter(rate=0.0, burst=1, table_size=100, remember=600.0)
    assert limiter.allow("a", T0)
    assert not limiter.allow("b", T0)
    assert limiter.allow("a", T0 + 599)  # still remembered: free
    assert not limiter.allow("a", T0 + 1200)  # forgotten, so it pays: no token left, refused


def test_limiter_table_is_bounded() -> None:
    limiter = FirstContactLimiter(rate=1e9, burst=10**9, table_size=16, remember=600.0)
    for n in range(1000):
        assert limiter.allow(str(n), T0 + n * 1e-6)
    assert len(limiter) == 16


def test_unknown_macs_beyond_the_burst_are_not_admitted_and_counted(
    db: StateDB, tmp_path: Path
) -> None:
    clock = Clock()
    policy = backend(db, tmp_path, clock)
    server = DHCPServer(policy)
    outcomes = [
        server.handle(request(MessageType.DISCOVER, stranger(n)), T0)
        for n in range(NEW_UNKNOWN_BURST + 20)
    ]
    offered = [o for o in outcomes if o is not None and o.reply_type is MessageType.OFFER]
    assert len(offered) == NEW_UNKNOWN_BURST
    assert outcomes[NEW_UNKNOWN_BURST:] == [None] * 20  # no outcome: no log, no timeline event
    assert policy.counters["unknown_rate_limited"] == 20
    assert policy.counters["pool_exhausted"] == 0
    # A MAC let in is still served while the bucket is empty (its REQUEST follows its OFFER).
    assert policy.admit(request(MessageType.REQUEST, stranger(0))) is True
    # A listed node is never limited.
    for _ in range(100):
        assert policy.admit(request(MessageType.DISCOVER, MASTER)) is True
    # Tokens come back with time.
    clock.now += 1 / NEW_UNKNOWN_PER_SECOND
    assert policy.admit(request(MessageType.DISCOVER, stranger(10_000))) is True


def test_recently_seen_table_is_bounded(db: StateDB, tmp_path: Path) -> None:
    clock = Clock()
    policy = backend(db, tmp_path, clock)
    for n in range(RECENT_UNKNOWN + 50):
        clock.now += 1.0  # tokens enough for every one
        assert policy.admit(request(MessageType.DISCOVER, stranger(n)))
    assert len(policy._first_contact) == RECENT_UNKNOWN


def test_offers_never_requested_free_their_addresses_after_offer_hold(
    db: StateDB, tmp_path: Path
) -> None:
    clock = Clock()
    policy = backend(db, tmp_path, clock)
    policy._first_contact = FirstContactLimiter(1e9, 10**9, 10**6, 600.0)  # no rate limit here
    server = DHCPServer(policy)
    pool = policy.model.pool_free_size
    n = 0
    offered: set[IPv4Address] = set()
    while len(offered) < pool:  # fill the pool with offers nobody requests
        clock.now += 0.01
        outcome = server.handle(request(MessageType.DISCOVER, stranger(n)), clock.now)
        n += 1
        assert isinstance(outcome, Outcome)
        assert outcome.address is not None
        offered.add(outcome.address)
    clock.now += 0.01
    late = server.handle(request(MessageType.DISCOVER, stranger(n)), clock.now)
    assert late is not None
    assert late.reply is None
    clock.now += OFFER_HOLD + 1.0
    for k in range(pool):  # ...until OFFER_HOLD has passed: then every address is free again
        outcome = server.handle(request(MessageType.DISCOVER, stranger(n + 1 + k)), clock.now)
        assert outcome is not None
        assert outcome.address in offered


# ---- receive-buffer drops reported by the kernel (SO_RXQ_OVFL)


def test_kernel_drops_are_counted_and_warned_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters: Counter[str] = Counter()
    watch = DropWatch(counters, logging.getLogger("test.dhcp"), "dhcp lo:67")

    def drops(n: int) -> list[tuple[int, int, bytes]]:
        return [(socket.SOL_SOCKET, SO_RXQ_OVFL, struct.pack("=I", n))]

    with caplog.at_level(logging.WARNING, logger="test.dhcp"):
        watch.update([])
        watch.update(drops(5))
        watch.update(drops(3))  # another socket's smaller count: never goes back
        watch.update(drops(9))
    assert counters["receive_buffer_drops"] == 9
    assert len(caplog.records) == 1
    assert "5 datagrams dropped" in caplog.records[0].getMessage()
