"""IPv6 Router Advertisements on the serving interface, as dnsmasq's ``enable-ra`` sends them.

iPXE and Linux wait about 13 s for IPv6 autoconfiguration at link-up unless an RA arrives. The
bootstrapper is not an IPv6 router: its RAs say so (router lifetime 0), ask for no DHCPv6
(M=0, O=0) and, when ``dhcp.router_advertisement.prefix`` is set, offer a /64 for SLAAC.

The codec (``parse_solicitation``, ``serialize_advertisement`` …) is sans-IO in
``protocols/ndp.py``; the ``RouterAdvertiser`` here is the thin endpoint: one raw ICMPv6
socket, a few initial unsolicited RAs then one per ``interval`` (jittered), and an immediate
answer to every valid RS (RFC 4861 §6). Whatever goes wrong with IPv6 here, it logs why and
stays idle: DHCP, TFTP, DNS and HTTP are never affected.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

import psutil

from protocols.ndp import (
    ALL_NODES,
    ALL_ROUTERS,
    MAX_INITIAL_RTR_ADVERT_INTERVAL,
    MAX_INITIAL_RTR_ADVERTISEMENTS,
    MIN_DELAY_BETWEEN_RAS,
    MIN_INTERVAL_FACTOR,
    ND_HOP_LIMIT,
    ROUTER_SOLICITATION,
    UNSPECIFIED,
    Advertisement,
    MalformedSolicitation,
    parse_solicitation,
    serialize_advertisement,
)

from ..model import ClusterModel
from ..model.holder import ModelHolder
from ..model.types import RouterAdvertisement

log = logging.getLogger("bootstrapperd.ra")

# The socket's side (the messages themselves are in protocols/ndp.py).
ICMP6_FILTER = 1  # <netinet/icmp6.h>; Python's socket module does not name it
_IFA_F_TENTATIVE, _IFA_F_DADFAILED = 0x40, 0x08
_SCOPE_LINK = 0x20


class RAUnavailable(Exception):
    """IPv6 cannot be used on the interface; the message says why (and what to do)."""


@dataclass
class Link:
    sock: socket.socket
    ifindex: int
    mac: bytes | None
    filtered: bool  # the kernel passes only RSs (ICMP6_FILTER); otherwise filter in code


def ipv6_disabled(interface: str) -> bool:
    path = Path("/proc/sys/net/ipv6/conf", interface, "disable_ipv6")
    try:
        return path.read_text().strip() == "1"
    except OSError:  # no IPv6 in this kernel at all
        return not Path("/proc/sys/net/ipv6").exists()


def link_local_address(interface: str) -> IPv6Address | None:
    """The interface's usable link-local address: None while it is tentative (DAD)."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) != 6 or fields[5] != interface or int(fields[3], 16) != _SCOPE_LINK:
            continue
        if int(fields[4], 16) & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
            continue
        return IPv6Address(bytes.fromhex(fields[0]))
    return None


def interface_mac(interface: str) -> bytes | None:
    for addr in psutil.net_if_addrs().get(interface, []):
        if addr.family == psutil.AF_LINK and addr.address:
            raw = bytes.fromhex(addr.address.replace(":", "").replace("-", ""))
            return raw if any(raw) else None
    return None


