"""The asyncio TFTP endpoint: requests on port 69, each transfer on its own ephemeral port.

Thin by design: sockets and timers here, the protocol in ``session.ReadSession``, and what a
file name means (and whether it may be read) in the application's ``Opener``. Every transfer
socket is read with ``loop.add_reader`` + ``recvfrom`` (no transport objects, no per-packet
futures) and every session's retransmission deadline is checked by one ticker, so the
per-packet work is one ``recvfrom``, one state-machine step and the ``sendto`` calls it asks
for. Memory per transfer is bounded: the outstanding window plus the opener's read buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import MalformedPacket
from ..throttle import LogThrottle
from ..udp import DropWatch, tune_receive
from .packet import ErrorCode, Opcode, Request, error_packet, parse
from .session import Address, Outcome, ReadSession, Source

SERVER_PORT = 69
TICK = 0.05  # seconds between retransmission-deadline checks
MAX_TRANSFERS = 512
MAX_PER_SOURCE = 32  # concurrent transfers for one client address (a machine needs 1-2)
FIRST_CONTACT_RETRIES = 1  # timer retransmissions of the first packet before the first ACK
LISTENER_BUFFER = 4 << 20  # SO_RCVBUF of port 69: a burst of RRQs waits here, not dropped
REFUSAL_WARN_EVERY = 60.0  # seconds between two warnings of the same kind of refusal
READ_BATCH = 64  # datagrams read per wake-up before yielding to the loop
SEND_BUFFER = 1 << 20
RECV_SIZE = 65536
MAX_WINDOW = 64  # blocks
MAX_WINDOW_BYTES = 256 * 1024  # outstanding per transfer: the memory bound, with the read buffer

_ANCILLARY = socket.CMSG_SPACE(4)  # SO_RXQ_OVFL's drop count

__all__ = [
    "SERVER_PORT",
    "Opened",
    "Opener",
    "Refusal",
    "Report",
    "TFTPEndpoint",
    "open_socket",
]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not served: the ERROR packet's code and message."""

    code: ErrorCode
    message: str


@dataclass(slots=True)
class Opened:
    """A readable file: its data, its size on the wire (None when unknown), how to close it."""

    name: str
    source: Source
    size: int | None
    close: Callable[[], None] = lambda: None


Opener = Callable[[Request, Address], "Opened | Refusal"]


@dataclass(frozen=True, slots=True)
class Report:
    """What happened to one request: a finished transfer or a refusal."""

    peer: Address
    filename: str
    mode: str
    outcome: str  # an ``Outcome`` value, or "refused"
    name: str = ""  # the served name (normalised), when opened
    size: int | None = None
    bytes_sent: int = 0
    options: tuple[tuple[str, str], ...] = ()
    duration: float = 0.0
    retransmits: int = 0
    error_code: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.COMPLETE


@dataclass(eq=False, slots=True)
class _Transfer:
    session: ReadSession
    sock: socket.socket
    opened: Opened
    peer: Address
    started: float = field(default_factory=time.monotonic)


