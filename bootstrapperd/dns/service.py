"""The DNS service in the daemon: port 53 (UDP and TCP) on the bootstrapper's address, the
cluster's names from the model and the leases, the rest forwarded to ``upstreamnameservers``
for clients inside the cluster subnet (and loopback) only."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import Counter
from ipaddress import IPv4Address, IPv4Network, ip_address

from protocols.dns.cache import ResponseCache
from protocols.dns.endpoint import DNSEndpoint, open_udp
from protocols.dns.forward import Forwarder
from protocols.dns.server import Resolver

from ..machines.resolver import Resolver as MachineResolver
from ..model import ClusterModel
from ..model.holder import ModelHolder
from ..runtime.errors import cannot_listen
from .records import LeaseHosts, build_authority

log = logging.getLogger("bootstrapperd.dns")

PORT = 53
UPSTREAM_TIMEOUT = 1.0


class RecursionPolicy:
    """Who may have names forwarded: the cluster subnet and loopback, never the world."""

    def __init__(self, network: IPv4Network) -> None:
        self.network = network
        self._seen: dict[str, bool] = {}

    def __call__(self, client: str) -> bool:
        allowed = self._seen.get(client)
        if allowed is None:
            try:
                address = ip_address(client)
            except ValueError:
                return False
            allowed = address.is_loopback or (
                isinstance(address, IPv4Address) and address in self.network
            )
            if len(self._seen) > 65536:
                self._seen.clear()
            self._seen[client] = allowed
        return allowed


def upstreams_of(model: ClusterModel) -> list[tuple[str, int]]:
    return [(str(address), PORT) for address in model.upstream_nameservers]


class DNSService:
    def __init__(
        self, holder: ModelHolder, address: IPv4Address, machines: MachineResolver, port: int = PORT
    ) -> None:
        self.holder = holder
        self.address = address
        self.port = port
        self.counters: Counter[str] = Counter()
        self.hosts = LeaseHosts(machines)
        self.cache = ResponseCache()
        model = holder.model
        self.forwarder = Forwarder(
            upstreams_of(model),
            cache=self.cache,
            counters=self.counters,
            logger=log,
            timeout=UPSTREAM_TIMEOUT,
        )
        self.policy = RecursionPolicy(model.network)
        self.resolver = Resolver(
            build_authority(model, self.hosts),
            self.forwarder,
            cache=self.cache,
            may_recurse=self.policy,
            counters=self.counters,
            clock=time.time,
            logger=log,
        )
        machines.leases.on_change = self.resolver.invalidate  # a name's address changed
        self._endpoint: DNSEndpoint | None = None

    async def start(self) -> None:
        where = f"{self.address}:{self.port}"
        hint = " — is another DNS server (dnsmasq, systemd-resolved, bind) running here?"
        try:
            udp = open_udp(str(self.address), self.port)
        except OSError as exc:
            raise cannot_listen("dns", f"{where}/udp", exc, hint) from None
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((str(self.address), self.port))
        except OSError as exc:
            tcp.close()
            udp.close()
            raise cannot_listen("dns", f"{where}/tcp", exc, hint) from None
        endpoint = DNSEndpoint(udp, self.resolver, counters=self.counters, logger=log)
        await endpoint.start(tcp)
        self._endpoint = endpoint
        self.holder.subscribe(self._on_reload)
        model = self.holder.model
        log.info(
            "listening",
            extra={
                "fields": {
                    "service": "dns",
                    "address": self.address,
                    "port": self.port,
                    "domain": model.domain,
                    "upstreams": ",".join(str(u) for u in model.upstream_nameservers) or None,
                }
            },
        )

    def _on_reload(self, old: ClusterModel, new: ClusterModel) -> None:
        """Swap the zone in one step; the forwarder gets the new upstream list."""
        self.resolver.use(build_authority(new, self.hosts))
        self.policy = RecursionPolicy(new.network)
        self.resolver.may_recurse = self.policy
        if new.upstream_nameservers != old.upstream_nameservers:
            self.forwarder.use(upstreams_of(new))

    async def stop(self) -> None:
        if self._endpoint is not None:
            await self._endpoint.close()
            self._endpoint = None
        with contextlib.suppress(Exception):
            await self.forwarder.close()
