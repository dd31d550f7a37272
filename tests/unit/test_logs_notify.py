"""Log line formats and the systemd notification protocol."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrapperd.runtime import logs
from bootstrapperd.runtime.sdnotify import Notifier


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("bootstrapperd")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def _emit(fmt: str) -> str:
    stream = io.StringIO()
    logs.configure(fmt, "debug", stream)
    logging.getLogger("bootstrapperd.dhcp").info(
        "ACK", extra={"fields": {"mac": "52:54:00:00:00:01", "ip": "10.1.0.5", "file": "a b"}}
    )
    return stream.getvalue().strip()


def test_text_format() -> None:
    line = _emit("text")
    assert ' INFO    bootstrapperd.dhcp ACK mac=52:54:00:00:00:01 ip=10.1.0.5 file="a b"' in line


def test_json_format() -> None:
    data = json.loads(_emit("json"))
    assert data["logger"] == "bootstrapperd.dhcp"
    assert data["level"] == "info"
    assert data["msg"] == "ACK"
    assert data["mac"] == "52:54:00:00:00:01"
    assert data["ip"] == "10.1.0.5"
    assert data["ts"].endswith("Z")


def test_notifier_sends_states(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        notifier = Notifier(str(path))
        notifier.ready("serving")
        ready = sock.recv(4096).decode().split("\n")
        notifier.reloading()
        reloading = sock.recv(4096).decode().split("\n")
        notifier.stopping()
        stopping = sock.recv(4096).decode()
    assert ready[0] == "READY=1"
    assert "STATUS=serving" in ready
    assert reloading[0] == "RELOADING=1"
    assert reloading[1].startswith("MONOTONIC_USEC=")
    assert stopping == "STOPPING=1"


def test_notifier_without_socket_is_silent() -> None:
    notifier = Notifier("")
    assert not notifier.enabled
    notifier.ready("x")  # nothing to send to; must not raise
