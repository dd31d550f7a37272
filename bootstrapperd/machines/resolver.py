"""Which machine is behind an address, and which addresses belong to a machine: its DHCP lease
or its static reservation. Used to put TFTP and HTTP requests in the right boot timeline and to
serve a machine's private keys to that machine only."""

from __future__ import annotations

import time
from ipaddress import IPv4Address

from ..model.holder import ModelHolder
from .leases import LeaseState, LeaseStore

__all__ = ["Machines"]


class Machines:
    def __init__(self, holder: ModelHolder, leases: LeaseStore) -> None:
        self.holder = holder
        self.leases = leases

    def mac_of(self, ip: str) -> str | None:
        """The MAC behind a client address: its lease (as last recorded), else a node's static
        address; None when neither is known."""
        try:
            address = IPv4Address(ip)
        except ValueError:
            return None
        lease = self.leases.at(address)
        if lease is not None and lease.mac:
            return lease.mac
        node = self.holder.model.static_addresses.get(address)
        return node.mac if node is not None else None

    def owns(self, mac: str, ip: str, now: float | None = None) -> bool:
        """``ip`` is the machine's own now: it holds the bound lease of ``mac`` for that address,
        or the address is the static reservation of ``mac`` in the model."""
        try:
            address = IPv4Address(ip)
        except ValueError:
            return False
        node = self.holder.model.static_addresses.get(address)
        if node is not None:
            return node.mac == mac
        lease = self.leases.at(address)
        if lease is None or lease.mac != mac or lease.state is not LeaseState.BOUND:
            return False
        return lease.holds(time.time() if now is None else now)
