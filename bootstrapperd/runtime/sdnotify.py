"""systemd readiness notification (sd_notify) without libsystemd: one datagram per state."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("bootstrapperd")


class Notifier:
    """Sends ``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=…`` to ``$NOTIFY_SOCKET``.

    Does nothing when the variable is unset (not started by systemd with Type=notify).
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *states: str) -> None:
        if not self.enabled:
            return
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]  # abstract socket namespace
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall("\n".join(states).encode())
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # Type=notify-reload wants the monotonic time with RELOADING=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")
