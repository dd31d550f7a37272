"""The cluster's names, from the model and the live DHCP leases.

Authoritative zones: ``domainname`` and the reverse zone(s) of the cluster subnet, each with
SOA and NS (``bootstrapper.<domain>``). Fixed records: ``bootstrapper`` and ``dockerdomain``
→ the bootstrapper's address; every node with a static address (FQDN and short name) and its
PTR; SRV ``_etcd-server._tcp`` (2380) and ``_etcd-client._tcp`` (2379) for the etcd members.
Nodes without a static address, and machines not in the model, are resolved from their
current lease at query time (``LeaseHosts``).
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address

from dnslib import NS, PTR, QTYPE, SOA, SRV, A

from protocols.dns.authority import Authority, Record, Zone, absolute

from ..machines.resolver import Resolver
from ..model import ClusterModel

TTL = 60  # short: a changed address must not linger in caches
NEGATIVE_TTL = 5  # SOA minimum: a machine that appears is resolvable within seconds
ETCD_PORTS = {"_etcd-server._tcp": 2380, "_etcd-client._tcp": 2379}


def ptr_name(address: IPv4Address) -> str:
    return address.reverse_pointer + "."


class LeaseHosts:
    """``Hosts`` for the authority: a served machine's name → its current address, and back,
    as the resolver says (nodes by hostname, unknown machines by their MAC-named hostname)."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver

    def _label(self, name: str, domain: str) -> str | None:
        label = name[: -len(domain) - 1] if name.endswith("." + domain) else name[:-1]
        return label if label and "." not in label else None

    def address_of(self, name: str, now: float) -> tuple[IPv4Address, float] | None:
        label = self._label(name, absolute(self._resolver.model.domain))
        view = self._resolver.named(label, now) if label is not None else None
        if view is None or view.ip is None:
            return None
        return view.ip, view.valid_until(view.ip)

    def name_of(self, address: IPv4Address, now: float) -> tuple[str, float] | None:
        view = self._resolver.at(address, now)
        if view is None or not view.served:
            return None
        return absolute(view.fqdn), view.valid_until(address)


def build_authority(model: ClusterModel, hosts: LeaseHosts, serial: int | None = None) -> Authority:
    domain = absolute(model.domain)
    ns_name = f"bootstrapper.{domain}"
    serial = int(time.time()) & 0xFFFFFFFF if serial is None else serial
    soa = SOA(ns_name, f"hostmaster.{domain}", (serial, 3600, 600, 86400, NEGATIVE_TTL))
    origins = [domain, *(absolute(z) for z in model.reverse_zones)]
    zones = [Zone(origin, soa, TTL) for origin in origins]
    records: list[Record] = []
    for origin in origins:
        records.append(Record(origin, QTYPE.SOA, soa, TTL))
        records.append(Record(origin, QTYPE.NS, NS(ns_name), TTL))

    def host(name: str, address: IPv4Address) -> None:
        records.append(Record(name, QTYPE.A, A(str(address)), TTL))

    bootstrapper = model.bootstrapper
    host(ns_name, bootstrapper)
    host("bootstrapper.", bootstrapper)
    if bootstrapper in model.network:
        records.append(Record(ptr_name(bootstrapper), QTYPE.PTR, PTR(ns_name), TTL))
    docker = model.dockerdomain.lower().rstrip(".")
    if docker and docker != "bootstrapper":
        if "." in docker:
            host(absolute(docker), bootstrapper)
        else:
            host(f"{docker}.{domain}", bootstrapper)
            host(f"{docker}.", bootstrapper)
    for node in model.nodes:
        if node.ip is None:
            continue
        fqdn = absolute(node.fqdn)
        host(fqdn, node.ip)
        host(f"{node.hostname}.", node.ip)
        records.append(Record(ptr_name(node.ip), QTYPE.PTR, PTR(fqdn), TTL))
    for service, port in ETCD_PORTS.items():
        for member in model.etcd_members:
            target = SRV(priority=0, weight=0, port=port, target=absolute(member.fqdn))
            records.append(Record(f"{service}.{domain}", QTYPE.SRV, target, TTL))
    return Authority(zones, _unique(records), hosts, TTL)


def _unique(records: list[Record]) -> list[Record]:
    """Drop repeats (a dockerdomain equal to a node's name, two names for one address)."""
    seen: set[tuple[str, int, str]] = set()
    unique: list[Record] = []
    for record in records:
        key = (record.name, record.rtype, str(record.rdata))
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique
