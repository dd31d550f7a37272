"""The server side of one TFTP read transfer as a pure state machine: bytes and the time go
in, packets to send come out. Lock-step RFC 1350 or windowed RFC 7440, with option
negotiation (RFC 2347), block-number rollover and retransmission only on timeout (so a
duplicate ACK never doubles the traffic: the Sorcerer's Apprentice bug)."""

from __future__ import annotations

import math
import struct
from collections import deque
from enum import StrEnum

from ..errors import MalformedPacket
from .netascii import NetasciiReader, Source
from .options import Negotiated, negotiate
from .packet import Error, ErrorCode, Opcode, OptionAck, Request, error_packet, parse, serialize

__all__ = ["Address", "Outcome", "ReadSession", "Send", "Source"]

Address = tuple[str, int]
Send = tuple[bytes, Address]

MODES = ("octet", "netascii")

_DATA = struct.Struct("!HH")
_DATA_OPCODE = int(Opcode.DATA)


class Outcome(StrEnum):
    """How a transfer ended."""

    COMPLETE = "complete"
    TIMED_OUT = "timed out"
    CLIENT_ERROR = "client error"
    OPTION_REFUSED = "option refused"
    READ_ERROR = "read error"
    BAD_MODE = "bad mode"
    ABORTED = "aborted"


