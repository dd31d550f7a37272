"""Who is this machine? One answer for every service, in the spirit of matchbox's selectors.

Given the model, the lease store and a MAC (or a client address), the resolver returns one
frozen :class:`MachineView`: known (listed in the description) or not, served or ignored,
hostname, FQDN, roles, its current address and where that address comes from, and what it
boots. DHCP, TFTP, DNS, HTTP and the renderer ask it; nothing else decides these things.

The two rules, each written once:

- **Served** (:func:`is_served`): a machine gets addresses, boot scripts and configuration
  when the description lists it, or when ``dhcp.unknown_machines`` is ``allow`` or ``approve``
  (under ``approve`` its boot script waits until the operator approves it: lifecycle.py).
- **Current addresses** (:func:`current_addresses`): a node's static reservation, and the
  address of its bound lease while that lease holds (the two differ only for a node given a
  reservation by a reload while it still holds a pool lease). The first is *the* address the
  machine is shown and named with. An offer promises nothing: an offered address is nobody's.
  A reservation that another machine's lease still holds (a reload reserved an address that
  was leased out) is not the node's until that lease ends: the address belongs to the
  machine that is really on it, never to the model's MAC on the strength of the model alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from ..model import ClusterModel
from ..model.fields import canonical_mac, hostname_from_mac
from ..model.types import Node, Role, UnknownMachines
from .boot import BootAction, BootSpec, boot_spec
from .leases import Lease, LeaseState, LeaseStore
from .lifecycle import Lifecycle, MachineState

__all__ = [
    "AddressSource",
    "MachineView",
    "Resolver",
    "current_addresses",
    "is_served",
    "machine_view",
]


class AddressSource(StrEnum):
    STATIC = "static"  # the description's reservation (nodes[].ip)
    LEASE = "lease"  # a bound DHCP lease that holds
    NONE = "none"  # no address now


def is_served(model: ClusterModel, mac: str) -> bool:
    """The unknown-machine policy: listed machines are served; others when unknown machines
    are allowed (they install as workers named after their MAC)."""
    return mac in model.nodes_by_mac or model.dhcp.unknown_machines is not UnknownMachines.IGNORE


def current_addresses(
    node: Node | None, lease: Lease | None, now: float, reservation_held_by: str | None = None
) -> tuple[tuple[IPv4Address, AddressSource], ...]:
    """The addresses the machine has now, each with where it comes from; the first is its
    address (the reservation when it has one). ``reservation_held_by``: the MAC whose bound
    lease holds the node's reserved address now, if any."""
    found: list[tuple[IPv4Address, AddressSource]] = []
    reserved = node.ip if node is not None else None
    if node is not None and reserved is not None and reservation_held_by in (None, node.mac):
        found.append((reserved, AddressSource.STATIC))
    bound = lease is not None and lease.state is LeaseState.BOUND and lease.holds(now)
    if bound and lease is not None and (not found or found[0][0] != lease.ip):
        found.append((lease.ip, AddressSource.LEASE))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class MachineView:
    """One machine as every service sees it, at one moment."""

    mac: str  # canonical
    known: bool  # listed in the description
    served: bool  # gets addresses, boot scripts and configuration
    hostname: str
    fqdn: str
    roles: tuple[Role, ...]
    node: Node | None  # the description's entry; None for an unknown machine
    addresses: tuple[tuple[IPv4Address, AddressSource], ...]  # now; see current_addresses
    lease: Lease | None  # a copy of its lease as recorded (any state), or None
    model: ClusterModel
    state: MachineState | None = None  # its provisioning state (lifecycle.py); None: not served

    @property
    def ip(self) -> IPv4Address | None:
        """The machine's address now (its reservation when it has one), or None."""
        return self.addresses[0][0] if self.addresses else None

    @property
    def address_source(self) -> AddressSource:
        return self.addresses[0][1] if self.addresses else AddressSource.NONE

    def holds(self, address: IPv4Address) -> bool:
        """``address`` is one of the machine's own now."""
        return any(ip == address for ip, _source in self.addresses)

    @property
    def static_ip(self) -> IPv4Address | None:
        return self.node.ip if self.node is not None else None

    def valid_until(self, address: IPv4Address) -> float:
        """Until when ``address`` stays the machine's: inf for its reservation or an infinite
        lease, the lease's end otherwise, 0 for an address that is not its own."""
        for ip, source in self.addresses:
            if ip == address:
                if source is AddressSource.LEASE and self.lease is not None:
                    expires = self.lease.expires
                    return expires if expires is not None else float("inf")
                return float("inf")
        return 0.0

    def boot(
        self, server: str, token: str | None = None, action: BootAction = BootAction.INSTALL
    ) -> BootSpec | None:
        """What it boots from the server at ``server`` (a base URL): ``action`` (as its state
        decides, see machines/lifecycle.py), with the install token issued for this boot if
        any; None when not served."""
        if not self.served:
            return None
        return boot_spec(self.model, self.mac, self.hostname, server, token, action)


