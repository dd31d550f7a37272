"""Hostile DNS clients against `bootstrapperd serve` in namespaces: a flood of idle TCP
connections from one source and from many (dig +tcp is still answered; the oldest idle ones
are evicted, the rest closed by the idle timeout; all counted), and names that cannot be written
(a label of 64+ bytes, a name of 256+) over UDP and TCP: FORMERR, counted, no traceback, one log
line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from protocols.dns.tcp import MAX_TCP_CLIENTS, MAX_TCP_PER_SOURCE, TCP_IDLE
from tests.conftest import need_tools
from tests.integration.dhcp_lab import wait_until
from tests.integration.test_dns import answer, start
from tests.integration.test_http_hostile import CLIENT, held, hold, metric

pytestmark = pytest.mark.netns

FLOODERS = [f"10.77.0.{100 + n}" for n in range(24)]

# Sends each hex-encoded query over UDP and over TCP; prints each response's RCODE (or "none").
ASK = r"""
import socket, struct, sys
server = sys.argv[1]
for query in map(bytes.fromhex, sys.argv[2:]):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.sendto(query, (server, 53))
    try:
        print("udp", u.recv(4096)[3] & 15)
    except OSError:
        print("udp none")
    t = socket.create_connection((server, 53), timeout=5)
    t.sendall(struct.pack("!H", len(query)) + query)
    try:
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
        print("tcp", data[5] & 15 if len(data) > 5 else "none")
    except OSError:
        print("tcp none")
    t.close()
"""


def query(*labels: bytes) -> bytes:
    """An A query for the name of ``labels`` (written as given, whatever their length)."""
    name = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    return bytes.fromhex("abcd01000001000000000000") + name + b"\x00\x01\x00\x01"


def test_idle_tcp_flood_does_not_lock_out_dig(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig", "curl")
    lab, daemon = start(netlab, bsroot)
    for address in (CLIENT, *FLOODERS):
        lab.cli.ip("addr", "add", f"{address}/24", "dev", "node0")
    # One source over its cap, then many sources over the total: idle, never sending a byte.
    one = hold(lab.cli, lab.scratch, "one", 53, ["10.77.0.10"], MAX_TCP_PER_SOURCE * 4, "idle",
               seconds=TCP_IDLE * 8)  # fmt: skip
    wait_until(lambda: held(one)["connected"] == MAX_TCP_PER_SOURCE * 4, what="one source")
    many_count = MAX_TCP_CLIENTS + len(FLOODERS) * 2
    many = hold(lab.cli, lab.scratch, "many", 53, FLOODERS, many_count, "idle",
                seconds=TCP_IDLE * 8)  # fmt: skip
    wait_until(lambda: held(many)["connected"] == many_count, what="many sources")
    # A client from the flooding source, and one from elsewhere: both answered over TCP.
    assert answer(lab.cli, "+tcp", "master1.cluster.example", "+short") == ["10.77.0.10"]
    assert answer(lab.cli, "+tcp", "-b", CLIENT, "master1.cluster.example", "+short") == [
        "10.77.0.10"
    ]
    assert metric(lab.cli, "dns", "tcp_evicted") >= MAX_TCP_PER_SOURCE * 3 + len(FLOODERS) * 2
    assert metric(lab.cli, "dns", "tcp_refused") == 0
    # What stays open idles out: every flooding connection is closed in the end, and counted.
    for status in (one, many):
        wait_until(lambda s=status: held(s)["closed"] == held(s)["connected"],
                   timeout=TCP_IDLE * 6, what="idle connections closed")  # fmt: skip
    assert metric(lab.cli, "dns", "tcp_idle_timeout") >= 1
    assert daemon.output.count("event=tcp_evicted") == 1  # logged once, counted in full
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.output


def test_names_too_long_get_formerr_over_udp_and_tcp(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dig", "curl")
    lab, daemon = start(netlab, bsroot)
    lab.cli.ip("addr", "add", f"{CLIENT}/24", "dev", "node0")
    queries = [
        query(b"a" * 64, b"cluster", b"example"),  # a label of 64 bytes
        query(b"b" * 150),  # of 150
        query(*[b"c" * 63] * 5),  # a name of 321 bytes
        query(*[b"d" * 20] * 13),  # of 274, every label short
    ]
    result = lab.cli.run(
        [sys.executable, "-c", ASK, "10.77.0.1", *(q.hex() for q in queries)], check=True
    )
    lines = result.stdout.split("\n")
    assert [line for line in lines if line] == ["udp 1", "tcp 1"] * len(queries), result.stdout
    assert metric(lab.cli, "dns", "malformed:name") == 2 * len(queries)
    assert metric(lab.cli, "dns", "internal_errors") == 0
    assert daemon.output.count("malformed:name") == 1  # logged once, counted in full
    assert "Traceback" not in daemon.output
    assert answer(lab.cli, "master1.cluster.example", "+short") == ["10.77.0.10"]
    assert answer(lab.cli, "+tcp", "master1.cluster.example", "+short") == ["10.77.0.10"]
