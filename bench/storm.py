"""Boot storm: many simulated machines booting at once through one bootstrapper.

Run from the checkout as root (dnsmasq and nginx installed for the reference)::

    .venv/bin/python -m bench.storm [--machines 1000] [--ramp 60] [--rounds 1] \
        [--servers bootstrapperd,dnsmasq+nginx] [--json results.json]

``--machines`` simulated machines, all listed in the cluster description (:func:`node_entries`),
start on an even ramp over ``--ramp`` seconds. Each boots as a BIOS PXE machine would: DHCP
(DISCOVER → OFFER → REQUEST → ACK, with PXE's vendor class and client architecture), then its
leased address is added to the client namespace's interface, then TFTP of the boot file the
ACK names (``undionly.kpxe``), then HTTP from that address: its iPXE script (``/ipxe/<mac>``),
the kernel and initrd the script names, and the config the kernel line names
(``/ignition/<mac>.json``). Every stage is timed; a machine fails at the first stage that fails.
The same storm runs against bootstrapperd and against dnsmasq (DHCP + TFTP) with nginx (HTTP)
serving the same files on the same paths, one after the other, each in a fresh lab; the report
gives per-stage p50/p99, the failures (target 0), each server's peak RSS (bootstrapperd's
target: < 150 MiB) and the ratios bootstrapperd ÷ dnsmasq+nginx.

The DHCP client (:func:`dora_main`, also used on its own by tests/integration/test_kill9.py)
runs inside a client namespace and does DISCOVER → OFFER → REQUEST → ACK for many MACs over one
UDP socket, as a relay agent (``giaddr`` = the client namespace's address, replies unicast to
its port 67), so one veth carries every machine without a raw socket. It prints one JSON line
per answer (``{"event": "ack", "mac": …, "ip": …, "phase": …}``), flushed as it comes, so a
caller that kills the server mid-load still has every ACK seen. ``--verify MAC=IP`` machines
send an INIT-REBOOT REQUEST (option 50, no server id) for the address they hold instead of a
DORA. The storm's machines (:func:`storm_main`) use the same relay-agent DHCP, asynchronously.
Every exchange is bounded: a few retries, one deadline for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp

from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.bsroot.manifest import build as build_manifest
from bootstrapperd.bsroot.pki import ClusterPKI
from bootstrapperd.lab.netlab import LabError, Namespace, NetLab
from bootstrapperd.model import ClusterModel, load_cluster_file
from bootstrapperd.pack import init_bsroot
from bootstrapperd.render import Kind, Renderer
from protocols.dhcp.options import BOOTREQUEST, MessageType, Opt, encode_ip
from protocols.dhcp.packet import Packet, parse, serialize
from protocols.errors import MalformedPacket

from . import harness
from .common import (
    REPO,
    VENV_BIN,
    Launch,
    PairLab,
    cpu_between,
    dnsmasq_launch,
    first_version_lines,
    fmt,
    make_payload,
    median,
    pair_lab,
    positive_int,
    program_pid,
    running,
    serve_args,
    tail,
    tree_cpu_seconds,
    tree_peak_rss_kib,
    wait_tcp_listening,
    wait_udp_listening,
)
from .http import nginx_conf

T = TypeVar("T")

DHCP_SERVER_PORT = 67
STEP_TIMEOUT = 1.0
"""Seconds a simulated machine waits for an OFFER or ACK before it sends again."""
STEP_TRIES = 3
"""Sends of one DISCOVER or REQUEST before that machine gives up."""
WINDOW = 64
"""Machines whose exchange is under way at once."""


def storm_mac(index: int, prefix: int = 0x02) -> str:
    """The MAC of simulated machine ``index``: locally administered, ``02:5b:xx:xx:xx:xx``."""
    tail = index.to_bytes(4, "big")
    return ":".join(f"{byte:02x}" for byte in bytes([prefix, 0x5B]) + tail)


def relay_request(
    kind: MessageType,
    mac: str,
    xid: int,
    giaddr: IPv4Address,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    extra: Mapping[int, bytes] | None = None,
) -> bytes:
    """A DISCOVER or REQUEST of ``mac`` as a relay agent at ``giaddr`` forwards it, with the
    ``extra`` options (a PXE firmware's vendor class and architecture) when given."""
    options: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes([kind]), **(extra or {})}
    if requested is not None:
        options[Opt.REQUESTED_IP] = encode_ip(requested)
    if server_id is not None:
        options[Opt.SERVER_ID] = encode_ip(server_id)
    packet = Packet(
        op=BOOTREQUEST,
        xid=xid,
        chaddr=bytes.fromhex(mac.replace(":", "")),
        hops=1,
        giaddr=giaddr,
        options=options,
    )
    return serialize(packet)


@dataclass
class Exchange:
    """One simulated machine's exchange under way: what it sent last, when, how often."""

    mac: str
    xid: int
    phase: str
    """``dora`` (a DISCOVER first) or ``verify`` (an INIT-REBOOT REQUEST for ``held``)."""
    held: IPv4Address | None = None
    message: bytes = b""
    sent_at: float = 0.0
    tries: int = 0
    done: bool = False