def machine_view(
    model: ClusterModel,
    mac: str,
    lease: Lease | None = None,
    now: float | None = None,
    reservation_held_by: str | None = None,
    state: MachineState | None = None,
) -> MachineView:
    """The view of machine ``mac`` (canonical) from the model, its lease (if any) and who holds
    its reserved address's lease (see :func:`current_addresses`)."""
    node = model.nodes_by_mac.get(mac)
    if node is not None:
        hostname, fqdn, roles = node.hostname, node.fqdn, node.roles
    else:
        hostname = hostname_from_mac(mac)
        fqdn, roles = f"{hostname}.{model.domain}", (Role.WORKER,)
    if lease is not None and lease.mac != mac:
        lease = None
    addresses = current_addresses(
        node, lease, time.time() if now is None else now, reservation_held_by
    )
    return MachineView(
        mac=mac,
        known=node is not None,
        served=is_served(model, mac),
        hostname=hostname,
        fqdn=fqdn,
        roles=roles,
        node=node,
        addresses=addresses,
        lease=dataclasses.replace(lease) if lease is not None else None,
        model=model,
        state=state,
    )


class Resolver:
    """Machine views from the model being served and the lease store."""

    def __init__(
        self,
        model: Callable[[], ClusterModel],
        leases: LeaseStore,
        clock: Callable[[], float] = time.time,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self._model = model
        self._leases = leases
        self._lifecycle = lifecycle
        self._clock = clock
        self._indexed: ClusterModel | None = None
        self._mac_by_hostname: dict[str, str] = {}

    @property
    def model(self) -> ClusterModel:
        return self._model()

    @property
    def leases(self) -> LeaseStore:
        return self._leases

    def is_served(self, mac: str) -> bool:
        return is_served(self._model(), mac)

    def machine(self, mac: str, now: float | None = None) -> MachineView:
        """The view of ``mac`` (canonical), whether or not it was ever seen."""
        now = self._clock() if now is None else now
        model = self._model()
        node = model.nodes_by_mac.get(mac)
        held_by = None
        if node is not None and node.ip is not None:
            holder = self._leases.holder(node.ip, now)
            held_by = holder if holder else None  # "" (quarantined) is nobody's
        state = self._lifecycle.state(mac) if self._lifecycle is not None else None
        return machine_view(model, mac, self._leases.of(mac), now, held_by, state)

    def at(self, address: str | IPv4Address, now: float | None = None) -> MachineView | None:
        """The machine whose current address ``address`` is; None when no machine's is."""
        try:
            ip = address if isinstance(address, IPv4Address) else IPv4Address(address)
        except ValueError:
            return None
        node = self._model().static_addresses.get(ip)
        lease = self._leases.at(ip)
        for mac in (node.mac if node else None, lease.mac if lease else None):
            if mac:
                view = self.machine(mac, now)
                if view.holds(ip):
                    return view
        return None

    def conflicts(self, now: float | None = None) -> list[tuple[str, IPv4Address, str]]:
        """Reservations another machine's lease still holds: (node MAC, address, holder MAC).
        The holder keeps the address until its lease ends (its renewal is refused)."""
        now = self._clock() if now is None else now
        found = []
        for ip, node in self._model().static_addresses.items():
            holder = self._leases.holder(ip, now)
            if holder and holder != node.mac:
                found.append((node.mac, ip, holder))
        return found

    def named(self, label: str, now: float | None = None) -> MachineView | None:
        """The served machine a host name (one label) names: a node's hostname, or an unknown
        machine's (its MAC with dashes) when unknown machines are allowed."""
        model = self._model()
        if model is not self._indexed:  # a reload: index the new model once
            self._mac_by_hostname = {node.hostname: node.mac for node in model.nodes}
            self._indexed = model
        mac = self._mac_by_hostname.get(label)
        if mac is None:
            mac = canonical_mac(label)
            if mac is None or mac in model.nodes_by_mac:
                return None  # a known node answers to its hostname, not to its MAC
        view = self.machine(mac, now)
        return view if view.served else None

    def owns(self, mac: str, address: str, now: float | None = None) -> bool:
        """``address`` is machine ``mac``'s own now (its reservation, or its bound lease)."""
        view = self.at(address, now)
        return view is not None and view.mac == mac
