"""Slow and malformed HTTP clients against `bootstrapperd serve` in namespaces: slowloris
connections (a request line, then a header byte now and then; also on a kept-alive connection
after a whole request) closed by the head deadline, a
client's connections beyond its cap closed at once, an oversized head closed, each counted in
/metrics; meanwhile another client's curl gets its file, and a slow download outlives the
deadline (it only bounds heads)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from bootstrapperd.http.server import HEAD_TIMEOUT, MAX_PER_CLIENT
from bootstrapperd.lab.netlab import Namespace, NetLab
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, wait_until

pytestmark = pytest.mark.netns

ATTACKER = "10.77.0.10"
CLIENT = "10.77.0.50"
IMAGE = "/static/flatcar/stable/image.bin"

# Holds connections open from inside a namespace and writes, after every round, how many of
# them the server has closed. argv: server, port, source addresses (comma-separated), count,
# mode (idle | slowloris | bighead | keepalive), seconds at most, status file.
HOLDER = r"""
import json, os, socket, sys, time
server, port, sources, count, mode, seconds, status = sys.argv[1:8]
sources = sources.split(",")
socks, closed = [], set()
for i in range(int(count)):
    s = socket.socket()
    s.bind((sources[i % len(sources)], 0))
    s.settimeout(10)
    s.connect((server, int(port)))
    if mode == "slowloris":
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bootstrapper\r\n")
    elif mode == "bighead":
        s.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 1000 + b"\r\n")
    elif mode == "keepalive":  # one whole request answered, then the next one's head trickles
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bootstrapper\r\n\r\n")
        if b"200 OK" not in s.recv(65536):
            sys.exit("no answer to a whole request")
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        mode = "slowloris"
    s.setblocking(False)
    socks.append(s)
end = time.monotonic() + float(seconds)
rounds = 0
while True:
    for n, s in enumerate(socks):
        if n in closed:
            continue
        try:
            if s.recv(65536) == b"":
                closed.add(n)
                continue
        except BlockingIOError:
            pass
        except OSError:
            closed.add(n)
            continue
        try:
            if mode == "slowloris":
                s.send(b"X")
            elif mode == "bighead":
                s.send((b"X-Pad: " + b"p" * 1000 + b"\r\n") * 4)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(n)
    rounds += 1
    with open(status + ".new", "w") as f:
        json.dump({"connected": len(socks), "closed": len(closed), "rounds": rounds}, f)
    os.replace(status + ".new", status)
    if len(closed) == len(socks) or time.monotonic() > end:
        break
    time.sleep(0.5)
"""


def hold(ns: Namespace, scratch: Path, name: str, port: int, sources: list[str], count: int,
         mode: str, seconds: float) -> Path:  # fmt: skip
    """Start the holder in ``ns``; returns its status file (the lab stops the process)."""
    status = scratch / f"{name}.json"
    argv = [sys.executable, "-c", HOLDER, SERVER, str(port), ",".join(sources), str(count)]
    ns.spawn([*argv, mode, str(seconds), str(status)])
    return status


def held(status: Path) -> dict[str, int]:
    """The holder's latest round: connected, closed, rounds (all 0 before its first round)."""
    if not status.exists():
        return {"connected": 0, "closed": 0, "rounds": 0}
    counts: dict[str, int] = json.loads(status.read_text())
    return counts


