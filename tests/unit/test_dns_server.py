"""The resolver without sockets: local answers from the model and the leases, the fast path
giving exactly what the full path gives, truncation, refusals, and any bytes survived."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapperd.dns.records import LeaseHosts, build_authority
from bootstrapperd.machines.leases import LeaseStore
from bootstrapperd.machines.resolver import Resolver as MachineResolver
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.model.holder import ModelHolder
from protocols.dns.server import Forward, Resolver
from tests.conftest import EXAMPLE

WORKER1 = "52:54:00:77:00:11"


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.holder = ModelHolder.load(EXAMPLE)
        self.db = StateDB(tmp / "state.db")
        self.leases = LeaseStore(self.db)
        self.hosts = LeaseHosts(MachineResolver(lambda: self.holder.model, self.leases))
        self.counters: Counter[str] = Counter()
        self.resolver = Resolver(
            build_authority(self.holder.model, self.hosts, serial=7),
            None,
            may_recurse=lambda client: client.startswith("10.77.0."),
            counters=self.counters,
            clock=time.time,
        )
        self.leases.on_change = self.resolver.invalidate

    def ask(self, query: DNSRecord, client: str = "10.77.0.10") -> DNSRecord:
        wire = self.resolver.respond(bytes(query.pack()), client, tcp=False)
        assert isinstance(wire, bytes)
        return DNSRecord.parse(wire)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    yield lab
    lab.db.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("dns"))
    yield lab
    lab.db.close()


def q(
    name: str, qtype: str = "A", edns: bool = False, rd: bool = True, size: int = 1232
) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    query.header.rd = int(rd)
    if edns:
        query.add_ar(EDNS0(udp_len=size))
    return query


def same(a: bytes, b: bytes) -> bool:
    """The same message, name compression and letter case of owner names aside."""
    x, y = DNSRecord.parse(a), DNSRecord.parse(b)
    return x.header.id == y.header.id and str(x).lower() == str(y).lower()


@pytest.mark.parametrize(
    ("name", "qtype", "rcode", "answers"),
    [
        ("master1.cluster.example", "A", RCODE.NOERROR, ["10.77.0.10"]),
        ("Master1.Cluster.Example", "A", RCODE.NOERROR, ["10.77.0.10"]),
        ("master1", "A", RCODE.NOERROR, ["10.77.0.10"]),
        ("10.0.77.10.in-addr.arpa", "PTR", RCODE.NOERROR, ["master1.cluster.example."]),
        ("bootstrapper.cluster.example", "A", RCODE.NOERROR, ["10.77.0.1"]),
        ("cluster.example", "NS", RCODE.NOERROR, ["bootstrapper.cluster.example."]),
        ("_etcd-server._tcp.cluster.example", "SRV", RCODE.NOERROR,
         ["0 0 2380 master1.cluster.example."]),
        ("master1.cluster.example", "AAAA", RCODE.NOERROR, []),  # NODATA
        ("master1.cluster.example", "TXT", RCODE.NOERROR, []),
        ("_tcp.cluster.example", "A", RCODE.NOERROR, []),  # an empty non-terminal
        ("nosuch.cluster.example", "A", RCODE.NXDOMAIN, []),
        ("worker1.cluster.example", "A", RCODE.NXDOMAIN, []),  # no lease yet
        ("99.0.77.10.in-addr.arpa", "PTR", RCODE.NXDOMAIN, []),
    ],
)  # fmt: skip
def test_local_answers(lab: Lab, name: str, qtype: str, rcode: int, answers: list[str]) -> None:
    reply = lab.ask(q(name, qtype))
    assert reply.header.rcode == rcode
    assert reply.header.aa == 1
    assert reply.header.qr == 1
    assert [str(rr.rdata) for rr in reply.rr] == answers
    if not answers and name.endswith(".cluster.example"):
        assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA]  # negative answers carry the SOA
        assert reply.auth[0].ttl == 5


def test_the_fast_path_gives_what_the_full_path_gives(lab: Lab) -> None:
    queries = (
        q("master1.cluster.example"),
        q("nosuch.cluster.example", edns=True),
        q("cluster.example", "NS", rd=False),
        q("master1.cluster.example", "AAAA"),
    )
    for query in queries:
        first = lab.resolver.respond(bytes(query.pack()), "10.77.0.10", tcp=False)
        assert isinstance(first, bytes)
        # Another ID, other letter case: the stored template gives the same bytes the full
        # path would give for that query.
        again = DNSRecord.parse(bytes(query.pack()))
        again.header.id = (query.header.id + 1) % 65536
        again.q.qname = str(query.q.qname).upper()
        fast = lab.resolver.fast(bytes(again.pack()), "10.77.0.10", time.time())
        full = lab.resolver.respond(bytes(again.pack()), "10.77.0.10", tcp=False)
        assert fast is not None
        assert isinstance(full, bytes)
        assert same(fast, full)
        assert DNSRecord.parse(fast).q.qname == again.q.qname  # the client's case echoed


def test_a_lease_is_visible_at_once_and_gone_at_release(lab: Lab) -> None:
    name = "worker1.cluster.example"
    assert lab.ask(q(name)).header.rcode == RCODE.NXDOMAIN
    now = time.time()
    lab.leases.bind(IPv4Address("10.77.0.100"), WORKER1, now, now + 3600, None, None)
    reply = lab.ask(q(name))
    assert [str(rr.rdata) for rr in reply.rr] == ["10.77.0.100"]
    ptr = lab.ask(q("100.0.77.10.in-addr.arpa", "PTR"))
    assert [str(rr.rdata) for rr in ptr.rr] == ["worker1.cluster.example."]
    # The fast path has it now; a release must not leave it there.
    assert lab.resolver.fast(bytes(q(name).pack()), "10.77.0.10", time.time()) is not None
    lab.leases.release(IPv4Address("10.77.0.100"), WORKER1, time.time())
    assert lab.resolver.fast(bytes(q(name).pack()), "10.77.0.10", time.time()) is None
    assert lab.ask(q(name)).header.rcode == RCODE.NXDOMAIN


def test_an_expired_lease_answers_no_more(lab: Lab) -> None:
    now = time.time()
    lab.leases.bind(IPv4Address("10.77.0.101"), WORKER1, now, now + 2, None, None)
    reply = lab.ask(q("worker1.cluster.example"))
    assert reply.rr
    assert reply.rr[0].ttl <= 2
    later = now + 3
    assert (
        lab.resolver.fast(bytes(q("worker1.cluster.example").pack()), "10.77.0.10", later) is None
    )


def test_unknown_machines_resolve_by_their_mac_name(lab: Lab) -> None:
    now = time.time()
    lab.leases.bind(IPv4Address("10.77.0.102"), "52:54:00:ab:cd:07", now, now + 60, None, None)
    reply = lab.ask(q("52-54-00-ab-cd-07.cluster.example"))
    assert [str(rr.rdata) for rr in reply.rr] == ["10.77.0.102"]


def test_no_upstream_refused_and_outsiders_refused(lab: Lab) -> None:
    assert lab.ask(q("example.com")).header.rcode == RCODE.REFUSED
    assert lab.counters["A:REFUSED"] == 1


def test_forwarding_is_only_for_clients_inside(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    try:
        lab.resolver.forwarder = object()  # type: ignore[assignment]
        inside = lab.resolver.respond(bytes(q("example.com").pack()), "10.77.0.10", tcp=False)
        assert isinstance(inside, Forward)
        assert inside.name == "example.com."
        outside = lab.resolver.respond(bytes(q("example.com").pack()), "192.168.1.5", tcp=False)
        assert isinstance(outside, bytes)
        assert DNSRecord.parse(outside).header.rcode == RCODE.REFUSED
    finally:
        lab.db.close()


def test_truncation_over_udp_and_whole_over_tcp(lab: Lab, tmp_path: Path) -> None:
    reply = lab.ask(q("cluster.example", "ANY"))
    assert reply.header.tc == 0
    holder_text = EXAMPLE.read_text() + "".join(
        f'  - mac: "52:54:00:77:01:{i:02x}"\n    cur_host_name: "etcd{i:02d}"\n'
        f"    ip: 10.77.0.{150 + i}\n    etcd_member: y\n"
        for i in range(30)
    )
    path = tmp_path / "big.yml"
    path.write_text(holder_text)
    big = ModelHolder.load(path).model
    lab.resolver.use(build_authority(big, lab.hosts, serial=8))
    query = bytes(q("_etcd-server._tcp.cluster.example", "SRV").pack())
    udp = lab.resolver.respond(query, "10.77.0.10", tcp=False)
    tcp = lab.resolver.respond(query, "10.77.0.10", tcp=True)
    assert isinstance(udp, bytes)
    assert isinstance(tcp, bytes)
    assert len(udp) <= 512
    assert DNSRecord.parse(udp).header.tc == 1
    whole = DNSRecord.parse(tcp)
    assert whole.header.tc == 0
    assert len(whole.rr) == 31
    # The EDNS size is the limit: 1232 is still too small, 4096 takes it all.
    srv = "_etcd-server._tcp.cluster.example"
    small = lab.resolver.respond(bytes(q(srv, "SRV", edns=True).pack()), "10.77.0.10", tcp=False)
    assert isinstance(small, bytes)
    assert len(small) <= 1232
    assert DNSRecord.parse(small).header.tc == 1
    large = bytes(q(srv, "SRV", edns=True, size=4096).pack())
    answer = lab.resolver.respond(large, "10.77.0.10", tcp=False)
    assert isinstance(answer, bytes)
    assert 1232 < len(answer) <= 4096
    assert DNSRecord.parse(answer).header.tc == 0


def test_formerr_notimp_badvers_and_responses_dropped(lab: Lab) -> None:
    resolver = lab.resolver
    broken = bytes(q("master1.cluster.example").pack())[:20]
    formerr = resolver.respond(broken, "10.77.0.10", tcp=False)
    assert isinstance(formerr, bytes)
    assert formerr[3] & 0x0F == RCODE.FORMERR
    assert resolver.respond(b"\x00" * 5, "10.77.0.10", tcp=False) is None
    response = bytes(DNSRecord.parse(bytes(q("master1.cluster.example").pack())).reply().pack())
    assert resolver.respond(response, "10.77.0.10", tcp=False) is None
    notify = q("cluster.example")
    notify.header.opcode = 4
    reply = lab.ask(notify)
    assert reply.header.rcode == RCODE.NOTIMP
    query = q("master1.cluster.example")
    query.add_ar(EDNS0(version=1))
    wire = resolver.respond(bytes(query.pack()), "10.77.0.10", tcp=False)
    assert isinstance(wire, bytes)
    assert resolver.fast(bytes(query.pack()), "10.77.0.10", time.time()) is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_are_survived(shared: Lab, data: bytes) -> None:
    lab = shared
    lab.resolver.fast(data, "10.77.0.10", time.time())
    result = lab.resolver.respond(data, "10.77.0.10", tcp=False)
    assert result is None or isinstance(result, bytes | Forward)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=12, max_value=60), st.binary(min_size=1, max_size=4))
def test_mutated_queries_are_survived(shared: Lab, cut: int, noise: bytes) -> None:
    lab = shared
    wire = bytes(q("master1.cluster.example", edns=True).pack())
    for data in (wire[:cut], wire[:cut] + noise, noise + wire[cut:]):
        lab.resolver.fast(data, "10.77.0.10", time.time())
        lab.resolver.respond(data, "10.77.0.10", tcp=True)