@dataclass
class DoraClient:
    """Many relay-agent exchanges over one socket, ``WINDOW`` at a time."""

    sock: socket.socket
    server: IPv4Address
    giaddr: IPv4Address
    pending: list[Exchange]
    rate: float = 0.0
    """Machines started per second (the ramp); 0: as fast as the window lets them."""
    active: dict[int, Exchange] = field(default_factory=dict)
    started: int = 0

    def emit(self, event: str, exchange: Exchange, ip: IPv4Address | None = None) -> None:
        """One JSON line on stdout, flushed."""
        line = {"event": event, "mac": exchange.mac, "phase": exchange.phase, "ip": str(ip)}
        print(json.dumps(line), flush=True)

    def send(self, exchange: Exchange, message: bytes, now: float) -> None:
        exchange.message, exchange.sent_at, exchange.tries = message, now, 1
        self._transmit(message)

    def _transmit(self, message: bytes) -> None:
        with contextlib.suppress(OSError):  # a full buffer is a lost packet, retried later
            self.sock.sendto(message, (str(self.server), DHCP_SERVER_PORT))

    def start(self, exchange: Exchange, now: float) -> None:
        """Send the exchange's first message."""
        self.active[exchange.xid] = exchange
        if exchange.phase == "verify":
            message = relay_request(
                MessageType.REQUEST, exchange.mac, exchange.xid, self.giaddr, exchange.held
            )
        else:
            message = relay_request(MessageType.DISCOVER, exchange.mac, exchange.xid, self.giaddr)
        self.send(exchange, message, now)

    def answer(self, data: bytes, now: float) -> None:
        """Take one reply: an OFFER is requested, an ACK or NAK ends the exchange."""
        try:
            reply = parse(data)
        except MalformedPacket:
            return
        exchange = self.active.get(reply.xid)
        if exchange is None or exchange.done:
            return
        kind = reply.message_type
        if kind is MessageType.OFFER and exchange.phase == "dora":
            request = relay_request(
                MessageType.REQUEST,
                exchange.mac,
                exchange.xid,
                self.giaddr,
                reply.yiaddr,
                reply.server_id or self.server,
            )
            self.send(exchange, request, now)
        elif kind in (MessageType.ACK, MessageType.NAK):
            self.finish(exchange, "ack" if kind is MessageType.ACK else "nak", reply.yiaddr)

    def finish(self, exchange: Exchange, event: str, ip: IPv4Address | None) -> None:
        exchange.done = True
        self.active.pop(exchange.xid, None)
        self.emit(event, exchange, ip)

    def retry(self, now: float) -> None:
        """Send again what waited too long; give up after ``STEP_TRIES``."""
        for exchange in list(self.active.values()):
            if now - exchange.sent_at < STEP_TIMEOUT:
                continue
            if exchange.tries >= STEP_TRIES:
                self.finish(exchange, "timeout", None)
                continue
            exchange.sent_at, exchange.tries = now, exchange.tries + 1
            self._transmit(exchange.message)

    def run(self, deadline: float) -> None:
        """Until every exchange ended or ``deadline`` (monotonic) passed."""
        began = time.monotonic()
        while (self.pending or self.active) and time.monotonic() < deadline:
            now = time.monotonic()
            while self.pending and len(self.active) < WINDOW and self.due(began, now):
                self.start(self.pending.pop(0), now)
                self.started += 1
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                self.drain(now)
            self.retry(time.monotonic())

    def due(self, began: float, now: float) -> bool:
        """Whether the next machine's start time on the ramp has come."""
        return self.rate <= 0 or now - began >= self.started / self.rate

    def drain(self, now: float) -> None:
        for _ in range(256):
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            self.answer(data, now)


def exchanges(macs: Iterable[str], verify: Iterable[tuple[str, str]], seed: int) -> list[Exchange]:
    """The verifications first, then a DORA for each MAC; distinct xids."""
    out = [Exchange(mac, 0, "verify", IPv4Address(ip)) for mac, ip in verify] + [
        Exchange(mac, 0, "dora") for mac in macs
    ]
    for number, exchange in enumerate(out):
        exchange.xid = (seed * 0x10000 + number) & 0xFFFFFFFF
    return out


def dora_main(argv: Sequence[str] | None = None) -> int:
    """The simulated machines' DHCP client (see the module docstring); run in a namespace."""
    parser = argparse.ArgumentParser(prog="bench.storm dora")
    parser.add_argument("--server", type=IPv4Address, required=True)
    parser.add_argument("--giaddr", type=IPv4Address, required=True)
    parser.add_argument("--first", type=int, default=0, help="index of the first machine")
    parser.add_argument("--count", type=int, default=0, help="machines doing a DORA")
    parser.add_argument("--mac", action="append", default=[], help="a machine doing a DORA")
    parser.add_argument("--verify", action="append", default=[], help="MAC=IP held")
    parser.add_argument("--seed", type=int, default=1, help="xid prefix (distinct per run)")
    parser.add_argument("--rate", type=float, default=0.0, help="machines started per second")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds at most")
    args = parser.parse_args(argv)
    verify = [(mac, ip) for mac, _, ip in (item.partition("=") for item in args.verify)]
    macs = [*args.mac, *(storm_mac(index) for index in range(args.first, args.first + args.count))]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((str(args.giaddr), DHCP_SERVER_PORT))
    sock.setblocking(False)
    client = DoraClient(sock, args.server, args.giaddr, exchanges(macs, verify, args.seed))
    client.rate = args.rate
    try:
        client.run(time.monotonic() + args.deadline)
    finally:
        sock.close()
    return 0


def dora_argv(python: str, *args: str) -> list[str]:
    """The command that runs :func:`dora_main` with ``args`` under ``python``."""
    code = "import sys; from bench.storm import dora_main; sys.exit(dora_main(sys.argv[1:]))"
    return [python, "-c", code, *args]


def node_entries(macs: Iterable[str]) -> str:
    """YAML items of a description's ``nodes:`` list for ``macs``: workers named after their
    MAC, addresses from the pool (listed machines are never rate-limited as unknown ones)."""
    return "".join(
        f'  - mac: "{mac}"\n    cur_host_name: ""\n    kube_master: n\n    etcd_member: n\n'
        for mac in macs
    )


# --- the storm: figures, schedule and pure helpers ----------------------------------------------

SERVER = "10.78.0.1"
"""The server namespace's address: the bootstrapper of the storm's description."""
CLIENT = "10.78.0.250"
"""The client namespace's own address (outside the pool): the machines' relay agent."""
PREFIX_LEN = 16
NETMASK = "255.255.0.0"
POOL_LOW = "10.78.1.1"
POOL_HIGH = "10.78.31.254"
"""The pool: 7,934 addresses, room for any storm up to that many machines."""
SERVER_IF = "bs0"
CLIENT_IF = "node0"
HTTP_PORT = 80
OURS = "bootstrapperd"
REFERENCE = "dnsmasq+nginx"
SERVER_NAMES = (OURS, REFERENCE)
STAGES = ("dhcp", "tftp", "ipxe", "kernel", "initrd", "config", "total")
"""What is timed for each machine; ``total`` runs from its DISCOVER to its config's last byte
(the address added between DHCP and TFTP counts only there)."""
BOOT_FILE = "undionly.kpxe"
IPXE_PACKAGE = Path("/usr/lib/ipxe") / BOOT_FILE
"""The real iPXE binary served over TFTP when the distribution's ipxe package has it."""
BOOT_FILE_STAND_IN = 74 * 1024
"""Bytes of random stand-in for the boot file when the ipxe package is not installed."""
KERNEL_SIZE = 1 << 20
INITRD_SIZE = 4 << 20
"""The kernel and initrd are stand-ins of random bytes (Flatcar's are ~50 and ~450 MiB: a
storm of those measures the link, not the servers)."""
RSS_TARGET_MIB = 150.0
"""bootstrapperd's peak RSS during the storm should stay below this."""
TAIL = 120.0
"""Seconds the storm may run after its ramp before every machine still booting fails."""
IN_FLIGHT = 256
"""Machines booting at once at most (the rest wait for their turn, still on the clock)."""
DHCP_TIMEOUT = 2.0
DHCP_TRIES = 4
TFTP_TIMEOUT = 1.0
TFTP_TRIES = 5
TFTP_BLKSIZE = 1432
"""What PXE ROMs ask for (fits an Ethernet frame)."""
HTTP_TIMEOUT = 60.0
"""Seconds one HTTP request of one machine may take, body included."""
PXE_OPTIONS: dict[int, bytes] = {
    Opt.VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001",
    Opt.CLIENT_ARCH: b"\x00\x00",
}
"""What a BIOS PXE ROM sends: it gets ``undionly.kpxe`` over TFTP from both servers."""
XID_BASE = 0x5B000000


