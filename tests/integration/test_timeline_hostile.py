"""The running daemon's timelines and API against a hostile state database and a spoofed-MAC
DHCP flood, inside network namespaces: rows no daemon writes are skipped at start (counted in
``/metrics``), ``/api/v1/nodes`` answers 200 and is paged (every machine on exactly one page),
and a hardware address that is not a MAC never becomes a machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bootstrapperd.lab.netlab import NetLab, wait_for_http
from bootstrapperd.machines.timeline import ROW_SKIPPED
from tests.conftest import REPO, need_tools
from tests.integration.dhcp_lab import SERVER, DHCPLab, wait_until
from tests.unit.test_timeline_bounds import GOOD, MODEL, POISON, good_rows, strict_json, write_rows

pytestmark = pytest.mark.netns

BASE = f"http://{SERVER}"
CLIENT = "10.77.0.250/24"
STATE_DB = "bootstrapperd.db"  # bootstrapperd.daemon.STATE_DB
FLOOD = 300  # spoofed MACs
# Sent from the client namespace: FLOOD DISCOVERs, each from its own spoofed MAC, and DISCOVERs
# whose hardware address is not a MAC (IEEE 802 with one byte; a 16-byte one).
FLOODER = """
import socket, sys
from protocols.dhcp.options import MessageType
from protocols.dhcp.packet import serialize
from tests.dhcp_requests import request

count = int(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"node0")
sock.bind(("0.0.0.0", 68))
for n in range(count):
    mac = "06:00:" + ":".join(f"{b:02x}" for b in n.to_bytes(4, "big"))
    sock.sendto(serialize(request(MessageType.DISCOVER, mac, xid=n)), ("255.255.255.255", 67))
for htype, hlen in ((6, 1), (32, 16)):
    wire = bytearray(serialize(request(MessageType.DISCOVER, "02:00:00:00:00:01", xid=7)))
    wire[1], wire[2] = htype, hlen
    sock.sendto(bytes(wire), ("255.255.255.255", 67))
"""


def curl(lab: DHCPLab, url: str) -> tuple[int, str]:
    result = lab.cli.run(
        ["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", url], timeout=60
    )
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def all_pages(lab: DHCPLab, limit: int) -> list[dict[str, Any]]:
    """Every page of /api/v1/nodes, following each page's ``next``."""
    pages: list[dict[str, Any]] = []
    url: str | None = f"/api/v1/nodes?limit={limit}"
    while url is not None:
        code, body = curl(lab, BASE + url)
        assert code == 200, body
        page = strict_json(body)
        pages.append(page)
        url = page["page"]["next"]
        assert len(pages) <= 1_000
    return pages


def metric(lab: DHCPLab, name: str, label: str) -> float:
    code, body = curl(lab, f"{BASE}/metrics")
    assert code == 200
    for line in body.splitlines():
        if line.startswith(f"{name}{{") and f'"{label}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{label}}} not in /metrics")


def test_poisoned_state_and_a_mac_flood_leave_the_api_answering(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("curl")
    write_rows(bsroot / "state" / STATE_DB, [*POISON, *good_rows()])
    lab = DHCPLab.build(netlab, bsroot)
    lab.cli.ip("addr", "add", CLIENT, "dev", "node0")  # outside the pool: curl's address
    daemon = lab.start_daemon()
    wait_for_http(lab.cli, f"{BASE}/healthz")

    code, body = curl(lab, f"{BASE}/api/v1/nodes")
    assert code == 200, body
    first = strict_json(body)
    assert [n["mac"] for n in first["nodes"]] == [*MODEL, GOOD]
    assert metric(lab, "bootstrapperd_timeline_limited_total", ROW_SKIPPED) == len(POISON)
    for path in ("/", f"/api/v1/nodes/{GOOD}"):
        assert curl(lab, BASE + path)[0] == 200, path

    flood = lab.cli.run([sys.executable, "-c", FLOODER, str(FLOOD)], cwd=REPO, timeout=60)
    assert flood.returncode == 0, flood.stderr

    def seen() -> int:
        code, body = curl(lab, f"{BASE}/api/v1/nodes?limit=1")
        assert code == 200, body
        total: int = json.loads(body)["total"]
        return total

    # The daemon may shed or rate-limit part of a flood: some spoofed MACs, at least, land.
    wait_until(lambda: seen() > len(MODEL) + 1, what="spoofed machines in the timeline")
    pages = all_pages(lab, 7)
    macs = [n["mac"] for page in pages for n in page["nodes"]]
    total = pages[0]["total"]
    assert len(macs) == len(set(macs)) == total
    assert macs[: len(MODEL)] == list(MODEL)
    assert all(len(page["nodes"]) <= 7 for page in pages)
    for page in pages:
        assert sum(page["counts"].values()) == page["total"]
    assert "02" not in macs
    assert all(len(mac) == 17 for mac in macs)
    assert daemon.proc.poll() is None, daemon.output
