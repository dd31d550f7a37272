"""The DHCP server's site policy, from the cluster model: who is answered, which address, which
options, which boot file. Implements ``protocols.dhcp.server.Backend``.

Allocation order for a machine: its static ``ip`` from the model; else the address it held
before (if still free); else the address it asks for (if free); else a pool address never
handed out before; else the pool address whose lease ended longest ago. Never an address
another MAC holds, a quarantined one, the bootstrapper's or a router's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from pathlib import Path

from protocols.dhcp.options import Opt, encode_ip, encode_ips, encode_str
from protocols.dhcp.packet import Packet
from protocols.dhcp.ratelimit import FirstContactLimiter
from protocols.dhcp.server import Boot, Mode, Settings, Verdict
from protocols.throttle import LogThrottle

from ..machines.leases import LeaseStore
from ..machines.resolver import is_served, machine_view
from ..model import ClusterModel
from ..model.types import DHCPMode
from ..routes import URLs, base_url
from .boot import BootPolicy

log = logging.getLogger("bootstrapperd.dhcp")

OFFER_HOLD = 60.0  # seconds an offered address stays reserved for the client it was offered to
QUARANTINE = 600.0  # seconds a declined address is kept out of the pool (dnsmasq's figure)
WARN_EVERY = 60.0  # seconds between two "pool exhausted" warnings for the same MAC
# First contact from MACs the description does not list (listed nodes are never limited):
NEW_UNKNOWN_PER_SECOND = 1.0  # new unknown MACs let in per second, on average
NEW_UNKNOWN_BURST = 16  # new unknown MACs let in at once (machines powered on together)
RECENT_UNKNOWN = 4096  # unknown MACs remembered as recently seen (they pass without a token)
RECENT_SECONDS = 600.0  # how long an unknown MAC let in stays recently seen
LIMITED_WARN_EVERY = 60.0  # seconds between two "new unknown MACs rate-limited" warnings


def settings_for(model: ClusterModel, server_id: IPv4Address) -> Settings:
    options: dict[int, bytes] = {
        Opt.SUBNET_MASK: encode_ip(model.network.netmask),
        Opt.BROADCAST: encode_ip(model.broadcast),
        Opt.DOMAIN_NAME: encode_str(model.domain),
    }
    if model.routers:
        options[Opt.ROUTER] = encode_ips(model.routers)
    options[Opt.DNS] = encode_ips(model.nameservers or (server_id,))
    if model.set_ntp:
        options[Opt.NTP] = encode_ip(server_id)
    mode = Mode.PROXY if model.dhcp.mode is DHCPMode.PROXY else Mode.FULL
    return Settings(server_id, model.network, model.lease_seconds, options, mode)


class ModelBackend:
    def __init__(
        self,
        model: ClusterModel,
        leases: LeaseStore,
        server_id: IPv4Address,
        http_port: int,
        tftpboot: Path,
        counters: Counter[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self.server_id = server_id
        self.http_port = http_port
        self.tftpboot = tftpboot
        self.counters = counters
        self._warned: dict[str, float] = {}
        self._clock = clock
        self._first_contact = FirstContactLimiter(
            NEW_UNKNOWN_PER_SECOND, NEW_UNKNOWN_BURST, RECENT_UNKNOWN, RECENT_SECONDS
        )
        self._limited_warnings = LogThrottle(LIMITED_WARN_EVERY)
        self._limited_since_warning = 0
        self.use(model)

    def use(self, model: ClusterModel) -> None:
        """Serve from ``model`` from now on (start and reload); leases are kept."""
        self.model = model
        self._nodes = model.nodes_by_mac  # packets give canonical MACs: no re-spelling needed
        self._settings = settings_for(model, self.server_id)
        urls = URLs(base_url(self.server_id, self.http_port))
        self._boot = BootPolicy(self.server_id, urls, self.tftpboot)
        self._reserved = model.reserved_addresses | {
            self.server_id,
            model.network.network_address,
            model.broadcast,
        }
        self._cursor = int(model.pool.low) if model.pool.low is not None else 1
        self._last = int(model.pool.high) if model.pool.high is not None else 0

    @property
    def settings(self) -> Settings:
        return self._settings

    def admit(self, request: Packet) -> bool | None:
        """Listed machines always; others when the unknown-machine policy serves them and the
        first-contact limit lets a MAC not seen recently in (else None: not now, counted)."""
        mac = request.mac
        if mac in self._nodes:
            return True
        if not is_served(self.model, mac):
            return False
        now = self._clock()
        if self._first_contact.allow(mac, now):
            return True
        self.counters["unknown_rate_limited"] += 1
        self._limited_since_warning += 1
        if self._limited_warnings.allow("unknown_rate_limited", now):
            log.warning(
                "new unknown MACs arrive faster than %s/s: %d ignored since the last warning",
                NEW_UNKNOWN_PER_SECOND,
                self._limited_since_warning,
                extra={"fields": {"mac": mac}},
            )
            self._limited_since_warning = 0
        return None

    def _static(self, mac: str) -> IPv4Address | None:
        node = self._nodes.get(mac)
        return node.ip if node is not None else None

    def _usable(self, ip: IPv4Address, mac: str, now: float) -> bool:
        if ip not in self.model.pool or ip in self._reserved:
            return False
        return self.leases.holder(ip, now) in (None, mac)

    def choose(
        self, request: Packet, requested: IPv4Address | None, now: float
    ) -> IPv4Address | None:
        mac = request.mac
        address = self._static(mac)
        if address is not None:
            holder = self.leases.holder(address, now)
            if holder not in (None, mac):
                self._warn(mac, now, "static address of this machine is held by another", holder)
                return None
        else:
            address = self._dynamic(mac, requested, now)
            if address is None:
                self.counters["pool_exhausted"] += 1
                self._warn(mac, now, "pool exhausted: no address to offer", None)
                return None
        self.leases.offer(address, mac, now, OFFER_HOLD)
        return address

    def _dynamic(self, mac: str, requested: IPv4Address | None, now: float) -> IPv4Address | None:
        previous = self.leases.of(mac)
        if previous is not None and self._usable(previous.ip, mac, now):
            return previous.ip
        if requested is not None and self._usable(requested, mac, now):
            return requested
        while self._cursor <= self._last:
            ip = IPv4Address(self._cursor)
            self._cursor += 1
            if ip not in self._reserved and self.leases.at(ip) is None:
                return ip
        return self.leases.take_ended(
            now, lambda ip: ip in self.model.pool and ip not in self._reserved
        )

    def grant(self, request: Packet, address: IPv4Address, now: float) -> Verdict:
        mac = request.mac
        static = self._static(mac)
        if static is not None and address != static:
            return Verdict(False, f"this machine's address is {static}")
        if static is None:
            if address in self._reserved:
                return Verdict(False, "address reserved")
            if address not in self.model.pool:
                return Verdict(False, "address not ours")
        holder = self.leases.holder(address, now)
        if holder not in (None, mac):
            return Verdict(False, "address taken")
        seconds = self._settings.lease_seconds
        expires = None if seconds is None else now + seconds
        self.leases.bind(
            address, mac, now, expires, request.options.get(Opt.CLIENT_ID), request.hostname
        )
        return Verdict(True)

    def release(self, request: Packet, address: IPv4Address, now: float) -> bool:
        return self.leases.release(address, request.mac, now)

    def decline(self, request: Packet, address: IPv4Address, now: float) -> bool:
        if self.leases.holder(address, now) != request.mac:
            return False
        self.leases.quarantine(address, now, now + QUARANTINE)
        self.counters["declined"] += 1
        log.warning(
            "address declined: another host answers on it; quarantined",
            extra={"fields": {"mac": request.mac, "ip": address, "seconds": QUARANTINE}},
        )
        return True

    def host_options(self, request: Packet) -> Mapping[int, bytes]:
        mac = request.mac
        if mac not in self._nodes and len(request.chaddr) != 6:
            return {}  # not an Ethernet address: no name to give
        return {Opt.HOSTNAME: encode_str(machine_view(self.model, mac).hostname)}

    def boot(self, request: Packet) -> Boot | None:
        return self._boot.choose(request)

    def _warn(self, mac: str, now: float, message: str, holder: str | None) -> None:
        if now - self._warned.get(mac, -WARN_EVERY) < WARN_EVERY:
            return
        if len(self._warned) > 10_000:
            self._warned.clear()
        self._warned[mac] = now
        fields: dict[str, object] = {"mac": mac}
        if holder is not None:
            fields["held_by"] = holder or "(quarantined)"
        log.warning(message, extra={"fields": fields})