def ramp_schedule(machines: int, ramp: float) -> list[float]:
    """When each machine starts, in seconds after the first: evenly over ``ramp``."""
    if machines <= 1 or ramp <= 0:
        return [0.0] * machines
    step = ramp / machines
    return [index * step for index in range(machines)]


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0…1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class StageFigures:
    """One stage over every machine that got through it: how many, p50 and p99 in seconds."""

    count: int
    p50: float | None
    p99: float | None


def stage_figures(boots: Sequence[Mapping[str, Any]]) -> dict[str, StageFigures]:
    """Per stage, the latencies of the machines that completed it (:data:`STAGES` order)."""
    out = {}
    for stage in STAGES:
        times = [float(b["stages"][stage]) for b in boots if stage in b.get("stages", {})]
        out[stage] = StageFigures(len(times), percentile(times, 0.5), percentile(times, 0.99))
    return out


def failed_stages(boots: Sequence[Mapping[str, Any]], machines: int) -> dict[str, int]:
    """Failed machines by the stage they failed at; machines with no line at all (the client
    died or was stopped) count under ``lost``."""
    counts: dict[str, int] = {}
    for boot in boots:
        error = boot.get("error")
        if error:
            stage = str(error).partition(":")[0]
            counts[stage] = counts.get(stage, 0) + 1
    lost = machines - len(boots)
    if lost > 0:
        counts["lost"] = lost
    return counts


def script_urls(script: str) -> tuple[str, str, str]:
    """The kernel, initrd and config URLs an iPXE script names (the config: the kernel line's
    ``ignition.config.url=`` or ``cloud-config-url=``)."""
    kernel = initrd = config = ""
    for line in script.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "kernel":
            kernel = words[1]
            for word in words[2:]:
                key, _, value = word.partition("=")
                if key in ("ignition.config.url", "cloud-config-url"):
                    config = value
        elif len(words) >= 2 and words[0] == "initrd":
            initrd = words[1]
    if not (kernel and initrd and config):
        raise ValueError(f"the iPXE script names no kernel, initrd or config: {script[:200]!r}")
    return kernel, initrd, config


def tftp_rrq(name: str, blksize: int = TFTP_BLKSIZE) -> bytes:
    """A read request in octet mode asking for ``blksize`` and ``tsize`` (as PXE ROMs do)."""
    fields = [name, "octet", "blksize", str(blksize), "tsize", "0"]
    return b"\x00\x01" + b"".join(item.encode() + b"\x00" for item in fields)


def tftp_ack(block: int) -> bytes:
    return b"\x00\x04" + block.to_bytes(2, "big")


class StageError(Exception):
    """A machine's boot failed at ``stage``."""

    def __init__(self, stage: str, why: str) -> None:
        super().__init__(f"{stage}: {why}")
        self.stage = stage


@dataclass
class TftpTransfer:
    """The receiving side of one TFTP read: what to answer each datagram of the server."""

    blksize: int = 512
    block: int = 0
    """The last block received in order (0 before the first)."""
    size: int = 0
    done: bool = False

    def take(self, data: bytes) -> bytes | None:
        """The ACK to send for one datagram from the server (None: nothing to answer)."""
        opcode = int.from_bytes(data[:2], "big")
        if opcode == 6 and self.block == 0:  # OACK: the server took our options
            items = data[2:].split(b"\x00")
            options = dict(zip(items[0::2], items[1::2], strict=False))
            self.blksize = int(options.get(b"blksize", b"512") or 512)
            return tftp_ack(0)
        if opcode == 3 and len(data) >= 4:
            number = int.from_bytes(data[2:4], "big")
            if number == (self.block + 1) & 0xFFFF:
                self.block = number
                self.size += len(data) - 4
                self.done = len(data) - 4 < self.blksize
                return tftp_ack(number)
            return tftp_ack(self.block) if number == self.block else None
        if opcode == 5:
            message = data[4:].split(b"\x00")[0].decode(errors="replace")
            raise StageError("tftp", f"error {int.from_bytes(data[2:4], 'big')}: {message}")
        return None


# --- the simulated machines (run in the client namespace) ---------------------------------------


class Inbox(asyncio.DatagramProtocol):
    """A UDP socket's datagrams, queued with their sender."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


class Relay(asyncio.DatagramProtocol):
    """The relay agent's socket (``giaddr``:67): each reply goes to the machine whose xid it
    carries; replies for no machine are dropped."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Queue[Packet]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = parse(data)
        except MalformedPacket:
            return
        queue = self.waiting.get(reply.xid)
        if queue is not None:
            queue.put_nowait(reply)

    def send(self, message: bytes, server: str) -> None:
        if self.transport is not None:
            self.transport.sendto(message, (server, DHCP_SERVER_PORT))


@dataclass(frozen=True)
class StormPlan:
    """What every simulated machine shares: where the servers are, what it must receive."""

    server: str
    giaddr: str
    kernel_size: int
    initrd_size: int


async def dhcp_step(
    relay: Relay, plan: StormPlan, xid: int, message: bytes, want: MessageType
) -> Packet:
    """Send ``message`` until ``want`` (or a NAK) comes back; ``DHCP_TRIES`` sends at most."""
    queue = relay.waiting[xid]
    for _ in range(DHCP_TRIES):
        relay.send(message, plan.server)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DHCP_TIMEOUT):
                while True:
                    reply = await queue.get()
                    if reply.message_type in (want, MessageType.NAK):
                        return reply
    raise StageError("dhcp", f"no {want.name} after {DHCP_TRIES} tries")