def open_link(interface: str) -> Link:
    """A raw ICMPv6 socket on ``interface`` that sends with hop limit 255 and receives RSs."""
    if ipv6_disabled(interface):
        raise RAUnavailable(
            f"IPv6 is disabled on {interface} (net.ipv6.conf.{interface}.disable_ipv6=1)"
        )
    try:
        ifindex = socket.if_nametoindex(interface)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise RAUnavailable("a raw ICMPv6 socket needs CAP_NET_RAW") from None
        raise RAUnavailable(f"cannot open a raw ICMPv6 socket: {exc.strerror or exc}") from None
    ip6 = socket.IPPROTO_IPV6
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.setsockopt(ip6, socket.IPV6_MULTICAST_IF, ifindex)
        sock.setsockopt(ip6, socket.IPV6_MULTICAST_HOPS, ND_HOP_LIMIT)
        sock.setsockopt(ip6, socket.IPV6_UNICAST_HOPS, ND_HOP_LIMIT)
        sock.setsockopt(ip6, socket.IPV6_MULTICAST_LOOP, 0)  # our RAs are not for this host
        sock.setsockopt(ip6, socket.IPV6_RECVHOPLIMIT, 1)
        group = ALL_ROUTERS.packed + struct.pack("@I", ifindex)
        sock.setsockopt(ip6, socket.IPV6_JOIN_GROUP, group)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise RAUnavailable(f"cannot set up the ICMPv6 socket: {exc.strerror or exc}") from None
    blocked = [0xFFFFFFFF] * 8  # Linux: a set bit blocks that type
    blocked[ROUTER_SOLICITATION >> 5] &= ~(1 << (ROUTER_SOLICITATION & 31))
    try:
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
        filtered = True
    except OSError:
        filtered = False
    return Link(sock, ifindex, interface_mac(interface), filtered)


# ---- the endpoint -------------------------------------------------------------------------------
LINK_LOCAL_RETRY = 1.0  # seconds between tries while the link-local address is tentative
LINK_LOCAL_PATIENCE = 30.0  # then a warning that there is still none
READ_MAX = 64