def open_socket(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``address:port`` (port 0: an ephemeral one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class TFTPEndpoint:
    """Serves read requests arriving on ``listener`` (bound to the server's port 69)."""

    def __init__(
        self,
        listener: socket.socket,
        opener: Opener,
        *,
        report: Callable[[Report], None],
        counters: Counter[str],
        logger: logging.Logger,
        max_blksize: int,
        max_transfers: int = MAX_TRANSFERS,
        retransmit_after: float = 1.0,
        retries: int = 5,
    ) -> None:
        self._listener = listener
        self._address: str = listener.getsockname()[0]
        self._opener = opener
        self._report = report
        self.counters = counters
        self._log = logger
        self._max_blksize = max_blksize
        self._max_transfers = max_transfers
        self._retransmit_after = retransmit_after
        self._retries = retries
        self._transfers: dict[Address, _Transfer] = {}
        self._per_source: Counter[str] = Counter()
        self._drops = DropWatch(counters, logger, "tftp listener")
        self._warnings = LogThrottle(REFUSAL_WARN_EVERY)
        self._unwarned: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._listening = False

    @property
    def active(self) -> int:
        return len(self._transfers)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        tune_receive(self._listener, LISTENER_BUFFER)
        self._loop.add_reader(self._listener.fileno(), self._on_request)
        self._listening = True

    # --- requests on port 69 ------------------------------------------------------------------

    def _on_request(self) -> None:
        for _ in range(READ_BATCH):
            try:
                data, ancdata, _flags, peer = self._listener.recvmsg(RECV_SIZE, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error surfacing on the socket: nothing to do
                self._log.debug("tftp listener: %s", exc)
                return
            self._drops.update(ancdata)
            try:
                self._request(data, peer)
            except Exception:  # never let one request stop the listener
                self.counters["internal_errors"] += 1
                self._log.exception("tftp: unexpected error handling a request from %s", peer)

    def _request(self, data: bytes, peer: Address) -> None:
        try:
            packet = parse(data)
        except MalformedPacket as exc:
            self.counters["malformed"] += 1
            self._log.debug("tftp: malformed request from %s:%d: %s", peer[0], peer[1], exc)
            return
        if not isinstance(packet, Request):
            self.counters["unexpected"] += 1  # DATA/ACK/ERROR/OACK have no business on port 69
            return
        self.counters["requests"] += 1
        if packet.opcode is Opcode.WRQ:
            self._refuse(packet, peer, ErrorCode.ACCESS_VIOLATION, "read-only server")
            return
        if peer in self._transfers:
            # The client sent its request again before our first answer reached it: the
            # transfer's own retransmission answers it.
            self.counters["duplicate_requests"] += 1
            return
        if len(self._transfers) >= self._max_transfers or not self._listening:
            self._limited("refused_busy", "all %d transfer slots busy", self._max_transfers)
            self._refuse(packet, peer, ErrorCode.NOT_DEFINED, "server busy, try again", quiet=True)
            return
        if self._per_source[peer[0]] >= MAX_PER_SOURCE:
            self._limited("refused_per_source", "%d transfers from one address", MAX_PER_SOURCE)
            message = "too many transfers from you"
            self._refuse(packet, peer, ErrorCode.NOT_DEFINED, message, quiet=True)
            return
        try:
            opened = self._opener(packet, peer)
        except Exception:
            self.counters["internal_errors"] += 1
            self._log.exception("tftp: opening %r for %s failed", packet.filename, peer[0])
            opened = Refusal(ErrorCode.NOT_DEFINED, "internal error")
        if isinstance(opened, Refusal):
            self._refuse(packet, peer, opened.code, opened.message)
            return
        self._begin(packet, peer, opened)

    def _limited(self, kind: str, what: str, bound: int) -> None:
        """Count a refusal at a bound; warn at most once a minute for each kind."""
        self.counters[kind] += 1
        self._unwarned[kind] += 1
        if not self._warnings.allow(kind, time.monotonic()):
            return
        self._log.warning(
            "tftp: requests refused at a bound (" + what + "): %d since the last warning",
            bound,
            self._unwarned[kind],
        )
        self._unwarned[kind] = 0

    def _refuse(
        self, request: Request, peer: Address, code: ErrorCode, message: str, *, quiet: bool = False
    ) -> None:
        """Answer with an ERROR and report the refusal; ``quiet``: a refusal at a bound, counted
        and warned about by ``_limited`` instead (a flood must not write a line per request)."""
        self.counters["refused"] += 1
        self._send(self._listener, error_packet(code, message), peer)
        if quiet:
            return
        self._report(
            Report(
                peer,
                request.filename,
                request.mode,
                "refused",
                error_code=int(code),
                detail=message,
            )
        )

    def _begin(self, request: Request, peer: Address, opened: Opened) -> None:
        try:
            sock = open_socket(self._address, 0)
        except OSError as exc:
            opened.close()
            self._log.error("tftp: no socket for a transfer: %s", exc)
            self._refuse(request, peer, ErrorCode.NOT_DEFINED, "server out of sockets")
            return
        now = time.monotonic()
        session = ReadSession(
            request,
            peer,
            opened.source,
            opened.size,
            now,
            max_blksize=self._max_blksize,
            max_window=MAX_WINDOW,
            max_window_bytes=MAX_WINDOW_BYTES,
            default_timeout=self._retransmit_after,
            retries=self._retries,
            first_contact_retries=FIRST_CONTACT_RETRIES,
        )
        transfer = _Transfer(session, sock, opened, peer, now)
        self._transfers[peer] = transfer
        self._per_source[peer[0]] += 1
        self._idle.clear()
        self.counters["transfers"] += 1
        for packet in session.start():
            self._send(sock, packet, peer)
        if session.done:
            self._finish(transfer)
            return
        assert self._loop is not None  # noqa: S101 (invariant: start() set it)
        self._loop.add_reader(sock.fileno(), self._on_packet, transfer)
        if self._ticker is None:
            self._ticker = self._loop.call_later(TICK, self._tick)

    # --- transfers ----------------------------------------------------------------------------

    def _on_packet(self, transfer: _Transfer) -> None:
        sock = transfer.sock
        session = transfer.session
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        for _ in range(READ_BATCH):
            try:
                data, source = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP port unreachable from the client (it went away): the session's timeout
                # ends the transfer.
                continue
            for packet, destination in session.receive(data, source, time.monotonic()):
                try:
                    sendto(packet, destination)
                except (BlockingIOError, InterruptedError):
                    # The send buffer is full: what was not sent is resent on timeout.
                    self.counters["send_buffer_full"] += 1
                    break
                except OSError as exc:
                    self._log.debug("tftp: send to %s failed: %s", destination, exc)
                    break
            if session.done:
                self._finish(transfer)
                return

    def _tick(self) -> None:
        self._ticker = None
        now = time.monotonic()
        for transfer in list(self._transfers.values()):
            session = transfer.session
            if session.deadline <= now:
                for packet in session.timeout(now):
                    self._send(transfer.sock, packet, transfer.peer)
                if session.done:
                    self._finish(transfer)
        if self._transfers and self._loop is not None:
            self._ticker = self._loop.call_later(TICK, self._tick)

    def _finish(self, transfer: _Transfer) -> None:
        session = transfer.session
        if self._transfers.get(transfer.peer) is transfer:
            del self._transfers[transfer.peer]
            left = self._per_source[transfer.peer[0]] - 1
            if left > 0:
                self._per_source[transfer.peer[0]] = left
            else:
                del self._per_source[transfer.peer[0]]
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(transfer.sock.fileno())
        transfer.sock.close()
        try:
            transfer.opened.close()
        except OSError as exc:
            self._log.debug("tftp: closing %s: %s", transfer.opened.name, exc)
        outcome = session.outcome or Outcome.ABORTED
        self.counters["complete" if outcome is Outcome.COMPLETE else "failed"] += 1
        self.counters["bytes_sent"] += session.bytes_sent
        self.counters["retransmits"] += session.retransmits
        self.counters["strangers"] += session.strangers
        request = session.request
        self._report(
            Report(
                transfer.peer,
                request.filename,
                request.mode,
                str(outcome),
                name=transfer.opened.name,
                size=session.size,
                bytes_sent=session.bytes_sent,
                options=session.negotiated.acknowledged,
                duration=time.monotonic() - transfer.started,
                retransmits=session.retransmits,
                detail=session.detail,
            )
        )
        if not self._transfers:
            self._idle.set()

    def _send(self, sock: socket.socket, packet: bytes, peer: Address) -> None:
        try:
            sock.sendto(packet, peer)
        except OSError as exc:
            self._log.debug("tftp: send to %s failed: %s", peer, exc)

    # --- shutdown -----------------------------------------------------------------------------

    def stop_listening(self) -> None:
        """Take no new requests; transfers in flight go on."""
        if self._listening and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
        self._listening = False
        self._listener.close()

    async def close(self, grace: float) -> None:
        """Stop listening, let transfers finish for up to ``grace`` seconds, abort the rest."""
        self.stop_listening()
        if self._transfers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for transfer in list(self._transfers.values()):
            for packet in transfer.session.abort("server shutting down"):
                self._send(transfer.sock, packet, transfer.peer)
            self._finish(transfer)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