async def dhcp_lease(relay: Relay, plan: StormPlan, mac: str, xid: int) -> tuple[str, str]:
    """One machine's DORA as a PXE ROM: its address and the boot file the ACK names."""
    giaddr = IPv4Address(plan.giaddr)
    relay.waiting[xid] = asyncio.Queue()
    try:
        discover = relay_request(MessageType.DISCOVER, mac, xid, giaddr, extra=PXE_OPTIONS)
        offer = await dhcp_step(relay, plan, xid, discover, MessageType.OFFER)
        if offer.message_type is not MessageType.OFFER:
            raise StageError("dhcp", "NAK instead of an OFFER")
        server_id = offer.server_id or IPv4Address(plan.server)
        request = relay_request(
            MessageType.REQUEST, mac, xid, giaddr, offer.yiaddr, server_id, PXE_OPTIONS
        )
        ack = await dhcp_step(relay, plan, xid, request, MessageType.ACK)
    finally:
        relay.waiting.pop(xid, None)
    if ack.message_type is not MessageType.ACK:
        raise StageError("dhcp", "NAK")
    named = ack.file or ack.options.get(Opt.BOOTFILE, b"").rstrip(b"\x00")
    boot_file = named.decode(errors="replace")
    if not boot_file:
        raise StageError("dhcp", "the ACK names no boot file")
    return str(ack.yiaddr), boot_file


async def add_address(ip: str) -> None:
    """Put the machine's leased address on the client namespace's interface (a /32: the
    interface's own /16 route already reaches the server), as a booted machine configures it."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "addr", "add", f"{ip}/32", "dev", CLIENT_IF, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 and b"File exists" not in err:
        raise StageError("addr", err.decode(errors="replace").strip())


async def tftp_get(ip: str, server: str, name: str) -> int:
    """Read ``name`` over TFTP from the machine's address; its size in bytes."""
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, local_addr=(ip, 0))
    try:
        transfer, message = TftpTransfer(), tftp_rrq(name)
        target: tuple[str, int] = (server, 69)
        peer: tuple[str, int] | None = None
        tries = 1
        transport.sendto(message, target)
        while not transfer.done:
            try:
                async with asyncio.timeout(TFTP_TIMEOUT):
                    data, addr = await inbox.queue.get()
            except TimeoutError:
                if tries >= TFTP_TRIES:
                    raise StageError("tftp", f"no answer after {tries} sends") from None
                tries += 1
                transport.sendto(message, target)
                continue
            if peer is None:
                peer = target = addr  # the server's transfer port
            elif addr != peer:
                continue
            answer = transfer.take(data)
            if answer is not None:
                message, tries = answer, 1
                transport.sendto(message, target)
        return transfer.size
    finally:
        transport.close()


async def http_get(session: aiohttp.ClientSession, stage: str, url: str) -> bytes:
    """GET ``url``: its body (scripts and configs; the big files go through
    :func:`http_size`); anything but 200 fails ``stage``."""
    async with session.get(url) as response:
        if response.status != 200:
            raise StageError(stage, f"HTTP {response.status} for {url}")
        return await response.read()


async def http_size(session: aiohttp.ClientSession, stage: str, url: str, size: int) -> None:
    """GET ``url`` and count its bytes (not kept); fail unless they are ``size``."""
    received = 0
    async with session.get(url) as response:
        if response.status != 200:
            raise StageError(stage, f"HTTP {response.status} for {url}")
        async for chunk in response.content.iter_chunked(1 << 16):
            received += len(chunk)
    if received != size:
        raise StageError(stage, f"{received} bytes, expected {size}")


async def timed(stages: dict[str, float], stage: str, work: Awaitable[T]) -> T:
    """Await ``work`` as ``stage``: its seconds in ``stages``; its errors a :class:`StageError`."""
    began = time.monotonic()
    try:
        result = await work
    except StageError:
        raise
    except (OSError, aiohttp.ClientError, ValueError) as exc:
        raise StageError(stage, f"{type(exc).__name__}: {exc}") from None
    stages[stage] = time.monotonic() - began
    return result


async def fetch_script(session: aiohttp.ClientSession, url: str) -> tuple[str, str, str]:
    """The machine's iPXE script: the kernel, initrd and config URLs it names."""
    return script_urls((await http_get(session, "ipxe", url)).decode(errors="replace"))


async def fetch_config(session: aiohttp.ClientSession, url: str) -> None:
    """The machine's config: a JSON document."""
    json.loads(await http_get(session, "config", url))


async def boot_machine(relay: Relay, plan: StormPlan, record: dict[str, Any], xid: int) -> None:
    """One machine's whole boot, into ``record``: its address, its stages' seconds as they
    complete, or the stage it failed at and why."""
    stages: dict[str, float] = record["stages"]
    mac = str(record["mac"])
    began = time.monotonic()
    try:
        ip, boot_file = await timed(stages, "dhcp", dhcp_lease(relay, plan, mac, xid))
        record["ip"] = ip
        await add_address(ip)
        await timed(stages, "tftp", tftp_get(ip, plan.server, boot_file))
        connector = aiohttp.TCPConnector(local_addr=(ip, 0), limit=1)
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            base = f"http://{plan.server}" + ("" if HTTP_PORT == 80 else f":{HTTP_PORT}")
            urls = await timed(stages, "ipxe", fetch_script(session, f"{base}/ipxe/{mac}"))
            kernel, initrd, config = urls
            await timed(stages, "kernel", http_size(session, "kernel", kernel, plan.kernel_size))
            await timed(stages, "initrd", http_size(session, "initrd", initrd, plan.initrd_size))
            await timed(stages, "config", fetch_config(session, config))
        stages["total"] = time.monotonic() - began
    except StageError as exc:
        record["error"] = str(exc)


def next_stage(stages: Mapping[str, float]) -> str:
    """The first stage not yet done: where a machine was when it failed or time ran out."""
    return next((stage for stage in STAGES if stage not in stages), "total")