def metric(ns: Namespace, family: str, event: str) -> float:
    """One counter of /metrics, read by curl from ``CLIENT`` (0 when not yet counted)."""
    result = ns.run(
        ["curl", "-sS", "--max-time", "20", "--interface", CLIENT, f"http://{SERVER}/metrics"],
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    line_start = f'bootstrapperd_{family}_events_total{{event="{event}"}} '
    for line in result.stdout.splitlines():
        if line.startswith(line_start):
            return float(line[len(line_start) :])
    return 0.0


def start(netlab: NetLab, bsroot: Path, image: bytes) -> tuple[DHCPLab, DaemonProcess]:
    target = bsroot / "html" / IMAGE.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(image)
    lab = DHCPLab.build(netlab, bsroot)
    for address in (ATTACKER, CLIENT):
        lab.cli.ip("addr", "add", f"{address}/24", "dev", "node0")
    daemon = lab.start_daemon()
    wait_until(lambda: "service=http" in daemon.output, what="http listening")
    return lab, daemon


def download(lab: DHCPLab, *args: str) -> bytes:
    """The image fetched by curl from ``CLIENT``."""
    out = lab.scratch / "image.out"
    result = lab.cli.run(
        ["curl", "-sS", "--max-time", "120", "--interface", CLIENT, *args, "-o", str(out),
         f"http://{SERVER}{IMAGE}"],
        timeout=150,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def test_slowloris_closed_by_deadline_and_per_client_cap(netlab: NetLab, bsroot: Path) -> None:
    need_tools("curl")
    image = os.urandom(4 << 20)
    lab, daemon = start(netlab, bsroot, image)
    extra = 8
    count = MAX_PER_CLIENT + extra
    status = hold(lab.cli, lab.scratch, "slowloris", 80, [ATTACKER], count, "slowloris",
                  seconds=HEAD_TIMEOUT * 6)  # fmt: skip
    kept = hold(lab.cli, lab.scratch, "keepalive", 80, [CLIENT], 2, "keepalive",
                seconds=HEAD_TIMEOUT * 6)  # fmt: skip
    wait_until(lambda: held(status)["connected"] == count, what="slow connections open")
    wait_until(lambda: held(kept)["connected"] == 2, what="kept-alive connections open")
    # Another client is served meanwhile.
    assert hashlib.sha256(download(lab)).digest() == hashlib.sha256(image).digest()
    # Beyond its cap, the attacker's connections were closed at once and counted.
    wait_until(lambda: metric(lab.cli, "http", "refused_per_client") == extra, what="cap counted")
    # The rest are closed by the head deadline, every one of them, and counted.
    wait_until(lambda: held(status)["closed"] == count, timeout=HEAD_TIMEOUT * 5,
               what="slow connections closed")  # fmt: skip
    # So are the next heads trickling on kept-alive connections.
    wait_until(lambda: held(kept)["closed"] == 2, timeout=HEAD_TIMEOUT * 5, what="kept closed")
    assert metric(lab.cli, "http", "head_timeout") == MAX_PER_CLIENT + 2
    assert daemon.proc.poll() is None
    for event in ("refused_per_client", "head_timeout"):
        assert daemon.output.count(f"event={event}") == 1  # logged once, counted in full
    assert "Traceback" not in daemon.output


def test_oversized_heads_closed_and_counted(netlab: NetLab, bsroot: Path) -> None:
    need_tools("curl")
    lab, daemon = start(netlab, bsroot, b"image")
    count = 4
    # Header lines of 1 KB each, within aiohttp's own limits, until the head passes MAX_HEAD.
    status = hold(lab.cli, lab.scratch, "bighead", 80, [ATTACKER], count, "bighead",
                  seconds=HEAD_TIMEOUT * 6)  # fmt: skip
    wait_until(lambda: held(status)["closed"] == count, timeout=HEAD_TIMEOUT * 5,
               what="big heads closed")  # fmt: skip
    assert metric(lab.cli, "http", "head_too_large") == count  # for the size, not the time
    assert metric(lab.cli, "http", "head_timeout") == 0
    assert daemon.output.count("event=head_too_large") == 1  # logged once, counted in full
    assert download(lab) == b"image"
    assert daemon.proc.poll() is None


def test_a_slow_download_outlives_the_head_deadline(netlab: NetLab, bsroot: Path) -> None:
    need_tools("curl")
    image = os.urandom(40 << 20)  # well over what the socket buffers hold on both sides
    lab, _daemon = start(netlab, bsroot, image)
    # About 20 s at 2 MB/s, twice the head deadline: the file still arrives whole.
    got = download(lab, "--limit-rate", "2M")
    assert hashlib.sha256(got).digest() == hashlib.sha256(image).digest()
    assert metric(lab.cli, "http", "head_timeout") == 0
