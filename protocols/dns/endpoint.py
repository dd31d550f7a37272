"""The asyncio DNS endpoints on port 53: UDP read with ``add_reader`` + ``recvfrom`` (the fast
path answers inline, without a task or a future), forwarded queries as bounded tasks, and TCP
with the two-byte length prefix. Nothing raised while handling a datagram stops the endpoint.
TCP connections are bounded (``tcp.TCPTable``): an idle timeout, a cap per source and in total,
the oldest idle connection closed to make room for a newcomer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import Counter

from ..throttle import LogThrottle
from .server import Forward, Resolver, header_only
from .tcp import TCP_IDLE, TCPTable

__all__ = ["DNSEndpoint", "open_udp"]

READ_BATCH = 64
RECV_SIZE = 4096
MAX_FORWARDS = 1024  # forwarded queries in flight; beyond, a query gets no answer (it retries)

# Counted TCP events (the ``counters`` key) and what the log line says of them.
_TCP_EVENTS = {
    "tcp_idle_timeout": f"a TCP connection sent no query within {TCP_IDLE:g} s: closed",
    "tcp_write_timeout": f"a TCP client read no answer within {TCP_IDLE:g} s: closed",
    "tcp_evicted": "TCP connections full: the oldest idle one closed for a newcomer",
    "tcp_refused": "TCP connections full and all busy: a newcomer refused",
}


def open_udp(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class DNSEndpoint:
    def __init__(
        self,
        udp: socket.socket,
        resolver: Resolver,
        *,
        counters: Counter[str],
        logger: logging.Logger,
    ) -> None:
        self._udp = udp
        self.resolver = resolver
        self.counters = counters
        self._log = logger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp: asyncio.Server | None = None
        self._tcp_table: TCPTable[asyncio.StreamWriter] = TCPTable()
        self._throttle = LogThrottle()

    async def start(self, tcp: socket.socket) -> None:
        """Serve UDP on the socket given at construction and TCP on ``tcp`` (bound, not yet
        listening)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._udp.fileno(), self._on_datagrams)
        self._tcp = await asyncio.start_server(self._on_tcp, sock=tcp, limit=1 << 17)

    # --- UDP ----------------------------------------------------------------------------------

    def _on_datagrams(self) -> None:
        sock = self._udp
        fast = self.resolver.fast
        clock = self.resolver.clock
        for _ in range(READ_BATCH):
            try:
                data, client = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._log.debug("dns: recvfrom: %s", exc)
                return
            try:
                response = fast(data, client[0], clock())
                if response is None:
                    self._slow(data, client)
                else:
                    sock.sendto(response, client)
            except OSError as exc:
                self._log.debug("dns: send to %s failed: %s", client, exc)
            except Exception:
                self.counters["internal_errors"] += 1
                self._log.exception("dns: unexpected error answering %s", client[0])
                failure = header_only(data, 2)  # SERVFAIL rather than silence
                if failure is not None:
                    with contextlib.suppress(OSError):
                        sock.sendto(failure, client)

    def _slow(self, data: bytes, client: tuple[str, int]) -> None:
        result = self.resolver.respond(data, client[0], tcp=False)
        if result is None:
            return
        if isinstance(result, Forward):
            if len(self._tasks) >= MAX_FORWARDS:
                self.counters["forward_overload"] += 1
                return
            task = asyncio.ensure_future(self._forward_udp(result, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._udp.sendto(result, client)

    async def _forward_udp(self, job: Forward, client: tuple[str, int]) -> None:
        try:
            response = await self.resolver.forward(job)
            self._udp.sendto(response, client)
        except OSError as exc:
            self._log.debug("dns: send to %s failed: %s", client, exc)
        except Exception:
            self.counters["internal_errors"] += 1
            self._log.exception("dns: forwarding for %s failed", client[0])

    # --- TCP ----------------------------------------------------------------------------------

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        admission = self._tcp_table.admit(writer, client)
        for old in admission.evicted:
            self._tcp_event("tcp_evicted", client)
            old.close()  # its reader sees the end of the stream; its handler cleans up
        if not admission.admitted:
            self._tcp_event("tcp_refused", client)
            writer.close()
            return
        try:
            await self._serve_tcp(reader, writer, client)
        except ConnectionError:
            return
        except Exception:
            self.counters["internal_errors"] += 1
            self._log.exception("dns: unexpected error on TCP from %s", client)
        finally:
            self._tcp_table.drop(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        """Answer the queries of one connection in turn until it ends, idles or is evicted."""
        while True:
            try:
                prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                (length,) = struct.unpack("!H", prefix)
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
            except TimeoutError:
                self._tcp_event("tcp_idle_timeout", client)
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self._tcp_table.busy(writer)
            result = self.resolver.respond(data, client, tcp=True)
            if isinstance(result, Forward):
                result = await self.resolver.forward(result)
            if result is None:
                return
            writer.write(struct.pack("!H", len(result)) + result)
            try:
                await asyncio.wait_for(writer.drain(), TCP_IDLE)
            except TimeoutError:
                self._tcp_event("tcp_write_timeout", client)
                return
            self._tcp_table.idle(writer)

    def _tcp_event(self, event: str, client: str) -> None:
        """Count a TCP bound hit; log it at most once a minute per kind."""
        self.counters[event] += 1
        if self._throttle.allow(event, time.monotonic()):
            self._log.warning(
                "dns: %s (last from %s); further ones are only counted for a minute",
                _TCP_EVENTS[event],
                client,
                extra={"fields": {"event": event, "peer": client}},
            )

    # --- shutdown -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._udp.fileno())
        self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
