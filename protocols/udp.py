"""What the UDP endpoints (DHCP, TFTP) share: a large receive buffer, and the kernel's count
of datagrams dropped because that buffer was full, followed into the service's counters."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections import Counter

from .throttle import LogThrottle

__all__ = ["DROPS", "RECEIVE_BUFFER", "SO_RXQ_OVFL", "DropWatch", "kernel_drops", "tune_receive"]

RECEIVE_BUFFER = 4 << 20  # SO_RCVBUF asked for: a burst of requests waits here, not dropped
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: datagrams the kernel dropped
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux: past rmem_max (CAP_NET_ADMIN)
DROPS = struct.Struct("=I")  # SO_RXQ_OVFL's ancillary payload
WARN_EVERY = 60.0  # seconds between two "dropped by the kernel" warnings


def tune_receive(sock: socket.socket, size: int = RECEIVE_BUFFER) -> None:
    """Ask for a large receive buffer (beyond net.core.rmem_max with CAP_NET_ADMIN, else capped
    at it) and for the count of datagrams dropped because it was full (SO_RXQ_OVFL)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)


class DropWatch:
    """Follows a socket's kernel drop count (SO_RXQ_OVFL): into ``counters`` under
    ``receive_buffer_drops``, and a warning at most once a minute while it grows."""

    def __init__(self, counters: Counter[str], logger: logging.Logger, what: str) -> None:
        self._counters = counters
        self._log = logger
        self._what = what
        self._warnings = LogThrottle(WARN_EVERY)
        self._warned_count = 0

    def update(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        drops = kernel_drops(ancdata)
        if drops is None or drops <= self._counters["receive_buffer_drops"]:
            return
        self._counters["receive_buffer_drops"] = drops
        if self._warnings.allow("drops", time.monotonic()):
            self._log.warning(
                "%s: %d datagrams dropped by the kernel (receive buffer full) since the last "
                "warning",
                self._what,
                drops - self._warned_count,
            )
            self._warned_count = drops


def kernel_drops(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The socket's count of datagrams dropped for a full receive buffer, when present."""
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(payload) >= DROPS.size:
            return int(DROPS.unpack_from(payload)[0])
    return None
