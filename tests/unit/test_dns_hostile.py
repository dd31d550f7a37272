"""Hostile DNS input without sockets: names that cannot be written (labels over 63 bytes, names
over 255), a message of pointer chains deep enough to break the parser, each answered FORMERR,
counted, and logged at most once a minute; and the TCP connection table's bounds (a cap per
source and in total, the oldest idle connection evicted for a newcomer, busy ones never)."""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord

from bootstrapperd.dns.records import LeaseHosts, build_authority
from bootstrapperd.machines.leases import LeaseStore
from bootstrapperd.machines.resolver import Resolver as MachineResolver
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.model.holder import ModelHolder
from protocols.dns.server import MAX_QUERY_RECORDS, Resolver
from protocols.dns.tcp import TCPTable
from protocols.throttle import LogThrottle
from tests.conftest import EXAMPLE

CLIENT = "10.77.0.10"
HEADER = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)  # id, RD, one question
A_IN = b"\x00\x01\x00\x01"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counters() -> Counter[str]:
    return Counter()


@pytest.fixture
def resolver(tmp_path: Path, clock: Clock, counters: Counter[str]) -> Iterator[Resolver]:
    holder = ModelHolder.load(EXAMPLE)
    db = StateDB(tmp_path / "state.db")
    hosts = LeaseHosts(MachineResolver(lambda: holder.model, LeaseStore(db)))
    yield Resolver(
        build_authority(holder.model, hosts, serial=7),
        None,
        may_recurse=lambda client: True,
        counters=counters,
        clock=clock,
        logger=logging.getLogger("bootstrapperd.dns"),
    )
    db.close()


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def assert_formerr(response: bytes | object) -> None:
    assert isinstance(response, bytes)
    assert response[:2] == b"\x12\x34"  # the query's ID
    assert response[2] & 0x80  # a response
    assert response[3] & 0x0F == RCODE.FORMERR


# A label of 64 to 191 bytes: its length octet is no pointer, so the parser reads it whole.
LONG_LABEL = wire_name(b"a" * 64, b"cluster", b"example")
MAX_LABEL_190 = wire_name(b"b" * 190)
# Five labels of 63 bytes: 321 bytes on the wire, over the 255 a name may have.
LONG_NAME = wire_name(*[b"c" * 63] * 5)


@pytest.mark.parametrize("name", [LONG_LABEL, MAX_LABEL_190, LONG_NAME])
@pytest.mark.parametrize("tcp", [False, True])
def test_names_that_cannot_be_written_get_formerr(
    resolver: Resolver, counters: Counter[str], name: bytes, tcp: bool
) -> None:
    response = resolver.respond(HEADER + name + A_IN, CLIENT, tcp=tcp)
    assert_formerr(response)
    assert counters["malformed:name"] == 1
    assert counters["internal_errors"] == 0


def test_longest_writable_name_is_still_answered(resolver: Resolver) -> None:
    # 63 + 63 + 63 + 61 bytes of labels: 255 on the wire, the longest name there is.
    name = wire_name(b"d" * 63, b"d" * 63, b"d" * 63, b"d" * 61)
    assert len(name) == 255
    response = resolver.respond(HEADER + name + A_IN, CLIENT, tcp=False)
    assert isinstance(response, bytes)
    assert DNSRecord.parse(response).header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN, RCODE.REFUSED)


def pointer_chain(count: int) -> bytes:
    """A query of ``count`` questions, each name a pointer to the name before it."""
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, count, 0, 0, 0)
    body = b"\x00" + A_IN
    previous = 12
    for _ in range(count - 1):
        here = 12 + len(body)
        body += struct.pack("!H", 0xC000 | previous) + A_IN
        previous = here
    return header + body


def test_pointer_chains_get_formerr_without_parsing(
    resolver: Resolver, counters: Counter[str]
) -> None:
    # 10,000 questions fit in one TCP message; parsed, the chain recurses past Python's limit.
    response = resolver.respond(pointer_chain(10_000), CLIENT, tcp=True)
    assert_formerr(response)
    assert counters["malformed:records"] == 1
    # A few records declared: parsed as before (two questions get FORMERR with the question).
    few = resolver.respond(pointer_chain(MAX_QUERY_RECORDS), CLIENT, tcp=True)
    assert isinstance(few, bytes)
    assert DNSRecord.parse(few).header.rcode == RCODE.FORMERR
    assert counters["malformed:records"] == 1


def test_malformed_names_logged_once_a_minute(
    resolver: Resolver, clock: Clock, counters: Counter[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bootstrapperd.dns")
    for _ in range(453):
        assert_formerr(resolver.respond(HEADER + LONG_LABEL + A_IN, CLIENT, tcp=False))
    assert counters["malformed:name"] == 453
    assert len(caplog.records) == 1
    assert "malformed:name" in str(caplog.records[0].__dict__.get("fields"))
    clock.now += 61
    resolver.respond(HEADER + LONG_NAME + A_IN, CLIENT, tcp=False)
    assert len(caplog.records) == 2
    assert all(record.exc_info is None for record in caplog.records)


def test_throttle_once_per_interval_per_kind() -> None:
    throttle = LogThrottle(60.0)
    assert throttle.allow("name", 0.0)
    assert not throttle.allow("name", 59.9)
    assert throttle.allow("records", 1.0)
    assert throttle.allow("name", 60.0)


def test_tcp_table_evicts_the_sources_oldest_idle_connection() -> None:
    table: TCPTable[str] = TCPTable(total=10, per_source=3)
    for key in ("a1", "a2", "a3"):
        assert table.admit(key, "10.0.0.1").admitted
    table.busy("a1")  # answering a query: not evicted
    admission = table.admit("a4", "10.0.0.1")
    assert admission.admitted
    assert admission.evicted == ("a2",)
    assert table.from_source("10.0.0.1") == 3
    assert "a2" not in table
    table.idle("a1")  # answered: idle again, and now the most recent
    assert table.admit("a5", "10.0.0.1").evicted == ("a3",)
    # Another source is never touched by this one's cap.
    assert table.admit("b1", "10.0.0.2").evicted == ()


def test_tcp_table_full_evicts_oldest_idle_of_all_and_refuses_when_all_busy() -> None:
    table: TCPTable[str] = TCPTable(total=4, per_source=4)
    for index in range(4):
        assert table.admit(f"k{index}", f"10.0.0.{index}").admitted
    admission = table.admit("new", "10.0.0.9")
    assert admission == type(admission)(True, ("k0",))
    assert len(table) == 4
    for key in ("k1", "k2", "k3", "new"):
        table.busy(key)
    refused = table.admit("late", "10.0.0.9")
    assert not refused.admitted
    assert refused.evicted == ()
    assert len(table) == 4
    table.drop("k2")
    table.drop("k2")  # closing twice frees one place only
    assert len(table) == 3
    assert table.admit("late", "10.0.0.9").admitted