async def run_machine(
    relay: Relay, plan: StormPlan, gate: asyncio.Semaphore, index: int, at: float, end: float
) -> None:
    """Machine ``index``: wait for its start ``at`` (loop time), boot, print its JSON line; when
    the loop time ``end`` comes first, it fails where it was."""
    loop = asyncio.get_running_loop()
    record: dict[str, Any] = {"mac": storm_mac(index), "ip": None, "stages": {}, "error": None}
    try:
        async with asyncio.timeout_at(end):
            await asyncio.sleep(max(0.0, at - loop.time()))
            async with gate:
                await boot_machine(relay, plan, record, XID_BASE + index)
    except TimeoutError:
        record["error"] = f"{next_stage(record['stages'])}: deadline passed"
    print(json.dumps(record), flush=True)


async def storm(plan: StormPlan, machines: int, ramp: float, deadline: float) -> None:
    """Every machine on the ramp; all done, or failed, within ``deadline`` seconds."""
    loop = asyncio.get_running_loop()
    _, relay = await loop.create_datagram_endpoint(
        Relay, local_addr=(plan.giaddr, DHCP_SERVER_PORT)
    )
    gate = asyncio.Semaphore(IN_FLIGHT)
    start = loop.time()
    end = start + deadline
    try:
        await asyncio.gather(
            *(
                run_machine(relay, plan, gate, index, start + offset, end)
                for index, offset in enumerate(ramp_schedule(machines, ramp))
            )
        )
    finally:
        if relay.transport is not None:
            relay.transport.close()


def storm_main(argv: Sequence[str] | None = None) -> int:
    """The storm's machines (see the module docstring): one JSON line per machine on stdout."""
    parser = argparse.ArgumentParser(prog="bench.storm machines")
    parser.add_argument("--server", required=True)
    parser.add_argument("--giaddr", required=True)
    parser.add_argument("--machines", type=int, required=True)
    parser.add_argument("--ramp", type=float, required=True)
    parser.add_argument("--kernel-size", type=int, required=True)
    parser.add_argument("--initrd-size", type=int, required=True)
    parser.add_argument("--deadline", type=float, required=True, help="seconds at most")
    args = parser.parse_args(argv)
    plan = StormPlan(args.server, args.giaddr, args.kernel_size, args.initrd_size)
    asyncio.run(storm(plan, args.machines, args.ramp, args.deadline))
    return 0


def storm_argv(python: str, machines: int, ramp: float) -> list[str]:
    """The command that runs :func:`storm_main` for ``machines`` over ``ramp`` seconds."""
    code = "import sys; from bench.storm import storm_main; sys.exit(storm_main(sys.argv[1:]))"
    args = ["--server", SERVER, "--giaddr", CLIENT, "--machines", str(machines)]
    args += ["--ramp", str(ramp), "--deadline", str(ramp + TAIL)]
    args += ["--kernel-size", str(KERNEL_SIZE), "--initrd-size", str(INITRD_SIZE)]
    return [python, "-c", code, *args]


# --- the lab: the description, the files, the servers -------------------------------------------


def storm_description(macs: Iterable[str]) -> str:
    """The storm's cluster description: a /16 (10.78.0.0), a pool big enough for any storm,
    one master with a static address, and every simulated machine listed as a worker."""
    return f"""\
# Generated by bench/storm.py: every simulated machine is listed (new unknown MACs are
# rate-limited by design; a storm of listed machines is what an installation looks like).
bootstrapper: {SERVER}
subnet: 10.78.0.0
netmask: {NETMASK}
broadcast: 10.78.255.255
iplow: {POOL_LOW}
iphigh: {POOL_HIGH}
routers: [{SERVER}]
nameservers: [{SERVER}]
upstreamnameservers: []
domainname: storm.internal
dockerdomain: bootstrapper
k8s_service_cluster_ip_range: 10.100.0.0/24
k8s_cluster_dns: 10.100.0.10
flannel_backend: host-gw
lease: "1h"
http_port: {HTTP_PORT}
os:
  name: flatcar
  channel: stable
  version: current
dhcp:
  mode: full
  unknown_machines: ignore
registry:
  mode: "off"
images: {{}}
ssh_authorized_keys:
  - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6A4YCOeE3uokw83aYlwiydyL7QBJMEpz4GykWAgmb3 bench"
nodes:
  - mac: "52:54:00:78:00:01"
    cur_host_name: "master1"
    ip: 10.78.0.10
    kube_master: y
    etcd_member: y
{node_entries(macs)}"""


def renderer_of(bsroot: Path) -> tuple[Renderer, ClusterModel]:
    """bootstrapperd's own renderer and model for ``bsroot``: what it serves each machine."""
    layout = Bsroot(bsroot)
    return Renderer(layout, ClusterPKI(layout.tls)), load_cluster_file(layout.cluster_desc)


def render_text(renderer: Renderer, model: ClusterModel, kind: Kind, mac: str) -> str:
    rendered = renderer.render(kind, model, mac, f"http://{SERVER}")
    if rendered is None:
        raise LabError(f"{mac}: nothing rendered for {kind.value}")
    return rendered.text


def url_path(url: str) -> str:
    """``/static/…`` of ``http://10.78.0.1/static/…``."""
    return urlsplit(url).path


def build_bsroot(scratch: Path, machines: int) -> Path:
    """The packed bsroot every bootstrapperd run copies: the description, the boot file in
    tftpboot, stand-in kernel and initrd where the iPXE scripts point, its manifest."""
    desc = scratch / "cluster-desc.yml"
    desc.write_text(storm_description(storm_mac(index) for index in range(machines)))
    root = init_bsroot(desc, scratch / "bsroot").root
    boot_file = root / "tftpboot" / BOOT_FILE
    if IPXE_PACKAGE.is_file():
        shutil.copyfile(IPXE_PACKAGE, boot_file)
    else:
        make_payload(boot_file, BOOT_FILE_STAND_IN)
    renderer, model = renderer_of(root)
    kernel, initrd, _ = script_urls(render_text(renderer, model, Kind.IPXE, storm_mac(0)))
    make_payload(root / "html" / url_path(kernel).lstrip("/"), KERNEL_SIZE)
    make_payload(root / "html" / url_path(initrd).lstrip("/"), INITRD_SIZE)
    layout = Bsroot(root)
    build_manifest(layout, "bench/storm.py").write(layout)  # as bootstrapperd-pack ends
    return root