class RouterAdvertiser:
    """Sends RAs on one interface while ``dhcp.router_advertisement`` says so; follows reloads."""

    def __init__(
        self,
        holder: ModelHolder,
        interface: str,
        *,
        opener: Callable[[str], Link] = open_link,
        source_of: Callable[[str], IPv6Address | None] = link_local_address,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.holder = holder
        self.interface = interface
        self.settings = holder.model.dhcp.router_advertisement
        self.counters: Counter[str] = Counter()
        self._opener = opener
        self._source_of = source_of
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (RFC 4861's interval jitter, not a secret)
        self._link: Link | None = None
        self._payload = b""
        self._task: asyncio.Task[None] | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self._last_multicast = -math.inf
        self._retired: set[asyncio.Task[None]] = set()
        self._send_failing = False
        self._stopped = False

    @property
    def running(self) -> bool:
        return self._link is not None

    def start(self) -> None:
        self.holder.subscribe(self._on_reload)
        self._apply(self.settings)

    async def stop(self) -> None:
        self._stopped = True
        self._close()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    def _on_reload(self, old: ClusterModel, new: ClusterModel) -> None:
        settings = new.dhcp.router_advertisement
        if self._stopped or (settings == self.settings and (self.running or not settings.enabled)):
            return
        self._apply(settings)

    def _apply(self, settings: RouterAdvertisement) -> None:
        self._close()
        self.settings = settings
        fields: dict[str, object] = {"service": "ra", "interface": self.interface}
        if not settings.enabled:
            log.info("router advertisements are off", extra={"fields": fields})
            return
        try:
            link = self._opener(self.interface)
        except RAUnavailable as exc:
            log.warning("no router advertisements: %s", exc, extra={"fields": fields})
            return
        loop = asyncio.get_running_loop()
        self._link = link
        ad = Advertisement(link.mac, settings.prefix)
        self._payload = serialize_advertisement(ad)
        self._last_multicast = -math.inf
        loop.add_reader(link.sock.fileno(), self._readable)
        self._task = loop.create_task(self._advertise())
        fields["prefix"] = str(settings.prefix) if settings.prefix is not None else "none"
        fields["interval"] = settings.interval
        log.info("advertising", extra={"fields": fields})

    def _close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        if self._task is not None:
            self._task.cancel()
            self._retired.add(self._task)
            self._task.add_done_callback(self._retired.discard)
            self._task = None
        if self._link is not None:
            asyncio.get_running_loop().remove_reader(self._link.sock.fileno())
            self._link.sock.close()
            self._link = None

    async def _advertise(self) -> None:
        """Up to three initial RAs at most 16 s apart, then one every 75–100 % of interval."""
        initial = MAX_INITIAL_RTR_ADVERTISEMENTS
        waiting_since: float | None = None
        while True:
            if not self._send(ALL_NODES, "unsolicited"):
                now = self._clock()
                if waiting_since is None:
                    waiting_since = now
                    log.info(
                        "waiting for a usable link-local address (duplicate address detection)",
                        extra={"fields": {"interface": self.interface}},
                    )
                elif now - waiting_since >= LINK_LOCAL_PATIENCE:
                    log.warning(
                        "still no usable IPv6 link-local address; RAs wait for one",
                        extra={"fields": {"interface": self.interface}},
                    )
                    waiting_since = math.inf
                await asyncio.sleep(LINK_LOCAL_RETRY)
                continue
            waiting_since = None
            delay = self._rng.uniform(MIN_INTERVAL_FACTOR, 1.0) * self.settings.interval
            if initial > 1:
                initial -= 1
                delay = min(delay, MAX_INITIAL_RTR_ADVERT_INTERVAL)
            await asyncio.sleep(delay)

    def _readable(self) -> None:
        link = self._link
        if link is None:
            return
        for _ in range(READ_MAX):
            try:
                data, ancdata, _flags, peer = link.sock.recvmsg(2048, socket.CMSG_SPACE(4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["receive_errors"] += 1
                log.debug("receive failed: %s", exc)
                return
            hop_limit = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                    hop_limit = struct.unpack("@i", value[:4])[0] if len(value) >= 4 else None
            if data[:1] != bytes([ROUTER_SOLICITATION]) and not link.filtered:
                continue  # without ICMP6_FILTER every ICMPv6 message arrives: not ours
            self.solicited(data, IPv6Address(peer[0].partition("%")[0]), hop_limit)

    def solicited(self, data: bytes, source: IPv6Address, hop_limit: int | None) -> None:
        """One received RS: validate, count, answer at once (multicast ones rate-limited)."""
        try:
            rs = parse_solicitation(data, source, hop_limit)
        except MalformedSolicitation as exc:
            self.counters[f"dropped_{exc.reason}"] += 1
            log.debug("RS dropped: %s", exc, extra={"fields": {"peer": str(source)}})
            return
        self.counters["solicitations"] += 1
        unicast = rs.source != UNSPECIFIED
        fields: dict[str, object] = {"peer": str(source)}
        if rs.source_lladdr is not None and len(rs.source_lladdr) == 6:
            fields["mac"] = ":".join(f"{b:02x}" for b in rs.source_lladdr)
        fields["answer"] = "unicast" if unicast else "multicast"
        log.info("RS", extra={"fields": fields})
        if unicast:
            self._send(rs.source, "solicited")
            return
        wait = self._last_multicast + MIN_DELAY_BETWEEN_RAS - self._clock()
        if wait <= 0:
            self._send(ALL_NODES, "solicited")
        elif self._deferred is None:
            loop = asyncio.get_running_loop()
            self._deferred = loop.call_later(wait, self._send_deferred)
        else:
            self.counters["solicitations_coalesced"] += 1  # the pending RA answers it too

    def _send_deferred(self) -> None:
        self._deferred = None
        self._send(ALL_NODES, "solicited")

    def _send(self, destination: IPv6Address, kind: str) -> bool:
        """One RA from the link-local address; False when there is none usable yet."""
        link = self._link
        source = self._source_of(self.interface)
        if link is None or source is None:
            return False
        info = source.packed + struct.pack("@I", link.ifindex)
        cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
        try:
            link.sock.sendmsg([self._payload], cmsg, 0, (str(destination), 0, 0, link.ifindex))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
                return False  # the address went tentative again (link flap, DAD)
            self.counters["send_errors"] += 1
            if not self._send_failing:
                log.warning(
                    "cannot send a router advertisement: %s",
                    exc.strerror or exc,
                    extra={"fields": {"interface": self.interface, "to": str(destination)}},
                )
            self._send_failing = True
            return True
        self._send_failing = False
        self.counters[f"sent_{kind}"] += 1
        if destination.is_multicast:
            self._last_multicast = self._clock()
            if self._deferred is not None:  # this one answers the waiting solicitation
                self._deferred.cancel()
                self._deferred = None
        log.debug("RA %s", kind, extra={"fields": {"to": str(destination), "from": str(source)}})
        return True
