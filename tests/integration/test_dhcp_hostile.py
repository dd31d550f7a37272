"""Hostile DHCP against `bootstrapperd serve` in namespaces (scapy frames, sent with an AF_PACKET
socket from the client namespace only): an Ethernet address that is not 6 bytes is dropped and
counted, a client asking for 300-byte replies gets its offer, a flood of random MACs is
rate-limited before it takes the pool, and a real dhclient is served after each attack."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bootstrapperd.dhcp.backend import NEW_UNKNOWN_BURST
from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.integration.dhcp_lab import SERVER, DHCPLab, events

pytestmark = pytest.mark.netns

PROBE = Path(__file__).with_name("frame_probe.py")
MASTER = "52:54:00:77:00:10"  # listed in the example, static 10.77.0.10
FLOOD = 150  # random MACs: more than the example's pool of 100 addresses


def discover(mac: bytes, *, hlen: int = 6, options: tuple[tuple[object, ...], ...] = ()) -> str:
    """A broadcast DISCOVER from ``mac`` (chaddr), as hex for the frame probe."""
    frame = (
        Ether(src="02:00:00:00:00:99", dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=mac, hlen=hlen, xid=int.from_bytes(mac[-4:], "big"), flags=0x8000)
        / DHCP(options=[("message-type", "discover"), *options, "end"])
    )
    return bytes(frame).hex()


def exchange(lab: DHCPLab, frames: list[str], seconds: float = 2.0) -> list[BOOTP]:
    """Send the frames from the client namespace; the DHCP replies seen there."""
    argv = [sys.executable, str(PROBE), "node0", str(seconds), *frames]
    result = lab.cli.run(argv, timeout=60, check=True)
    return [Ether(bytes.fromhex(h))[BOOTP] for h in json.loads(result.stdout)]


def dhcp_events(lab: DHCPLab) -> dict[str, float]:
    """The daemon's DHCP counters, read from /metrics with curl inside the client namespace."""
    text = lab.cli.run(["curl", "-sf", f"http://{SERVER}/metrics"], check=True).stdout
    found = re.findall(r'^bootstrapperd_dhcp_events_total\{event="([^"]+)"\} (\S+)$', text, re.M)
    return {event: float(value) for event, value in found}


def leased(lab: DHCPLab) -> str:
    log, output = lab.dhclient()
    bound = [e for e in events(log) if e.get("reason") in ("BOUND", "REBOOT")]
    assert bound, output
    return bound[-1]["new_ip_address"]


def test_bad_hardware_address_dropped_and_small_max_size_clamped(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("dhclient", "curl")
    lab = DHCPLab.build(netlab, bsroot, client_mac=MASTER)
    lab.start_daemon()
    bogus = bytes.fromhex("02000000000100000000000000000000")  # hlen 4: "02:00:00:00"
    small = bytes.fromhex("020000000002")
    replies = exchange(
        lab,
        [
            discover(bogus, hlen=4),
            discover(bogus, hlen=16),
            discover(small, options=(("max_dhcp_size", 300),)),
        ],
    )
    assert [bytes(r.chaddr)[:6] for r in replies] == [small]  # only the clamped client's OFFER
    assert len(bytes(replies[0])) <= 576 - 28
    assert leased(lab) == "10.77.0.10"  # a real client is still served (and can read /metrics)
    counters = dhcp_events(lab)
    assert counters["malformed"] == 2
    assert counters.get("errors", 0) == 0
    assert all(mac.count(":") == 5 for _, mac, _ in lab.leases())  # no bogus MAC recorded


def test_random_mac_flood_is_rate_limited_and_the_pool_survives(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("dhclient", "curl")
    lab = DHCPLab.build(netlab, bsroot, client_mac=MASTER)
    lab.start_daemon()
    frames = [discover(b"\x02\xee" + n.to_bytes(4, "big")) for n in range(FLOOD)]
    offers = exchange(lab, frames)
    assert leased(lab) == "10.77.0.10"  # a listed node is never limited
    counters = dhcp_events(lab)
    assert NEW_UNKNOWN_BURST <= len(offers) < FLOOD
    assert counters["unknown_rate_limited"] >= FLOOD - len(offers)
    assert counters.get("pool_exhausted", 0) == 0