def build_http_root(bsroot: Path, root: Path, machines: int) -> Path:
    """What nginx serves: each machine's iPXE script and config as bootstrapperd renders them,
    on the same paths, and the bsroot's ``html/static``."""
    renderer, model = renderer_of(bsroot)
    for index in range(machines):
        mac = storm_mac(index)
        script = render_text(renderer, model, Kind.IPXE, mac)
        _, _, config = script_urls(script)
        kind = Kind.IGNITION if "ignition.config.url=" in script else Kind.CLOUD_CONFIG
        for path, text in ((f"/ipxe/{mac}", script), (url_path(config), None)):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text if text is not None else render_text(renderer, model, kind, mac))
    shutil.copytree(bsroot / "html" / "static", root / "static")
    return root


def dnsmasq_storm_conf(run_dir: Path, tftp_root: Path, machines: int) -> str:
    """dnsmasq for the storm: DHCP only (no DNS), the pool and lease of the description, the
    boot file for PXE ROMs, TFTP; as many leases and TFTP transfers as bootstrapperd allows."""
    lines = [
        "# Generated by bench/storm.py: DHCP + TFTP for the storm's machines (relayed).",
        f"interface={SERVER_IF}",
        "bind-interfaces",
        f"listen-address={SERVER}",
        "port=0",
        f"dhcp-range={POOL_LOW},{POOL_HIGH},{NETMASK},1h",
        f"dhcp-leasefile={run_dir}/dnsmasq.leases",
        "dhcp-authoritative",
        f"dhcp-lease-max={machines + 100}",
        f"dhcp-option=option:router,{SERVER}",
        f"dhcp-option=option:dns-server,{SERVER}",
        f"dhcp-boot={BOOT_FILE},,{SERVER}",
        "# dnsmasq by default pings a new address before offering it: ~3 s per new client",
        "no-ping",
        "enable-tftp",
        f"tftp-root={tftp_root}",
        "# bootstrapperd's bound (protocols/tftp MAX_TRANSFERS); dnsmasq's default is 50",
        "tftp-max=512",
        f"log-facility={run_dir}/dnsmasq.log",
        f"pid-file={run_dir}/dnsmasq.pid",
        "user=root",
    ]
    return "\n".join(lines) + "\n"


def nginx_launch(run_dir: Path, root: Path) -> Launch:
    """nginx (bench/http.py's configuration) serving ``root`` on the server's port 80."""
    conf = run_dir / "nginx.conf"
    conf.write_text(nginx_conf(run_dir, root, SERVER, HTTP_PORT))
    argv = ["nginx", "-c", str(conf), "-p", f"{run_dir}/", "-e", str(run_dir / "nginx-error.log")]
    return Launch(run_dir, argv, logs=(run_dir / "nginx-error.log",))


def launches(context: StormContext, server: str, run_dir: Path) -> list[Launch]:
    """What to start for ``server``: bootstrapperd on a fresh copy of the bsroot, or dnsmasq
    and nginx, each with its own run directory."""
    if server == OURS:
        run_dir.mkdir(parents=True)
        bsroot = run_dir / "bsroot"
        shutil.copytree(context.bsroot, bsroot, symlinks=True)
        argv = [str(VENV_BIN / "bootstrapperd"), *serve_args(bsroot, SERVER_IF, HTTP_PORT)]
        return [Launch(run_dir, argv)]
    if context.http_root is None:
        raise LabError("no HTTP root was built for nginx")
    dnsmasq_dir, nginx_dir = run_dir / "dnsmasq", run_dir / "nginx"
    dnsmasq_dir.mkdir(parents=True)
    nginx_dir.mkdir(parents=True)
    conf = dnsmasq_storm_conf(dnsmasq_dir, context.bsroot / "tftpboot", context.machines)
    return [dnsmasq_launch(dnsmasq_dir, conf), nginx_launch(nginx_dir, context.http_root)]


def wait_ready(ns: Namespace, procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """DHCP and TFTP listen (UDP 67 and 69) and HTTP (TCP 80); a server that exits fails it."""
    first, last = procs[0], procs[-1]
    wait_udp_listening(ns, DHCP_SERVER_PORT, first)
    wait_udp_listening(ns, 69, first)
    wait_tcp_listening(ns, HTTP_PORT, last)


# --- one storm against one server --------------------------------------------------------------


@dataclass
class StormContext:
    """What every storm shares: the scratch directory, the packed bsroot, nginx's root."""

    scratch: Path
    bsroot: Path
    http_root: Path | None
    machines: int
    ramp: float


@dataclass
class StormResult:
    """One storm against one server: every machine's outcome, the server's peak RSS and CPU."""

    server: str
    round: int
    machines: int
    ramp: float
    boots: list[dict[str, Any]] = field(default_factory=list)
    """One entry per machine that reported: mac, ip, stages (seconds), error."""
    seconds: float = 0.0
    peak_rss_kib: int | None = None
    """VmHWM when the storm was over (dnsmasq + nginx: every process's summed)."""
    server_cpu_s: float | None = None
    error: str | None = None
    """Why the storm could not run, or how many machines failed."""
    log_warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def measured(self) -> bool:
        """Whether the storm ran (its figures count even when machines failed)."""
        return bool(self.boots)

    @property
    def booted(self) -> int:
        return sum(1 for boot in self.boots if not boot.get("error"))

    @property
    def failures(self) -> int:
        return self.machines - self.booted

    @property
    def failed_at(self) -> dict[str, int]:
        return failed_stages(self.boots, self.machines)

    @property
    def stages(self) -> dict[str, StageFigures]:
        return stage_figures(self.boots)


def parse_boots(stdout: str) -> list[dict[str, Any]]:
    """The machines' JSON lines (anything else is skipped)."""
    boots = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, dict) and "mac" in item:
                boots.append(item)
    return boots


def failure_text(result: StormResult) -> str | None:
    """``3 of 200 machines failed (tftp 2, lost 1): <first error>``, or None when all booted."""
    if result.failures == 0:
        return None
    kinds = ", ".join(f"{stage} {count}" for stage, count in result.failed_at.items())
    first = next((str(b["error"]) for b in result.boots if b.get("error")), "no line")
    return f"{result.failures} of {result.machines} machines failed ({kinds}); first: {first}"


