"""Forwarding to upstream resolvers: the names the cluster's own zone does not answer.

One ``Forwarder`` per daemon. A lookup is answered from the ``ResponseCache`` when it can be;
otherwise identical concurrent lookups share one upstream query. Each attempt uses a fresh
UDP socket connected to the upstream (so the kernel picks a random source port and only that
upstream's datagrams arrive) and a random 16-bit ID; only a reply carrying that ID and the
same question counts, anything else is ignored until the attempt times out. A truncated
reply is asked again over TCP within the same deadline.

Upstreams are tried in order, the last one that answered first. One that times out (or is
unreachable) is skipped for ``down_for`` seconds while others remain; when all are skipped
they are all asked at once, so recovery is noticed and the caller still hears back within
one timeout. The log gets one warning when an upstream stops answering and one line when it
answers again, never a line per query; everything else is a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from ..errors import MalformedPacket
from .cache import (
    HEADER,
    OPCODE_MASK,
    QR,
    ParsedResponse,
    ResponseCache,
    encode_question,
    parse_response,
    question_key,
)

__all__ = ["Forwarder", "Upstream", "build_query", "is_reply_to"]

Upstream = tuple[str, int]  # (address, port)

RD = 0x0100
CD = 0x0010
SERVFAIL = 2
REFUSED = 5
TYPE_OPT = 41
RECV_SIZE = 65535
TCP_LENGTH = struct.Struct("!H")
OPT_FIXED = struct.Struct("!BHHIH")  # root name, type, class (payload size), ttl, rdlength

_Flight = tuple[bytes, bool, bool]  # question key, rd, cd


def build_query(question: bytes, ident: int, *, rd: bool, cd: bool, edns_size: int) -> bytes:
    """A query message: header with ``ident`` and the RD/CD bits, ``question`` (wire form),
    and an EDNS0 OPT record advertising ``edns_size`` bytes."""
    flags = (RD if rd else 0) | (CD if cd else 0)
    opt = OPT_FIXED.pack(0, TYPE_OPT, edns_size, 0, 0)
    return HEADER.pack(ident, flags, 1, 0, 0, 1) + question + opt


def is_reply_to(reply: bytes, ident: int, question: bytes) -> bool:
    """Whether ``reply`` is a response with ID ``ident`` to exactly ``question`` (the name
    compared without regard to ASCII case)."""
    end = HEADER.size + len(question)
    if len(reply) < end:
        return False
    reply_id, flags, qdcount = struct.unpack_from("!HHH", reply)
    return (
        reply_id == ident
        and flags & (QR | OPCODE_MASK) == QR
        and qdcount == 1
        and reply[HEADER.size : end - 4].lower() == question[:-4].lower()
        and reply[end - 4 : end] == question[-4:]
    )


@dataclass(slots=True)
class _State:
    """What is known of one upstream: whether it answered last time, and until when it is
    skipped after failing to."""

    answering: bool = True
    down_until: float = 0.0


def _show(upstream: Upstream) -> str:
    address, port = upstream
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class _Failed(Exception):
    """An upstream answered, but not usefully (SERVFAIL, REFUSED, malformed, TCP failed)."""


class Forwarder:
    """Resolves questions through ``upstreams``; see the module docstring for the policy."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        cache: ResponseCache,
        counters: Counter[str],
        logger: logging.Logger,
        timeout: float = 1.0,
        down_for: float = 5.0,
        edns_size: int = 1232,
    ) -> None:
        self._cache = cache
        self.counters = counters
        self._log = logger
        self._timeout = timeout
        self._down_for = down_for
        self._edns_size = edns_size
        self._upstreams: tuple[Upstream, ...] = ()
        self._state: dict[Upstream, _State] = {}
        self._preferred: Upstream | None = None
        self._inflight: dict[_Flight, asyncio.Task[bytes | None]] = {}
        self._closed = False
        self.use(upstreams)

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        return self._upstreams

    def use(self, upstreams: Sequence[Upstream]) -> None:
        """Forward to ``upstreams`` from now on (a reload). What is known of upstreams kept from
        the old list stays; the rest is dropped. ``ValueError`` for an address that is not an
        IP address or a port outside 1–65535 (nothing changes then)."""
        new: dict[Upstream, None] = {}
        for address, port in upstreams:
            ipaddress.ip_address(address)
            if not 0 < port < 65536:
                raise ValueError(f"upstream port out of range: {port}")
            new[(address, port)] = None
        self._upstreams = tuple(new)
        self._state = {u: self._state.get(u) or _State() for u in self._upstreams}
        if self._preferred not in self._state:
            self._preferred = None

    async def resolve(
        self, qname: str, qtype: int, qclass: int, *, rd: bool = True, cd: bool = False
    ) -> bytes | None:
        """The answer as wire bytes with ID 0 and no OPT record, flags as the upstream set
        them; None when there is no upstream or none answered usefully (answer SERVFAIL).
        Raises ``ValueError`` for a ``qname`` that is not a domain name; never for what the
        network or an upstream does."""
        key = question_key(qname, qtype, qclass)
        cached = self._cache.get(key, time.monotonic())
        if cached is not None:
            self.counters["cache_hits"] += 1
            return cached
        if not self._upstreams or self._closed:
            self.counters["servfail"] += 1
            return None
        flight = (key, rd, cd)
        task = self._inflight.get(flight)
        if task is None:
            question = encode_question(qname, qtype, qclass)
            task = asyncio.get_running_loop().create_task(self._lookup(question, key, rd, cd))
            self._inflight[flight] = task
            task.add_done_callback(partial(self._landed, flight))
        else:
            self.counters["coalesced"] += 1
        try:
            # Shielded: one waiter giving up must not cancel the lookup the others share.
            answer = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                answer = None  # the lookup was cancelled by close(), not this caller
            else:
                raise
        if answer is None:
            self.counters["servfail"] += 1
        return answer

    def _landed(self, flight: _Flight, task: asyncio.Task[bytes | None]) -> None:
        if self._inflight.get(flight) is task:
            del self._inflight[flight]

    async def close(self) -> None:
        """Cancel the lookups in flight (their waiters get None) and close their sockets."""
        self._closed = True
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one lookup ---------------------------------------------------------------------------

    async def _lookup(self, question: bytes, key: bytes, rd: bool, cd: bool) -> bytes | None:
        self.counters["forwarded"] += 1
        try:
            answer = await self._ask(question, rd, cd)
        except Exception:  # a bug must cost one answer, not the endpoint
            self.counters["internal_errors"] += 1
            self._log.exception("dns: forwarding %r failed unexpectedly", question)
            return None
        if answer is None:
            return None
        if rd and not cd:  # a CD or non-recursive answer is not what other clients asked for
            self._cache.store(key, answer, time.monotonic())
        return answer.wire

    async def _ask(self, question: bytes, rd: bool, cd: bool) -> ParsedResponse | None:
        order = list(self._upstreams)
        preferred = self._preferred
        if preferred in order:
            order.remove(preferred)
            order.insert(0, preferred)
        now = time.monotonic()
        up = [u for u in order if (s := self._state.get(u)) is not None and s.down_until <= now]
        if up:
            for upstream in up:
                answer = await self._attempt(upstream, question, rd, cd)
                if answer is not None:
                    return answer
            return None
        # Every upstream is resting: ask them all at once, so a recovered one is noticed and
        # the caller still hears back within one timeout.
        attempts = [asyncio.ensure_future(self._attempt(u, question, rd, cd)) for u in order]
        try:
            for attempt in asyncio.as_completed(attempts):
                answer = await attempt
                if answer is not None:
                    return answer
            return None
        finally:
            for attempt in attempts:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    async def _attempt(
        self, upstream: Upstream, question: bytes, rd: bool, cd: bool
    ) -> ParsedResponse | None:
        """Ask one upstream; its answer when useful, else None (the reason counted)."""
        ident = secrets.randbits(16)
        query = build_query(question, ident, rd=rd, cd=cd, edns_size=self._edns_size)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                reply = await self._exchange_udp(upstream, query, ident, question)
        except TimeoutError:
            self.counters["upstream_timeouts"] += 1
            self._stopped_answering(upstream, "timed out")
            return None
        except OSError as exc:  # unreachable, refused (ICMP), no route
            self.counters["upstream_errors"] += 1
            self._stopped_answering(upstream, exc.strerror or type(exc).__name__)
            return None
        self._answered(upstream)
        try:
            answer = parse_response(reply)
            if answer.truncated:
                async with asyncio.timeout_at(deadline):
                    answer = parse_response(
                        await self._exchange_tcp(upstream, query, ident, question)
                    )
            if answer.rcode in (SERVFAIL, REFUSED):
                raise _Failed(f"rcode {answer.rcode}")
        except (MalformedPacket, _Failed, OSError, EOFError) as exc:  # TimeoutError included
            self.counters["upstream_errors"] += 1
            self._log.debug("dns: unusable answer from %s: %s", _show(upstream), exc)
            return None
        if upstream in self._state:
            self._preferred = upstream
        return answer

    async def _exchange_udp(
        self, upstream: Upstream, query: bytes, ident: int, question: bytes
    ) -> bytes:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(upstream)  # binds a kernel-chosen (random) ephemeral port
            sock.send(query)
            while True:
                reply = await loop.sock_recv(sock, RECV_SIZE)
                if is_reply_to(reply, ident, question):
                    return reply
                self.counters["upstream_mismatched"] += 1

    async def _exchange_tcp(
        self, upstream: Upstream, query: bytes, ident: int, question: bytes
    ) -> bytes:
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(TCP_LENGTH.pack(len(query)) + query)
            await writer.drain()
            while True:
                (length,) = TCP_LENGTH.unpack(await reader.readexactly(TCP_LENGTH.size))
                reply = await reader.readexactly(length)
                if is_reply_to(reply, ident, question):
                    return reply
                self.counters["upstream_mismatched"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # --- upstream state -----------------------------------------------------------------------

    def _stopped_answering(self, upstream: Upstream, reason: str) -> None:
        state = self._state.get(upstream)
        if state is None:  # dropped by use() meanwhile
            return
        state.down_until = time.monotonic() + self._down_for
        if self._preferred == upstream:
            self._preferred = None
        if state.answering:
            state.answering = False
            self._log.warning(
                "dns: upstream %s stopped answering (%s); skipping it while others answer",
                _show(upstream),
                reason,
            )

    def _answered(self, upstream: Upstream) -> None:
        state = self._state.get(upstream)
        if state is None:
            return
        state.down_until = 0.0
        if not state.answering:
            state.answering = True
            self._log.info("dns: upstream %s is answering again", _show(upstream))
