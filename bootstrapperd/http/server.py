"""The HTTP listener's connection limits, below aiohttp: a cap on open connections per client
address and in total (beyond, a newcomer is closed at once), a deadline for a request's head
(request line and headers) to arrive, and a bound on its size. A response in progress has no
deadline: a GiB image is served at whatever speed the client reads it.

Each accepted connection's protocol is a ``GuardedProtocol`` wrapped around aiohttp's own
request handler: it sees the bytes as they arrive, watches for the blank line that ends a head,
and closes the connection when the head is late or too large. The ``request_done`` middleware
tells it when a request has been handled, so that the next bytes start the next head (a body
never counts as one). An idle keep-alive connection is closed by aiohttp itself after
``IDLE_TIMEOUT`` (its ``keepalive_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from protocols.throttle import LogThrottle

__all__ = [
    "HANDLER_ARGS",
    "HEAD_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "MAX_PER_CLIENT",
    "ConnectionGuard",
    "ConnectionLimits",
    "GuardedProtocol",
    "GuardedSite",
    "request_done",
]

log = logging.getLogger("bootstrapperd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEAD_TIMEOUT = 10.0  # seconds for a request's head to arrive, from its first byte or the connect
IDLE_TIMEOUT = 15.0  # seconds a keep-alive connection may wait for its next request
MAX_CONNECTIONS = 1024  # open connections in total
MAX_PER_CLIENT = 32  # open connections from one client address
MAX_HEAD = 16 << 10  # bytes of one request's head (request line and headers)
MAX_LINE = 8190  # bytes of the request line or of one header line (aiohttp answers 400)
MAX_HEADERS = 64  # header fields of one request (aiohttp answers 400)
LOG_INTERVAL = 60.0  # seconds between two log lines of one kind of event

# aiohttp's own limits, given to each request handler (``web.Application(handler_args=...)``).
HANDLER_ARGS: dict[str, Any] = {
    "keepalive_timeout": IDLE_TIMEOUT,
    "max_line_size": MAX_LINE,
    "max_field_size": MAX_LINE,
    "max_headers": MAX_HEADERS,
}

# Counted events (``ConnectionGuard.counters``, /metrics ``bootstrapperd_http_events``) and
# what the log line says of them.
EVENTS = {
    "refused_per_client": f"a client has {MAX_PER_CLIENT} connections open: a newcomer closed",
    "refused_total": f"{MAX_CONNECTIONS} connections open: a newcomer closed",
    "head_timeout": f"a request's head did not arrive within {HEAD_TIMEOUT:g} s: closed",
    "head_too_large": f"a request's head passed {MAX_HEAD} bytes: closed",
    "bad_request": "a request aiohttp's parser refused (malformed): answered 400",
}


class RequestErrorLog(logging.Logger):
    """The logger aiohttp's request handlers log to (``handler_args["logger"]``). A request
    its parser refuses is a hostile or broken client's, not the server's error: counted
    (``bad_request``) and logged once a minute without a traceback, instead of a traceback
    each. Everything else goes to ``aiohttp.server`` as before."""

    def __init__(self, guard: ConnectionGuard) -> None:
        super().__init__("bootstrapperd.http.requests")
        self._guard = guard
        self._server = logging.getLogger("aiohttp.server")

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            self._guard.hit("bad_request", str(args[0]) if args else "?")
            return
        self._server.exception(msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._server.debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._server.info(msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._server.warning(msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._server.error(msg, *args, **kwargs)


class ConnectionLimits:
    """Open connections by client address, and whether one more may open."""

    def __init__(self, total: int = MAX_CONNECTIONS, per_client: int = MAX_PER_CLIENT) -> None:
        self.total = total
        self.per_client = per_client
        self._open: Counter[str] = Counter()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def from_client(self, client: str) -> int:
        """How many connections ``client`` has open."""
        return self._open[client]

    def admit(self, client: str) -> str | None:
        """Take a connection from ``client``; None when taken, else the event that refused it."""
        if self._open[client] >= self.per_client:
            return "refused_per_client"
        if self._count >= self.total:
            return "refused_total"
        self._open[client] += 1
        self._count += 1
        return None

    def release(self, client: str) -> None:
        """A connection of ``client`` (admitted) is closed."""
        self._open[client] -= 1
        self._count -= 1
        if self._open[client] <= 0:
            del self._open[client]


class ConnectionGuard:
    """The listener's limits and counters: makes a ``GuardedProtocol`` for each connection."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self.counters: Counter[str] = Counter()
        self._throttle = LogThrottle(LOG_INTERVAL)
        self.request_log = RequestErrorLog(self)

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], GuardedProtocol]:
        """A protocol factory for ``loop.create_server``, wrapping ``inner``'s protocols."""
        return lambda: GuardedProtocol(self, inner)

    def hit(self, event: str, client: str) -> None:
        """Count a bound hit; log it at most once a minute per kind."""
        self.counters[event] += 1
        if self._throttle.allow(event, time.monotonic()):
            log.warning(
                "%s (last from %s); further ones are only counted for a minute",
                EVENTS[event],
                client,
                extra={"fields": {"event": event, "client": client}},
            )


class GuardedProtocol(asyncio.Protocol):
    """One connection: admitted under the limits, its request heads timed and measured, every
    event handed on to aiohttp's request handler (made only once the connection is admitted)."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # bytes that arrive now belong to a request's head
        self._head_size = 0
        self._tail = b""  # the last bytes seen of the head (its end may span two reads)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        refused = self._guard.limits.admit(client)
        if refused is not None:
            self._guard.hit(refused, client)
            self._transport.abort()
            return
        self._client = client
        self._inner = self._make_inner()
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._in_head and not self._watch_head(data):
            return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._inner is None:
            return
        self._guard.limits.release(self._client)
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def request_done(self) -> None:
        """A request was handled: the next bytes to arrive start the next head."""
        self._in_head = True
        self._head_size = 0
        self._tail = b""

    def _watch_head(self, data: bytes) -> bool:
        """Measure a head's bytes and look for its end; False when the connection is closed
        for a head too large."""
        if self._deadline is None:
            self._arm()  # the first byte of a later request starts its clock
        seen = self._tail + data
        end = min((i for i in (seen.find(b"\n\r\n"), seen.find(b"\n\n")) if i >= 0), default=-1)
        size = self._head_size + (len(data) if end < 0 else max(0, end - len(self._tail)))
        if size > MAX_HEAD:
            self._close("head_too_large")
            return False
        if end < 0:
            self._head_size = size
            self._tail = seen[-2:]
            return True
        self._in_head = False
        self._disarm()
        return True

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(HEAD_TIMEOUT, self._close, "head_timeout")

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close(self, event: str) -> None:
        self._deadline = None
        self._guard.hit(event, self._client)
        if self._transport is not None:
            self._transport.abort()


@web.middleware
async def request_done(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's ``GuardedProtocol`` when its request has been handled."""
    try:
        return await handler(request)
    finally:
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        if isinstance(protocol, GuardedProtocol):
            protocol.request_done()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass through ``guard`` before they reach aiohttp."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None  # noqa: S101 (invariant: the runner is set up before its sites)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