def storm_once(context: StormContext, server: str, round_: int) -> StormResult:
    """A fresh lab, ``server`` started and ready, the storm from the client namespace, the
    server's peak RSS and CPU read, the server stopped by PID."""
    result = StormResult(server, round_, context.machines, context.ramp)
    run_dir = context.scratch / f"{server.replace('+', '-')}-{round_}"
    starts = launches(context, server, run_dir)
    with NetLab() as netlab, contextlib.ExitStack() as stack:
        pair = pair_lab(netlab, (SERVER_IF, SERVER), (CLIENT_IF, CLIENT), PREFIX_LEN)
        procs = [stack.enter_context(running(netlab, pair.server, launch)) for launch in starts]
        try:
            wait_ready(pair.server, procs)
        except LabError as exc:
            result.error = f"not ready: {exc}"
        else:
            measure(pair, procs, result)
    result.log_warnings = [line for launch in starts for line in launch.warnings()][:5]
    return result


def measure(pair: PairLab, procs: Sequence[subprocess.Popen[bytes]], result: StormResult) -> None:
    """Run the storm against the started server(s); fill ``result``."""
    pids = [program_pid(proc) for proc in procs]
    cpu_before = [tree_cpu_seconds(pid) for pid in pids]
    began = time.monotonic()
    argv = storm_argv(sys.executable, result.machines, result.ramp)
    try:
        done = pair.client.run(argv, timeout=result.ramp + TAIL + 60, cwd=REPO)
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        stderr = "the machines' client was stopped after its deadline"
    result.seconds = time.monotonic() - began
    result.boots = parse_boots(stdout)
    peaks = [tree_peak_rss_kib(pid) for pid in pids]
    known_peaks = [peak for peak in peaks if peak is not None]
    result.peak_rss_kib = sum(known_peaks) if known_peaks else None
    cpu = [cpu_between(b, tree_cpu_seconds(pid)) for b, pid in zip(cpu_before, pids, strict=True)]
    known_cpu = [seconds for seconds in cpu if seconds is not None]
    result.server_cpu_s = sum(known_cpu) if known_cpu else None
    exited = [proc.returncode for proc in procs if proc.poll() is not None]
    if exited:
        result.error = f"{result.server} exited (status {exited[0]}) during the storm"
    elif not result.boots:
        result.error = f"the machines' client reported nothing: {tail(stderr)}"
    else:
        result.error = failure_text(result)


# --- summaries and the report ------------------------------------------------------------------


@dataclass(frozen=True)
class StormSummary:
    """One server over every round: its machines' outcomes and the stages' p50/p99 (seconds,
    the median over rounds), its highest peak RSS and its median CPU."""

    server: str
    runs: int
    machines: int
    """Machines per storm."""
    booted: int
    failures: int
    """Summed over the rounds."""
    failed_at: dict[str, int]
    p50: dict[str, float | None]
    p99: dict[str, float | None]
    peak_rss_kib: int | None
    server_cpu_s: float | None
    storm_s: float | None

    @property
    def rss_met(self) -> bool | None:
        """bootstrapperd's peak RSS against its target (None: not bootstrapperd, or unknown)."""
        if self.server != OURS or self.peak_rss_kib is None:
            return None
        return self.peak_rss_kib / 1024 < RSS_TARGET_MIB


def summarise(results: Sequence[StormResult]) -> list[StormSummary]:
    """One summary per server, in the order measured, over its storms that ran."""
    out = []
    for server, runs in harness.grouped(results, lambda r: r.server).items():
        ran = [r for r in runs if r.measured]
        figures = [r.stages for r in ran]
        failed_at: dict[str, int] = {}
        for r in runs:
            for stage, count in r.failed_at.items():
                failed_at[stage] = failed_at.get(stage, 0) + count
        peaks = [r.peak_rss_kib for r in ran if r.peak_rss_kib is not None]
        out.append(
            StormSummary(
                server=server,
                runs=len(runs),
                machines=runs[0].machines,
                booted=sum(r.booted for r in runs),
                failures=sum(r.failures for r in runs),
                failed_at=failed_at,
                p50={s: median([f[s].p50 for f in figures]) for s in STAGES},
                p99={s: median([f[s].p99 for f in figures]) for s in STAGES},
                peak_rss_kib=max(peaks) if peaks else None,
                server_cpu_s=median([r.server_cpu_s for r in ran]),
                storm_s=median([r.seconds for r in ran]),
            )
        )
    return out


def storm_ratios(summaries: Sequence[StormSummary]) -> list[harness.Ratio]:
    """bootstrapperd ÷ dnsmasq+nginx for every stage's p50 and p99 and the peak RSS (no
    targets: the targets are bootstrapperd's own, 0 failures and < 150 MiB)."""
    table: dict[str, dict[str, float | None]] = {}
    for summary in summaries:
        for stage in STAGES:
            table.setdefault(f"{stage} p50", {})[summary.server] = summary.p50[stage]
            table.setdefault(f"{stage} p99", {})[summary.server] = summary.p99[stage]
        rss = summary.peak_rss_kib
        table.setdefault("peak RSS", {})[summary.server] = float(rss) if rss is not None else None
    return harness.ratios(table, REFERENCE, lower_is_better=True)


def ms(seconds: float | None) -> str:
    return fmt(None if seconds is None else 1000 * seconds, ".1f")


def mib(kib: int | None) -> str:
    return fmt(None if kib is None else kib / 1024, ".1f")


SERVER_COLUMNS = [
    harness.Column("server", 14),
    harness.Column("booted", 11, right=True),
    harness.Column("failures", 8, right=True),
    harness.Column("failed at", 20, gap="  "),
    harness.Column("peak RSS MiB", 12, right=True),
    harness.Column("CPU s", 7, right=True),
    harness.Column("storm s", 7, right=True),
]


def server_cells(summary: StormSummary) -> list[str]:
    failed_at = ", ".join(f"{stage} {count}" for stage, count in summary.failed_at.items())
    return [
        summary.server,
        f"{summary.booted}/{summary.machines * summary.runs}",
        str(summary.failures),
        failed_at or "-",
        mib(summary.peak_rss_kib),
        fmt(summary.server_cpu_s, ".1f"),
        fmt(summary.storm_s, ".1f"),
    ]


def stage_columns(summaries: Sequence[StormSummary], with_ratio: bool) -> list[harness.Column]:
    columns = [harness.Column("stage (ms)", 10)]
    for summary in summaries:
        width = max(9, len(summary.server) + 4)
        columns += [
            harness.Column(f"{summary.server} p50", width, right=True, gap="  "),
            harness.Column("p99", 8, right=True),
        ]
    if with_ratio:
        columns += [
            harness.Column("ratio p50", 9, right=True, gap="  "),
            harness.Column("ratio p99", 9, right=True),
        ]
    return columns


