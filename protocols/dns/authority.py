"""The local names: authoritative zones, fixed records, and hosts that come and go (leases).

Sans-IO and independent of the application: the zones and fixed records are data, the hosts
are behind the small ``Hosts`` interface, and ``Authority.answer`` says what a query for a
local name gets (or None when the name is not local and should be forwarded). Names are
compared lower-case, as absolute names with the trailing dot.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Protocol

from dnslib import PTR, QTYPE, RCODE, RR, SOA, A, DNSLabel

__all__ = ["Answer", "Authority", "Hosts", "Record", "Zone", "absolute"]

TYPE_A = QTYPE.A
TYPE_PTR = QTYPE.PTR
TYPE_NS = QTYPE.NS
TYPE_SOA = QTYPE.SOA
TYPE_ANY = QTYPE.ANY


def absolute(name: str) -> str:
    """``Name.Example`` → ``name.example.``"""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


class Hosts(Protocol):
    """Addresses that change while the server runs (DHCP leases)."""

    def address_of(self, name: str, now: float) -> tuple[IPv4Address, float] | None:
        """The address ``name`` (absolute, lower-case) has now and until when, or None."""

    def name_of(self, address: IPv4Address, now: float) -> tuple[str, float] | None:
        """The absolute name that holds ``address`` now and until when, or None."""


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # absolute, lower-case
    rtype: int  # a QTYPE value
    rdata: Any  # a dnslib RD (A, PTR, SRV, NS, SOA, …)
    ttl: int


@dataclass(frozen=True, slots=True)
class Zone:
    origin: str  # absolute, lower-case
    soa: SOA
    ttl: int  # of the SOA and NS records

    @property
    def negative_ttl(self) -> int:
        """RFC 2308: how long a NXDOMAIN / NODATA from this zone may be cached."""
        return int(min(self.ttl, self.soa.times[-1]))


@dataclass(slots=True)
class Answer:
    rcode: int
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    authoritative: bool = True
    valid_until: float = math.inf  # the answer changes at this time (a lease ends)


class Authority:
    """Every local name: zones (SOA, NS, NXDOMAIN for unknown names inside), fixed records,
    and ``hosts`` consulted at query time so a new lease is visible at once."""

    def __init__(
        self, zones: Sequence[Zone], records: Iterable[Record], hosts: Hosts, host_ttl: int
    ) -> None:
        self.zones = sorted(zones, key=lambda z: -len(z.origin))  # most specific first
        self.hosts = hosts
        self.host_ttl = host_ttl
        self._records: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            self._records[record.name].append(record)
        self._nonterminals: set[str] = set()
        for name in list(self._records):
            zone = self.zone_of(name)
            if zone is None:
                continue
            labels = name.split(".")
            for i in range(1, len(labels) - 1):
                parent = ".".join(labels[i:])
                if parent == zone.origin or not parent.endswith(zone.origin):
                    break
                self._nonterminals.add(parent)

    def zone_of(self, name: str) -> Zone | None:
        for zone in self.zones:
            if name == zone.origin or name.endswith("." + zone.origin):
                return zone
        return None

    def answer(self, name: str, qtype: int, now: float) -> Answer | None:
        """What a query for ``name`` (absolute, lower-case) and ``qtype`` gets; None when the
        name is not local (forward it)."""
        zone = self.zone_of(name)
        found, valid_until = self._lookup(name, now)
        if zone is None and not found:
            return None
        if found:
            matching = [r for r in found if qtype in (r.rtype, TYPE_ANY)]
            if matching:
                answer = Answer(RCODE.NOERROR, [_rr(r) for r in matching], valid_until=valid_until)
                self._add_glue(answer, matching, now)
                return answer
        if zone is None:  # a host name outside every zone (a short name): NODATA, no SOA
            return Answer(RCODE.NOERROR, valid_until=valid_until)
        exists = bool(found) or name in self._nonterminals or name == zone.origin
        rcode = RCODE.NOERROR if exists else RCODE.NXDOMAIN
        soa = RR(zone.origin, TYPE_SOA, rdata=zone.soa, ttl=zone.negative_ttl)
        return Answer(rcode, authority=[soa], valid_until=valid_until)

    def _lookup(self, name: str, now: float) -> tuple[list[Record], float]:
        """The records at ``name``: fixed ones, else a host's address or a PTR."""
        fixed = self._records.get(name)
        if fixed:
            return fixed, math.inf
        host = self.hosts.address_of(name, now)
        if host is not None:
            address, until = host
            return [Record(name, TYPE_A, A(str(address)), self._ttl(until, now))], until
        reverse = reverse_address(name)
        if reverse is not None:
            owner = self.hosts.name_of(reverse, now)
            if owner is not None:
                target, until = owner
                return [Record(name, TYPE_PTR, PTR(target), self._ttl(until, now))], until
        return [], math.inf

    def _ttl(self, until: float, now: float) -> int:
        return max(0, min(self.host_ttl, int(until - now)))

    def _add_glue(self, answer: Answer, records: list[Record], now: float) -> None:
        """Addresses of the targets of NS and SRV answers, so the client needs no second query."""
        for record in records:
            if record.rtype in (TYPE_NS, QTYPE.SRV):
                rdata = record.rdata
                target = absolute(str(rdata.target if record.rtype == QTYPE.SRV else rdata.label))
                glue, until = self._lookup(target, now)
                answer.additional.extend(_rr(g) for g in glue if g.rtype == TYPE_A)
                answer.valid_until = min(answer.valid_until, until)


def _rr(record: Record) -> RR:
    return RR(DNSLabel(record.name), record.rtype, rdata=record.rdata, ttl=record.ttl)


def reverse_address(name: str) -> IPv4Address | None:
    """``4.3.2.1.in-addr.arpa.`` → 1.2.3.4; None for any other name."""
    if not name.endswith(".in-addr.arpa."):
        return None
    parts = name[: -len(".in-addr.arpa.")].split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        return None
    try:
        return IPv4Address(".".join(reversed(parts)))
    except ValueError:
        return None