class ReadSession:
    """One RRQ being served to ``peer``. Call ``start()`` once, ``receive()`` for every
    datagram arriving on the transfer's socket, and ``timeout()`` when ``deadline`` passes;
    send what they return. Blocks are numbered from 1 without bound inside; on the wire the
    number is taken modulo 65536 (65535 is followed by 0, as tftp-hpa, atftp and busybox
    do). The DATA packets of the outstanding window are kept for retransmission; the source
    is read sequentially and never further ahead than one window.

    ``retries`` is how many times the same packets are retransmitted without progress; the
    timeout after the last retransmission ends the session (``Outcome.TIMED_OUT``) without
    sending anything: the client is presumed gone. Until the peer has ACKed once, only the
    first packet (the OACK or DATA 1) is sent, and retransmitted at most
    ``first_contact_retries`` times (default: ``retries``): the RRQ's source address may be
    spoofed, so a request must not buy more than a few copies of one packet.

    All public attributes are read-only for the caller."""

    __slots__ = (
        "_acked",
        "_answered",
        "_blksize",
        "_final",
        "_first_retries",
        "_interval",
        "_last",
        "_oack",
        "_outstanding",
        "_retries",
        "_sent",
        "_source",
        "_tries",
        "_window",
        "blocks_sent",
        "bytes_sent",
        "deadline",
        "detail",
        "done",
        "duplicate_acks",
        "finished",
        "ignored",
        "negotiated",
        "outcome",
        "peer",
        "request",
        "retransmits",
        "size",
        "started",
        "strangers",
    )

    def __init__(
        self,
        request: Request,
        peer: Address,
        source: Source,
        size: int | None,
        now: float,
        *,
        max_blksize: int = 1468,
        max_window: int = 64,
        max_window_bytes: int = 1 << 20,
        default_timeout: float = 1.0,
        retries: int = 5,
        first_contact_retries: int | None = None,
    ) -> None:
        if request.opcode != Opcode.RRQ:
            raise ValueError(f"a read session serves RRQ, not {request.opcode.name}")
        self.peer = peer
        self.request = request
        self.size = size
        """The size of the file on the wire in the request's mode (for ``tsize``)."""
        self.started = now
        self._last = now
        """The latest time passed in (for ``abort``, which is not given one)."""
        self.finished: float | None = None
        self.done = False
        self.outcome: Outcome | None = None
        self.detail = ""
        """The client's error message, the read error or the abort reason; else empty."""
        self.deadline = math.inf
        """When ``timeout()`` must be called; ``math.inf`` once done."""
        self.bytes_sent = 0
        """Payload bytes sent, first transmissions only."""
        self.blocks_sent = 0
        self.retransmits = 0
        self.duplicate_acks = 0
        """ACKs for blocks already acknowledged (or outside the window): never answered."""
        self.strangers = 0
        """Datagrams from another address or port, answered with ERROR 5."""
        self.ignored = 0
        """Malformed or unexpected datagrams from the peer (RRQ, DATA, OACK, ...)."""
        mode = request.mode
        options = request.options if mode in MODES else ()
        self.negotiated: Negotiated = negotiate(
            options,
            file_size=size,
            max_blksize=max_blksize,
            max_window=max_window,
            max_window_bytes=max_window_bytes,
            default_timeout=default_timeout,
        )
        self._blksize = self.negotiated.blksize
        self._window = self.negotiated.windowsize
        self._interval = self.negotiated.timeout
        self._retries = retries
        self._first_retries = retries if first_contact_retries is None else first_contact_retries
        self._source: Source = NetasciiReader(source) if mode == "netascii" else source
        self._acked = 0
        """Highest block acknowledged (0: none yet, or the OACK)."""
        self._sent = 0
        """Highest block sent."""
        self._final: int | None = None
        """The last block (shorter than ``blksize``), once it has been read."""
        self._outstanding: deque[bytes] = deque()
        """DATA packets of blocks ``_acked + 1 .. _sent``."""
        self._oack: bytes | None = None
        """The OACK, while its ACK 0 has not arrived."""
        self._tries = 0
        self._answered = False
        """The peer has ACKed once (the OACK or a DATA block): it is where the RRQ came from."""

    @property
    def answered(self) -> bool:
        """True once the peer has ACKed something: until then only the first packet goes out."""
        return self._answered

    def start(self) -> list[bytes]:
        """The first packets for the peer: an ERROR for a mode other than octet or
        netascii, the OACK when options were accepted, else the first window of DATA."""
        mode = self.request.mode
        if mode not in MODES:
            return [
                self._fail(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"unsupported mode {mode!r}",
                    Outcome.BAD_MODE,
                    self.started,
                )
            ]
        self.deadline = self.started + self._interval
        if self.negotiated.acknowledged:
            self._oack = serialize(OptionAck(self.negotiated.acknowledged))
            return [self._oack]
        return self._fill(self.started)

    def receive(self, data: bytes, peer: Address, now: float) -> list[Send]:
        """Handle one datagram from ``peer``; returns what to send and to whom. Never
        raises: malformed and unexpected packets are counted and ignored."""
        self._last = now
        own = self.peer
        if peer != own and (peer[0] != own[0] or peer[1] != own[1]):
            self.strangers += 1
            return [(error_packet(ErrorCode.UNKNOWN_TID, "unknown transfer ID"), peer)]
        if self.done:
            return []
        if len(data) >= 4 and data[1] == 4 and data[0] == 0:
            if self._oack is not None:
                return self._option_ack(data, now)
            acked = self._acked
            k = acked + ((((data[2] << 8) | data[3]) - acked) & 0xFFFF)
            if acked < k <= self._sent:
                return self._advance(k, now)
            self.duplicate_acks += 1
            return []
        return self._other(data, now)

    def timeout(self, now: float) -> list[bytes]:
        """Retransmit everything outstanding (the OACK, or the DATA of the window) and set
        a new deadline; after ``retries`` retransmissions without progress, give up and
        return nothing. Acts whenever called, even slightly before ``deadline``."""
        if self.done:
            return []
        self._last = now
        self._tries += 1
        retries = self._retries if self._answered else min(self._retries, self._first_retries)
        if self._tries > retries:
            self._finish(Outcome.TIMED_OUT, now, f"no reply after {retries} retries")
            return []
        self.deadline = now + self._interval
        if self._oack is not None:
            self.retransmits += 1
            return [self._oack]
        self.retransmits += len(self._outstanding)
        return list(self._outstanding)

    def abort(self, message: str, now: float | None = None) -> list[bytes]:
        """End the session (e.g. at shutdown); returns an ERROR 0 for the peer, or nothing
        when the session had already ended. ``finished`` is ``now`` when given, else the
        latest time passed to the session."""
        if self.done:
            return []
        if now is None:
            now = self._last
        return [self._fail(ErrorCode.NOT_DEFINED, message, Outcome.ABORTED, now)]

    # -- internals ------------------------------------------------------------------------

    def _advance(self, k: int, now: float) -> list[Send]:
        """ACK ``k`` is new: drop the acknowledged packets, resend the rest of the window
        when the client stopped short of its end, and send new blocks to fill it."""
        outstanding = self._outstanding
        n = k - self._acked
        if n == len(outstanding):
            outstanding.clear()
        else:
            for _ in range(n):
                outstanding.popleft()
        self._acked = k
        self._tries = 0
        self._answered = True
        if k == self._final:
            self._finish(Outcome.COMPLETE, now, "")
            return []
        peer = self.peer
        if not outstanding:
            return [(packet, peer) for packet in self._fill(now)]
        resend = list(outstanding)
        new = self._fill(now)
        if self.done:  # a read error: only the ERROR goes out
            return [(packet, peer) for packet in new]
        self.retransmits += len(resend)
        return [(packet, peer) for packet in resend + new]

    def _fill(self, now: float) -> list[bytes]:
        """Read and send new blocks until a window is outstanding or the last block is out;
        on a read error, end the session and return the ERROR instead."""
        new: list[bytes] = []
        blksize = self._blksize
        payload_bytes = 0
        end = self._acked + (self._window if self._answered else 1)  # one packet, until an ACK
        sent = self._sent
        while sent < end and self._final is None:
            try:
                payload = self._source.read(blksize)
            except (OSError, ValueError) as e:
                self._sent = sent
                return [
                    self._fail(
                        ErrorCode.NOT_DEFINED,
                        "read error",
                        Outcome.READ_ERROR,
                        now,
                        str(e) or type(e).__name__,
                    )
                ]
            sent += 1
            packet = _DATA.pack(_DATA_OPCODE, sent & 0xFFFF) + payload
            new.append(packet)
            payload_bytes += len(payload)
            if len(payload) < blksize:
                self._final = sent
        self.bytes_sent += payload_bytes
        self.blocks_sent += sent - self._sent
        self._sent = sent
        self._outstanding.extend(new)
        self.deadline = now + self._interval
        return new

    def _option_ack(self, data: bytes, now: float) -> list[Send]:
        """An ACK while the OACK is unanswered: ACK 0 starts the data, others are ignored."""
        if data[2] or data[3]:
            self.ignored += 1
            return []
        self._oack = None
        self._tries = 0
        self._answered = True
        peer = self.peer
        return [(packet, peer) for packet in self._fill(now)]

    def _other(self, data: bytes, now: float) -> list[Send]:
        """Anything but an ACK: an ERROR ends the session, the rest is ignored."""
        try:
            packet = parse(data)
        except MalformedPacket:
            self.ignored += 1
            return []
        if not isinstance(packet, Error):
            self.ignored += 1
            return []
        refused = self._oack is not None or packet.code == ErrorCode.OPTION_REFUSED
        self._finish(
            Outcome.OPTION_REFUSED if refused else Outcome.CLIENT_ERROR, now, packet.message
        )
        return []

    def _fail(
        self, code: int, message: str, outcome: Outcome, now: float, detail: str | None = None
    ) -> bytes:
        """End the session with ``outcome`` and return the ERROR to tell the peer."""
        self._finish(outcome, now, message if detail is None else detail)
        return error_packet(code, message)

    def _finish(self, outcome: Outcome, now: float, detail: str) -> None:
        self.done = True
        self.outcome = outcome
        self.detail = detail
        self.finished = now
        self.deadline = math.inf
        self._outstanding.clear()
        self._oack = None
