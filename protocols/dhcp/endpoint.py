"""The DHCP endpoint: one UDP socket on one interface, decode → server → encode → send.

Reads with ``recvmsg`` straight from the loop's reader callback (draining what is queued) so
that the interface each datagram came in on is known (IP_PKTINFO). Replies that grant a lease
are held until the backend's lease writes are committed — one commit for every ACK that piled
up meanwhile — and only then sent. A reply the kernel cannot take now (EAGAIN) waits in a
bounded queue until the socket is writable; beyond the bound it is dropped and counted.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address

from protocols.errors import MalformedPacket

from ..throttle import LogThrottle
from ..udp import DROPS, DropWatch, tune_receive
from .packet import Packet, ethernet_ok, parse, reply_size, serialize
from .server import BROADCAST, SERVER_PORT, Destination, DHCPServer, Outcome

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SIOCSARP = 0x8955
ATF_COM = 0x02
ARPHRD_ETHER = 1
MAX_DATAGRAM = 4096
READ_MAX = 256  # datagrams read per wake-up before answering them
DISCOVER_BUDGET = 48  # DISCOVERs answered per wake-up when a backlog is waiting
OVERLOAD_WARN_EVERY = 60.0  # seconds between two "overloaded" warnings
SEND_QUEUE_MAX = 4096  # replies waiting for the socket to be writable; beyond: dropped
_PKTINFO = struct.Struct("=i4s4s")
_ANCILLARY = socket.CMSG_SPACE(_PKTINFO.size) + socket.CMSG_SPACE(DROPS.size)


def open_socket(interface: str, port: int) -> socket.socket:
    """A UDP socket on ``port`` that sees broadcasts and traffic of ``interface`` only. No
    SO_REUSEADDR: another DHCP server on this port must make the bind fail, not share it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        tune_receive(sock)
        sock.bind(("0.0.0.0", port))  # noqa: S104 (DHCP needs broadcasts: the socket is bound to one device)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class DHCPEndpoint:
    """One UDP socket of the DHCP server: reads requests, asks the server, sends replies."""

    def __init__(
        self,
        server: DHCPServer,
        sock: socket.socket,
        *,
        interface: str,
        port: int,
        flush: Callable[[], Awaitable[None]],
        observe: Callable[[Outcome, Packet], None],
        counters: Counter[str],
        logger: logging.Logger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.sock = sock
        self.interface = interface
        self.ifindex = socket.if_nametoindex(interface)
        self.port = port
        self._flush = flush
        self._observe = observe
        self.counters = counters
        self.log = logger
        self._clock = clock
        self._held: list[tuple[bytes, Destination]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arp_failed = False
        self._warnings = LogThrottle(OVERLOAD_WARN_EVERY)  # overload, send queue full
        self._shed_since_warning = 0
        self._drops = DropWatch(counters, logger, f"dhcp {interface}:{port}")
        self._waiting: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._queue_max = SEND_QUEUE_MAX
        self._writer = False
        self._dropped_since_warning = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    async def close(self) -> None:
        """Stop reading; send what is waiting for its commit; close the socket."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        if self._flusher is not None:
            await self._flusher
        if self._waiting:
            self._writable()  # what the kernel takes now; the rest is lost with the socket
        self._stop_writer()
        self.sock.close()

    def _readable(self) -> None:
        """Read what is queued, then answer. Overload policy: exchanges already begun come
        first — every REQUEST (and RELEASE, DECLINE, INFORM) is answered; when more than a
        batch was waiting, only the newest ``DISCOVER_BUDGET`` DISCOVERs are (the older ones
        are shed and counted: their clients retry), so the socket is drained quickly and
        REQUESTs never drown in a queue of DISCOVERs."""
        batch: list[tuple[bytes, tuple[str, int]]] = []
        for _ in range(READ_MAX):
            try:
                data, ancdata, _flags, peer = self.sock.recvmsg(MAX_DATAGRAM, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.counters["receive_errors"] += 1
                self.log.debug("receive failed: %s", exc)
                break
            self._drops.update(ancdata)
            if self._arrived_elsewhere(ancdata):
                self.counters["dropped_wrong_interface"] += 1
                continue
            batch.append((data, peer))
        discovers = []
        for item in batch:
            if item[0].find(_DISCOVER, _OPTIONS) >= 0:
                discovers.append(item)
            else:
                self._datagram(*item)
        if len(batch) == READ_MAX and len(discovers) > DISCOVER_BUDGET:
            shed = len(discovers) - DISCOVER_BUDGET
            self.counters["shed_discovers"] += shed
            self._note_overload(shed)
            discovers = discovers[shed:]
        for item in discovers:
            self._datagram(*item)

    def _note_overload(self, shed: int) -> None:
        self._shed_since_warning += shed
        if self._warnings.allow("overload", time.monotonic()):
            self.log.warning(
                "overloaded: %d DISCOVERs shed since the last warning (clients retry)",
                self._shed_since_warning,
            )
            self._shed_since_warning = 0

    def _arrived_elsewhere(self, ancdata: list[tuple[int, int, bytes]]) -> bool:
        for level, kind, payload in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= _PKTINFO.size:
                return bool(_PKTINFO.unpack_from(payload)[0] != self.ifindex)
        return False

    def _datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        self.counters["received"] += 1
        try:
            request = parse(data)
            if not ethernet_ok(request):
                raise MalformedPacket(f"Ethernet address of {len(request.chaddr)} bytes, not 6")
            source = None if self.port == SERVER_PORT else (IPv4Address(peer[0]), peer[1])
            outcome = self.server.handle(request, self._clock(), self.port, source)
        except MalformedPacket as exc:
            self.counters["malformed"] += 1
            self.log.debug("malformed packet from %s:%s dropped: %s", peer[0], peer[1], exc)
            return
        except Exception:
            self.counters["errors"] += 1
            self.log.exception("error handling a packet from %s:%s", peer[0], peer[1])
            return
        if outcome is None:
            self.counters["ignored"] += 1
            return
        self.counters[f"in_{outcome.request.name.lower()}"] += 1
        try:
            self._observe(outcome, request)
        except Exception:
            self.log.exception("observer failed")
        if outcome.reply is None or outcome.destination is None:
            return
        try:
            wire = serialize(outcome.reply, reply_size(request))
        except (ValueError, MalformedPacket) as exc:
            self.counters["errors"] += 1
            self.log.warning("reply to %s not sent: %s", request.mac, exc)
            return
        kind = outcome.reply_type
        self.counters[f"out_{kind.name.lower() if kind else 'reply'}"] += 1
        if outcome.durable:
            self._hold(wire, outcome.destination)
        else:
            self._send(wire, outcome.destination)

    def _hold(self, wire: bytes, destination: Destination) -> None:
        self._held.append((wire, destination))
        if self._flusher is None and self._loop is not None:
            self._flusher = self._loop.create_task(self._commit_and_send())

    async def _commit_and_send(self) -> None:
        try:
            while self._held:
                batch, self._held = self._held, []
                try:
                    await self._flush()
                except Exception:
                    self.counters["commit_failed"] += len(batch)
                    self.log.exception("lease commit failed: %d replies not sent", len(batch))
                    continue
                for wire, destination in batch:
                    self._send(wire, destination)
        finally:
            self._flusher = None

    def _send(self, wire: bytes, destination: Destination) -> None:
        address = destination.address
        if destination.mac is not None and not self._teach_arp(address, destination.mac):
            address = BROADCAST
        target = (str(address), destination.port)
        if self._waiting:
            self._enqueue(wire, target)  # keep the order: replies already waiting go first
            return
        self._send_now(wire, target)

    def _send_now(self, wire: bytes, target: tuple[str, int]) -> bool:
        """Send one reply; False when the kernel has no room for it now (it is queued)."""
        try:
            self.sock.sendto(wire, target)
        except (BlockingIOError, InterruptedError):
            self._enqueue(wire, target)
            return False
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.log.warning("send to %s:%s failed: %s", target[0], target[1], exc)
        return True

    def _enqueue(self, wire: bytes, target: tuple[str, int]) -> None:
        """Keep a reply until the socket is writable; drop it (counted) when the queue is full."""
        if len(self._waiting) >= self._queue_max:
            self.counters["send_queue_full"] += 1
            self._note_dropped()
            return
        self._waiting.append((wire, target))
        self.counters["send_waited"] += 1
        if not self._writer and self._loop is not None:
            self._loop.add_writer(self.sock.fileno(), self._writable)
            self._writer = True

    def _writable(self) -> None:
        """Send the waiting replies, oldest first, until the kernel is full again."""
        waiting = self._waiting
        while waiting:
            wire, target = waiting.popleft()
            try:
                self.sock.sendto(wire, target)
            except (BlockingIOError, InterruptedError):
                waiting.appendleft((wire, target))
                return
            except OSError as exc:
                self.counters["send_errors"] += 1
                self.log.debug("send to %s:%s failed: %s", target[0], target[1], exc)
        self._stop_writer()

    def _stop_writer(self) -> None:
        if self._writer and self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())
        self._writer = False

    def _note_dropped(self) -> None:
        self._dropped_since_warning += 1
        if self._warnings.allow("send_queue_full", time.monotonic()):
            self.log.warning(
                "send queue full (%d replies waiting): %d replies dropped since the last warning",
                len(self._waiting),
                self._dropped_since_warning,
            )
            self._dropped_since_warning = 0

    def _teach_arp(self, address: IPv4Address, mac: bytes) -> bool:
        """Tell the kernel the client's MAC for the address it is being offered, so the reply
        can be unicast before the client can answer ARP (what dnsmasq and ISC dhcpd do)."""
        if len(mac) != 6:
            return False
        request = struct.pack(
            "=H2s4s8sH14si16s16s",
            socket.AF_INET,
            b"",
            address.packed,
            b"",
            ARPHRD_ETHER,
            mac,
            ATF_COM,
            b"",
            self.interface.encode(),
        )
        try:
            fcntl.ioctl(self.sock.fileno(), SIOCSARP, request)
        except OSError as exc:
            if not self._arp_failed:
                self.log.warning("cannot set ARP entries (%s): unicast replies are broadcast", exc)
                self._arp_failed = True
            return False
        return True


_DISCOVER = bytes((53, 1, 1))  # option 53 = DISCOVER, looked for without decoding
_OPTIONS = 240  # where the options start (after the BOOTP header and the magic cookie)
