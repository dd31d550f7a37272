"""Hostile TFTP against `bootstrapperd serve` in namespaces (raw UDP from the client namespace
only): a request that never ACKs (as a spoofed one would be) gets at most two copies of one
packet, one address cannot take every transfer slot, a burst of requests is not lost in the
listener's receive buffer, and real tftp still fetches after each attack."""

from __future__ import annotations

import json
import re
import resource
import sys
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from bootstrapperd.runtime.fdlimit import FD_RESERVE, FDS_PER_TRANSFER, SOFT_CEILING
from protocols.tftp.endpoint import MAX_PER_SOURCE, MAX_TRANSFERS
from tests.conftest import need, need_tools
from tests.daemon_proc import DaemonProcess
from tests.integration.dhcp_lab import SERVER, DHCPLab, wait_until

pytestmark = pytest.mark.netns

ATTACKER = "10.77.0.50"  # stands in for a spoofed source: it receives but never answers
CLIENT = "10.77.0.10"  # master1's static address: the real client
FILE = "payload.bin"

# Sends one RRQ per socket from ATTACKER (never ACKs), waits until the daemon has ended every
# transfer (read from /metrics), then prints what each socket received: [[count, bytes,
# first two bytes of each packet], ...].
SILENT_RRQS = """
import json, re, socket, sys, time, urllib.request
server, source, name, sockets, metrics = sys.argv[1:6]
socks = []
for _ in range(int(sockets)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.sendto(b"\\0\\1" + name.encode() + b"\\0octet\\0", (server, 69))
    socks.append(s)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    text = urllib.request.urlopen(metrics, timeout=5).read().decode()
    got = dict(re.findall(r'event="([a-z_]+)"\\} (\\S+)', text.split("tftp_events", 1)[-1]))
    ended = float(got.get("failed", 0)) + float(got.get("refused", 0))
    if ended >= int(sockets):
        break
    time.sleep(0.2)
out = []
for s in socks:
    s.setblocking(False)
    packets = []
    while True:
        try:
            packets.append(s.recv(65536))
        except BlockingIOError:
            break
    out.append([len(packets), sum(map(len, packets)), [p[:2].hex() for p in packets]])
print(json.dumps(out))
"""

# Sends COUNT RRQs for missing files back to back from one socket, then reads the ERRORs.
BURST = """
import json, socket, sys
server, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
s.bind(("0.0.0.0", 0))
for n in range(count):
    s.sendto(b"\\0\\1missing-%d\\0octet\\0" % n, (server, 69))
s.settimeout(3)
answers = 0
try:
    while answers < count:
        s.recv(65536)
        answers += 1
except TimeoutError:
    pass
print(json.dumps(answers))
"""


def start(netlab: NetLab, bsroot: Path) -> tuple[DHCPLab, DaemonProcess]:
    lab = DHCPLab.build(netlab, bsroot)
    for address in (CLIENT, ATTACKER):
        lab.cli.ip("addr", "add", f"{address}/24", "dev", "node0")
    (bsroot / "tftpboot" / FILE).write_bytes(bytes(range(256)) * 64)  # 16 KiB: 32 blocks
    daemon = lab.start_daemon()
    wait_until(lambda: "service=tftp" in daemon.output, what="tftp listening")
    return lab, daemon


def tftp_events(lab: DHCPLab) -> dict[str, float]:
    text = lab.cli.run(["curl", "-sf", f"http://{SERVER}/metrics"], check=True).stdout
    found = re.findall(r'^bootstrapperd_tftp_events_total\{event="([^"]+)"\} (\S+)$', text, re.M)
    return {event: float(value) for event, value in found}


def still_served(lab: DHCPLab, bsroot: Path) -> None:
    out = bsroot.parent / "fetched.bin"
    lab.cli.run(["tftp", "-m", "binary", SERVER, "-c", "get", FILE, str(out)], check=True)
    assert out.read_bytes() == (bsroot / "tftpboot" / FILE).read_bytes()
    out.unlink()


def silent(lab: DHCPLab, sockets: int) -> list[tuple[int, int, list[str]]]:
    """Per socket: packets received, their bytes, and the opcode (hex) of each."""
    argv = [sys.executable, "-c", SILENT_RRQS, SERVER, ATTACKER, FILE, str(sockets)]
    result = lab.cli.run([*argv, f"http://{SERVER}/metrics"], timeout=90, check=True)
    return [
        (int(n), int(size), [str(k) for k in kinds]) for n, size, kinds in json.loads(result.stdout)
    ]


def test_a_request_that_never_acks_gets_at_most_two_copies_of_one_block(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("tftp", "curl")
    lab, _daemon = start(netlab, bsroot)
    ((count, size, kinds),) = silent(lab, 1)
    assert 1 <= count <= 2  # DATA 1 and at most one retransmission; was 6
    assert kinds == ["0003"] * count
    assert size <= 2 * (4 + 512)
    still_served(lab, bsroot)


def test_one_address_cannot_take_every_transfer_slot(netlab: NetLab, bsroot: Path) -> None:
    need_tools("tftp", "curl")
    lab, _daemon = start(netlab, bsroot)
    extra = 6
    replies = silent(lab, MAX_PER_SOURCE + extra)
    firsts = [kinds[0] for _count, _size, kinds in replies]
    assert firsts.count("0003") == MAX_PER_SOURCE  # DATA 1: a transfer began
    assert firsts.count("0005") == extra  # ERROR: refused
    assert tftp_events(lab)["refused_per_source"] == extra
    still_served(lab, bsroot)  # another address is served meanwhile


def test_a_burst_of_requests_is_not_lost_in_the_receive_buffer(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("tftp", "curl")
    lab, _daemon = start(netlab, bsroot)
    burst = 1000
    argv = [sys.executable, "-c", BURST, SERVER, str(burst)]
    answered = json.loads(lab.cli.run(argv, timeout=60, check=True).stdout)
    counters = tftp_events(lab)
    assert counters["requests"] == burst  # every one reached the daemon
    assert counters.get("receive_buffer_drops", 0) == 0
    assert answered == burst
    still_served(lab, bsroot)


def test_the_descriptor_limit_is_raised_at_start_and_sets_the_cap(
    netlab: NetLab, bsroot: Path
) -> None:
    need_tools("tftp", "curl")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need(hard >= transfer_need(), f"hard RLIMIT_NOFILE {hard} is below {transfer_need()}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what systemd gives by default
    try:
        lab, daemon = start(netlab, bsroot)  # the daemon inherits 1024
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_until(lambda: "file descriptors" in daemon.output, what="descriptor log line")
    line = next(x for x in daemon.output.splitlines() if "file descriptors" in x)
    assert "nofile_soft_before=1024" in line
    expected = hard if hard != resource.RLIM_INFINITY else SOFT_CEILING
    assert f"nofile_soft={expected}" in line
    assert f"max_transfers={MAX_TRANSFERS}" in line
    still_served(lab, bsroot)


def transfer_need() -> int:
    """Descriptors for every transfer slot and the reserve."""
    return FD_RESERVE + FDS_PER_TRANSFER * MAX_TRANSFERS