def stage_rows(
    summaries: Sequence[StormSummary], ratios_: Sequence[harness.Ratio]
) -> list[list[str]]:
    by_row = {r.row: r for r in ratios_}
    rows = []
    for stage in STAGES:
        cells = [stage]
        for summary in summaries:
            cells += [ms(summary.p50[stage]), ms(summary.p99[stage])]
        if ratios_:
            for which in ("p50", "p99"):
                ratio = by_row.get(f"{stage} {which}")
                cells.append(fmt(ratio.ratio if ratio else None, ".2f"))
        rows.append(cells)
    return rows


def verdicts(summaries: Sequence[StormSummary]) -> list[str]:
    """The targets: 0 failures for every server, bootstrapperd's peak RSS below 150 MiB."""
    lines = []
    for summary in summaries:
        met = "met" if summary.failures == 0 else "NOT met"
        lines.append(f"failures ({summary.server}): {summary.failures} (target 0: {met})")
    for summary in summaries:
        if summary.server == OURS:
            verdict = {True: "met", False: "NOT met", None: "not measured"}[summary.rss_met]
            lines.append(
                f"peak RSS ({OURS}): {mib(summary.peak_rss_kib)} MiB "
                f"(target < {RSS_TARGET_MIB:.0f} MiB: {verdict})"
            )
    return lines


def render(run: harness.Run[StormContext, StormResult], summaries: Sequence[StormSummary]) -> str:
    args = run.args
    ratios_ = storm_ratios(summaries)
    head = (
        f"Boot storm: {args.machines} machines over {args.ramp:g} s (DHCP → TFTP {BOOT_FILE} → "
        f"HTTP iPXE script, kernel {KERNEL_SIZE >> 20} MiB, initrd {INITRD_SIZE >> 20} MiB, "
        f"config); median of {run.rounds} round(s){harness.affinity_note()}"
    )
    lines = [head, ""]
    lines += harness.text_table(SERVER_COLUMNS, (server_cells(s) for s in summaries))
    lines.append("")
    columns = stage_columns(summaries, bool(ratios_))
    lines += harness.text_table(columns, stage_rows(summaries, ratios_))
    lines.append("")
    lines += verdicts(summaries)
    rss = next((r for r in ratios_ if r.row == "peak RSS"), None)
    if rss is not None:
        lines.append(harness.ratio_line(rss, "KiB", REFERENCE))
    lines += [f"{name}: {version}" for name, version in run.versions.items()]
    load = run.loadavg_after[0] if run.loadavg_after else None
    lines.append(
        f"load average (1 min) before/after: {run.loadavg_before[0]:.2f}/{fmt(load, '.2f')}"
    )
    return "\n".join(lines + harness.failed_lines(run.results, lambda r: f"#{r.round}"))


def json_head(run: harness.Run[StormContext, StormResult]) -> dict[str, object]:
    return {
        "machines": run.args.machines,
        "ramp_s": run.args.ramp,
        "rounds": run.rounds,
        "stages": list(STAGES),
        "sizes": {"kernel": KERNEL_SIZE, "initrd": INITRD_SIZE},
        "targets": {"failures": 0, "bootstrapperd_peak_rss_mib_below": RSS_TARGET_MIB},
        "conditions": run.conditions(),
    }


def json_run(result: StormResult) -> dict[str, Any]:
    figures = {stage: asdict(value) for stage, value in result.stages.items()}
    return {
        **harness.as_json(result),
        "ok": result.ok,
        "booted": result.booted,
        "failures": result.failures,
        "failed_at": result.failed_at,
        "stage_figures": figures,
    }


def json_ratios(summaries: Sequence[StormSummary]) -> list[dict[str, object]]:
    return [r.json("row", "ours", "theirs", "ratio") for r in storm_ratios(summaries)]


# --- the benchmark -----------------------------------------------------------------------------


@contextlib.contextmanager
def open_lab(args: argparse.Namespace, scratch: Path) -> Iterator[StormContext]:
    """The packed bsroot (and nginx's root when dnsmasq+nginx runs); each storm builds its
    own namespaces (:func:`storm_once`), so no lease or address outlives its server."""
    bsroot = build_bsroot(scratch, args.machines)
    http_root = None
    if REFERENCE in args.servers:
        http_root = build_http_root(bsroot, scratch / "http-root", args.machines)
    yield StormContext(scratch, bsroot, http_root, args.machines, args.ramp)


def serve(context: StormContext, server: str, group: None, round_: int) -> list[StormResult]:
    return [storm_once(context, server, round_)]


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--machines", type=positive_int, default=1000, help="simulated machines (1000)"
    )
    parser.add_argument(
        "--ramp", type=float, default=60.0, help="seconds over which they start (60)"
    )


def versions(run: harness.Run[StormContext, StormResult]) -> dict[str, str]:
    commands = {"bootstrapperd": [str(VENV_BIN / "bootstrapperd"), "--version"]}
    if REFERENCE in run.args.servers:
        commands |= {"dnsmasq": ["dnsmasq", "--version"], "nginx": ["nginx", "-v"]}
    return first_version_lines(commands)


def progress(result: StormResult) -> str:
    total = result.stages["total"]
    return (
        f"{result.booted}/{result.machines} booted, total p50 {ms(total.p50)} ms "
        f"p99 {ms(total.p99)} ms, peak RSS {mib(result.peak_rss_kib)} MiB"
    )


def missing_tools() -> list[str]:
    return harness.not_on_path("dnsmasq", "nginx")


BENCHMARK: harness.Benchmark[StormContext, None, StormResult, StormSummary] = harness.Benchmark(
    name="storm",
    about="A boot storm (DHCP, TFTP, HTTP) of many simulated machines; bootstrapperd against "
    "dnsmasq + nginx.",
    servers=SERVER_NAMES,
    rounds=harness.RoundsOption(("--rounds",), 1, "storms per server, each in a fresh lab"),
    open_lab=open_lab,
    groups=harness.one_group,
    serve=serve,
    label=lambda result: f"#{result.round}",
    progress=progress,
    summarise=summarise,
    render=render,
    json_head=json_head,
    json_ratios=json_ratios,
    json_run=json_run,
    add_options=add_options,
    missing_tools=missing_tools,
    versions=versions,
    alternate=True,
    unit="storm",
    scratch_holds="server logs, the bsroot and nginx's root",
)

if __name__ == "__main__":
    sys.exit(harness.main(BENCHMARK))
