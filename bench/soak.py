"""Fuzz soak: malformed packets for every protocol against the running daemon, in namespaces.

Run from the checkout as root (dig, tftp-hpa and curl installed)::

    .venv/bin/python -m bench.soak [--packets 1000000] [--protocols dhcp,tftp,dns,http]

For each protocol, ``--packets`` malformed inputs are generated from one valid packet by
mutation — truncation at every length, bit flips, random option TLVs after the fixed header,
oversized fields — plus pure random bytes (:func:`mutants`), and sent from the client
namespace as fast as the daemon takes them: DHCP, TFTP and DNS as UDP datagrams to ports 67,
69 and 53; HTTP as one malformed request (request line or headers) per TCP connection to port
80. The daemon's resident set (``VmRSS``) is sampled before, during (the peak) and after each
protocol. A protocol passes when the daemon's log has no traceback, every service answers a
real client afterwards (a DISCOVER/OFFER/REQUEST/ACK, dig, tftp-hpa, curl) and the RSS after
is within 10 % of the RSS before. The malformed counts are read from ``/metrics``
(``*_events_total{event="malformed…"}``; HTTP: responses with a 4xx code).

The lab: namespaces ``srv`` (``bs0``, 10.77.0.1/24, the daemon on a bsroot packed from the
bundled example) and ``cli`` (``node0``, 10.77.0.250/24). Nothing leaves the namespaces; the
daemon and every client are stopped by PID; each sender is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrapperd.lab.netlab import LabError, Namespace, NetLab
from bootstrapperd.pack import init_bsroot

from . import harness
from .common import REPO, fmt, names_arg, positive_int
from .storm import dora_argv

SERVER = "10.77.0.1"
CLIENT = "10.77.0.250"
EXAMPLE = REPO / "config" / "examples" / "cluster-desc.yml"
LISTED_MAC = "52:54:00:77:00:11"
"""A machine of the example description (worker1): the DHCP probe after the soak."""
PROTOCOLS = ("dhcp", "tftp", "dns", "http")
PORTS = {"dhcp": 67, "tftp": 69, "dns": 53, "http": 80}
RSS_TOLERANCE = 0.10
"""RSS after the soak may exceed RSS before by this share."""
SEND_SECONDS = 1500.0
"""One protocol's sender stops after this long, whatever it has sent."""
HTTP_CONCURRENCY = 32
"""Malformed HTTP connections open at once."""
HTTP_READ_TIMEOUT = 2.0
"""Seconds a malformed HTTP connection waits for the daemon's answer before closing."""
MAX_DATAGRAM = 1400
"""Longest mutant sent over UDP (fits one unfragmented datagram on the lab's veth)."""


# --- valid packets and their mutations ---------------------------------------------------------


def dhcp_seed() -> bytes:
    """A valid DHCPDISCOVER from a PXE client (BOOTP header, cookie, options, end)."""
    header = bytes([1, 1, 6, 0]) + (0x5EED0001).to_bytes(4, "big") + bytes(8)
    header += bytes(12) + bytes.fromhex("525400aa0001") + bytes(10) + bytes(192)
    options = bytes([53, 1, 1, 55, 4, 1, 3, 6, 67, 93, 2, 0, 7])
    options += bytes([60, 9]) + b"PXEClient" + bytes([255])
    return header + bytes.fromhex("63825363") + options


def tftp_seed() -> bytes:
    """A valid read request for ``boot.ipxe`` with the blksize and tsize options."""
    return b"\x00\x01boot.ipxe\x00octet\x00blksize\x001468\x00tsize\x000\x00"


def dns_seed() -> bytes:
    """A valid query: A of bootstrapper.cluster.example, recursion desired, EDNS0."""
    header = bytes.fromhex("5eed01000001000000000001")
    name = b"".join(bytes([len(p)]) + p for p in (b"bootstrapper", b"cluster", b"example"))
    return header + name + b"\x00\x00\x01\x00\x01" + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


def http_seed() -> bytes:
    """A valid HTTP/1.1 request for the metrics."""
    return b"GET /metrics HTTP/1.1\r\nHost: 10.77.0.1\r\nUser-Agent: soak\r\nAccept: */*\r\n\r\n"


SEEDS: dict[str, Callable[[], bytes]] = {
    "dhcp": dhcp_seed,
    "tftp": tftp_seed,
    "dns": dns_seed,
    "http": http_seed,
}
TLV_START = {"dhcp": 240, "tftp": 2, "dns": 12, "http": 0}
"""Where each seed's variable part begins: random TLVs replace what follows."""


def truncations(data: bytes) -> Iterator[bytes]:
    """``data`` cut at every length, from empty to one byte short."""
    for length in range(len(data)):
        yield data[:length]


def bit_flips(data: bytes, rng: random.Random, flips: int = 3) -> bytes:
    """``data`` with up to ``flips`` random bits inverted."""
    out = bytearray(data)
    for _ in range(rng.randint(1, flips)):
        position = rng.randrange(len(out) * 8)
        out[position // 8] ^= 1 << (position % 8)
    return bytes(out)


def random_tlvs(data: bytes, start: int, rng: random.Random, count: int = 8) -> bytes:
    """``data``'s fixed part up to ``start``, then ``count`` random type-length-value items
    whose lengths may lie (longer or shorter than what follows)."""
    out = bytearray(data[:start])
    for _ in range(rng.randint(1, count)):
        length = rng.randrange(256)
        value = rng.randbytes(rng.choice((length, rng.randrange(256))))
        out += bytes([rng.randrange(256), length]) + value
    return bytes(out)


def oversized(data: bytes, rng: random.Random, limit: int = MAX_DATAGRAM) -> bytes:
    """``data`` with one random position repeated into a run that fills it to ``limit``."""
    position = rng.randrange(len(data))
    run = data[position : position + 1] * (limit - len(data))
    return (data[:position] + run + data[position:])[:limit]


def pure_random(rng: random.Random, limit: int = MAX_DATAGRAM) -> bytes:
    """Random bytes of a random length up to ``limit``."""
    return rng.randbytes(rng.randrange(limit + 1))


def http_mutant(data: bytes, rng: random.Random) -> bytes:
    """A malformed HTTP request: a mangled request line, a broken or huge header, or a
    mutation of the whole request (an HTTP mutant always ends its head)."""
    kind = rng.randrange(5)
    if kind == 0:
        method = rng.choice((b"GE T", b"\x00GET", b"G" * 300, b"GET"))
        target = rng.choice((b"/%zz", b"/" + b"a" * 9000, b"\xff\xfe", b"*", b""))
        version = rng.choice((b"HTTP/9.9", b"HTTP/1.1 x", b"", b"HTTP/1.1"))
        head = method + b" " + target + b" " + version + b"\r\nHost: x\r\n"
    elif kind == 1:
        head = b"GET / HTTP/1.1\r\n" + rng.choice(
            (b"Host\r\n", b": v\r\n", b"X: " + b"v" * 20000 + b"\r\n", b"Content-Length: -1\r\n")
        )
    elif kind == 2:
        head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(200))
    elif kind == 3:
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    else:
        head = bit_flips(data, rng, flips=8)
    return head.rstrip(b"\r\n") + b"\r\n\r\n"


def mutants(protocol: str, count: int, seed: int = 1) -> Iterator[bytes]:
    """``count`` malformed inputs for ``protocol``: every truncation of its valid packet
    first, then bit flips, random TLVs, oversized fields and pure random bytes in turn."""
    data = SEEDS[protocol]()
    rng = random.Random(seed)
    sent = 0
    for cut in truncations(data):
        if sent >= count:
            return
        yield cut if protocol != "http" else cut + b"\r\n\r\n"
        sent += 1
    start = TLV_START[protocol]
    kinds: list[Callable[[], bytes]] = [
        lambda: bit_flips(data, rng),
        lambda: random_tlvs(data, start, rng),
        lambda: oversized(data, rng),
        lambda: pure_random(rng),
    ]
    if protocol == "http":
        kinds = [lambda: http_mutant(data, rng)] * 3 + [lambda: pure_random(rng)]
    while sent < count:
        yield kinds[sent % len(kinds)]()
        sent += 1


# --- the sender (runs in the client namespace) -------------------------------------------------


def send_udp(protocol: str, count: int, seed: int, deadline: float) -> int:
    """Send ``count`` mutants to the server's port; replies are read and dropped. Returns how
    many were sent before ``deadline``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CLIENT, 0))
    sock.setblocking(False)
    sent = 0
    target = (SERVER, PORTS[protocol])
    try:
        for data in mutants(protocol, count, seed):
            if time.monotonic() > deadline:
                break
            while True:
                try:
                    sock.sendto(data, target)
                    break
                except BlockingIOError:
                    time.sleep(0.001)  # the kernel's queue is full: as fast as it takes them
                except ConnectionRefusedError:
                    continue  # an ICMP error for an earlier datagram
                except OSError:
                    break  # a datagram the kernel refuses (too long): counted as sent anyway
            sent += 1
            with contextlib.suppress(OSError):
                while sock.recv(65536):
                    pass
    finally:
        sock.close()
    return sent


async def _http_one(data: bytes) -> None:
    reader, writer = await asyncio.open_connection(SERVER, PORTS["http"])
    try:
        writer.write(data)
        await writer.drain()
        await asyncio.wait_for(reader.read(65536), HTTP_READ_TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), HTTP_READ_TIMEOUT)


async def _send_http(count: int, seed: int, deadline: float) -> int:
    inputs = mutants("http", count, seed)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        for data in inputs:
            if time.monotonic() > deadline:
                return
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await _http_one(data)
            sent += 1

    await asyncio.gather(*(worker() for _ in range(HTTP_CONCURRENCY)))
    return sent


def send_main(argv: Sequence[str] | None = None) -> int:
    """The sender: ``PROTOCOL COUNT SEED``; prints ``{"sent": N}``. Run in the client ns."""
    protocol, count, seed = (argv if argv is not None else sys.argv[1:])[:3]
    deadline = time.monotonic() + SEND_SECONDS
    if protocol == "http":
        sent = asyncio.run(_send_http(int(count), int(seed), deadline))
    else:
        sent = send_udp(protocol, int(count), int(seed), deadline)
    print(json.dumps({"sent": sent}), flush=True)
    return 0


def sender_argv(protocol: str, count: int, seed: int) -> list[str]:
    """The command that runs :func:`send_main` in a namespace."""
    code = "import sys; from bench.soak import send_main; sys.exit(send_main())"
    return [sys.executable, "-c", code, protocol, str(count), str(seed)]


# --- the lab and the daemon --------------------------------------------------------------------


@dataclass
class SoakLab:
    """The daemon's namespace and the client namespace, and the bsroot the daemon serves."""

    netlab: NetLab
    server: Namespace
    client: Namespace
    bsroot: Path
    scratch: Path

    @classmethod
    def build(cls, netlab: NetLab, bsroot: Path, scratch: Path) -> SoakLab:
        server = netlab.namespace("srv")
        client = netlab.namespace("cli")
        netlab.veth(server, "bs0", client, "node0", f"{SERVER}/24", f"{CLIENT}/24")
        return cls(netlab, server, client, bsroot, scratch)


@dataclass
class Daemon:
    """``bootstrapperd serve`` in the server namespace, its output in ``log``."""

    proc: object
    pid: int
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_daemon(lab: SoakLab, name: str = "daemon") -> Daemon:
    """Start the daemon and wait until DHCP, TFTP, DNS and HTTP listen."""
    log = lab.scratch / f"{name}.log"
    program = str(Path(sys.executable).parent / "bootstrapperd")
    # init_bsroot's bsroot has no iPXE binaries or OS kernel: serve it anyway
    argv = [program, "serve", "--bsroot", str(lab.bsroot), "--serve-without-boot-files"]
    with log.open("wb") as out:
        proc = lab.server.spawn(argv, stdout=out, stderr=out)
    daemon = Daemon(proc, proc.pid, log)
    deadline = time.monotonic() + 30
    while not all(f"service={s}" in daemon.output for s in PROTOCOLS):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"the daemon did not start:\n{daemon.output[-2000:]}")
        time.sleep(0.05)
    return daemon


def rss_kib(pid: int) -> int | None:
    """The process's resident set now (``VmRSS``), in KiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


@dataclass
class RSSSampler:
    """Samples a process's RSS in a thread while a protocol is soaked: the peak seen."""

    pid: int
    peak: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, rss_kib(self.pid) or 0)


@contextlib.contextmanager
def sampling(pid: int) -> Iterator[RSSSampler]:
    sampler = RSSSampler(pid, rss_kib(pid) or 0)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler.stop.set()
        thread.join()


# --- real clients after the soak ---------------------------------------------------------------


def probe_dhcp(lab: SoakLab) -> str | None:
    """A listed machine's DISCOVER/OFFER/REQUEST/ACK through a relay: None, or what failed."""
    args = ["--server", SERVER, "--giaddr", CLIENT, "--mac", LISTED_MAC, "--deadline", "10"]
    result = lab.client.run(dora_argv(sys.executable, *args), timeout=30, cwd=REPO)
    return None if '"event": "ack"' in result.stdout else f"dhcp: {result.stdout[-300:]}"


def probe_dns(lab: SoakLab) -> str | None:
    argv = ["dig", f"@{SERVER}", "+time=3", "+tries=2", "+short", "bootstrapper.cluster.example"]
    result = lab.client.run(argv, timeout=30)
    return None if result.stdout.strip() == SERVER else f"dns: {result.stdout}{result.stderr}"


def probe_tftp(lab: SoakLab) -> str | None:
    out = lab.scratch / "probe-boot.ipxe"
    out.unlink(missing_ok=True)
    argv = ["tftp", "-m", "binary", SERVER, "-c", "get", "boot.ipxe", str(out)]
    result = lab.client.run(argv, timeout=60)
    ok = out.exists() and out.read_bytes().startswith(b"#!ipxe")
    return None if ok else f"tftp: {result.stdout}{result.stderr}"


def metrics_text(lab: SoakLab) -> str | None:
    """``/metrics`` fetched with curl from the client namespace (None: no answer)."""
    argv = ["curl", "-sf", "--max-time", "10", f"http://{SERVER}/metrics"]
    result = lab.client.run(argv, timeout=30)
    return result.stdout if result.returncode == 0 else None


PROBES: dict[str, Callable[[SoakLab], str | None]] = {
    "dhcp": probe_dhcp,
    "tftp": probe_tftp,
    "dns": probe_dns,
    "http": lambda lab: None if metrics_text(lab) is not None else "http: /metrics unanswered",
}


def probe_all(lab: SoakLab) -> list[str]:
    """What failed among the real clients of every service (empty: all answered)."""
    return [why for probe in PROBES.values() if (why := probe(lab)) is not None]


_SAMPLE = re.compile(r"^bootstrapperd_(\w+?)_(?:events|requests)_total\{([^}]*)\} (\S+)$", re.M)


def malformed_counts(metrics: str) -> dict[str, int]:
    """Malformed inputs per protocol in a ``/metrics`` text: the DHCP, TFTP and DNS events
    whose kind starts with ``malformed``; for HTTP the requests answered with a 4xx code and
    those aiohttp's parser refused or the connection guard closed for their head."""
    counts = dict.fromkeys(PROTOCOLS, 0)
    for service, labels, value in _SAMPLE.findall(metrics):
        if service == "http":
            if re.search(r'code="4\d\d"|event="(bad_request|head_too_large|head_timeout)"', labels):
                counts["http"] += int(float(value))
        elif service in counts and re.search(r'event="malformed', labels):
            counts[service] += int(float(value))
    return counts


def tracebacks(text: str) -> int:
    """How many tracebacks a log holds."""
    return text.count("Traceback (most recent call last)")


# --- one soak ----------------------------------------------------------------------------------


@dataclass
class SoakResult:
    """One protocol soaked against one daemon: what was sent, counted, and what held."""

    server: str
    protocol: str
    packets: int
    sent: int = 0
    seconds: float = 0.0
    malformed_counted: int = 0
    rss_before_kib: int = 0  # after any warm-up: the level the soak must come back to
    rss_peak_kib: int = 0
    rss_after_kib: int = 0
    tracebacks: int = 0
    unanswered: list[str] = field(default_factory=list)
    error: str | None = None
    log_warnings: list[str] = field(default_factory=list)
    warmup: int = 0  # inputs sent first, unmeasured (the allocator's high-water mark)
    rss_cold_kib: int = 0  # before the warm-up

    @property
    def rss_growth(self) -> float | None:
        """RSS after ÷ RSS before − 1."""
        if not self.rss_before_kib:
            return None
        return self.rss_after_kib / self.rss_before_kib - 1

    @property
    def warmup_growth(self) -> float | None:
        """RSS before the soak ÷ RSS before the warm-up − 1."""
        if not self.rss_cold_kib:
            return None
        return self.rss_before_kib / self.rss_cold_kib - 1

    @property
    def ok(self) -> bool:
        growth = self.rss_growth
        rss_ok = growth is not None and growth <= RSS_TOLERANCE
        return self.error is None and not self.tracebacks and not self.unanswered and rss_ok


def soak_protocol(
    lab: SoakLab, daemon: Daemon, protocol: str, packets: int, warmup: int = 0
) -> SoakResult:
    """Send ``packets`` mutants of ``protocol``, then check the daemon and every service.
    With ``warmup``, that many other mutants go first, unmeasured: a process's first burst
    leaves the allocator's arenas at a high-water mark it keeps, which is not a leak; the RSS
    the soak must return to is read after it (the growth of the warm-up is reported)."""
    result = SoakResult("bootstrapperd", protocol, packets, warmup=warmup)
    result.rss_cold_kib = rss_kib(daemon.pid) or 0
    if warmup:
        lab.client.run(
            sender_argv(protocol, warmup, seed=packets + 1), timeout=SEND_SECONDS + 60, cwd=REPO
        )
        probe_all(lab)
    before = malformed_counts(metrics_text(lab) or "")
    result.rss_before_kib = rss_kib(daemon.pid) or 0
    began = time.monotonic()
    with sampling(daemon.pid) as sampler:
        done = lab.client.run(
            sender_argv(protocol, packets, seed=packets), timeout=SEND_SECONDS + 60, cwd=REPO
        )
    result.seconds = time.monotonic() - began
    result.rss_peak_kib = sampler.peak
    try:
        result.sent = int(json.loads(done.stdout.strip().splitlines()[-1])["sent"])
    except (IndexError, ValueError, KeyError):
        result.error = f"sender failed: {done.stderr[-500:]}"
    result.unanswered = probe_all(lab)
    after = malformed_counts(metrics_text(lab) or "")
    result.malformed_counted = after[protocol] - before[protocol]
    result.rss_after_kib = rss_kib(daemon.pid) or 0
    result.tracebacks = tracebacks(daemon.output)
    if result.error is None and not result.ok:
        result.error = failure(result)
    return result


def failure(result: SoakResult) -> str:
    """Why a soak that sent everything did not pass."""
    growth = result.rss_growth
    reasons = [f"{result.tracebacks} tracebacks in the log"] if result.tracebacks else []
    reasons += [f"unanswered: {', '.join(result.unanswered)}"] if result.unanswered else []
    if growth is None or growth > RSS_TOLERANCE:
        reasons.append(f"RSS grew {fmt(100 * growth if growth is not None else None, '+.1f')} %")
    return "; ".join(reasons)


def soak(
    lab: SoakLab, protocols: Sequence[str], packets: int, warmup: int = 0
) -> tuple[list[SoakResult], str]:
    """Start the daemon, check every service answers, soak each protocol in turn, stop the
    daemon by PID: the results and the daemon's log."""
    daemon = start_daemon(lab)
    try:
        unanswered = probe_all(lab)  # also warms the daemon up before RSS is first read
        if unanswered:
            raise LabError(f"services unanswered before the soak: {unanswered}")
        results = [soak_protocol(lab, daemon, protocol, packets, warmup) for protocol in protocols]
    finally:
        lab.netlab.stop(daemon.proc)  # type: ignore[arg-type]
    return results, daemon.output


# --- the benchmark -----------------------------------------------------------------------------


@dataclass
class SoakContext:
    """What the soak's one server start needs: the lab's parts and the options."""

    netlab: NetLab
    scratch: Path
    protocols: list[str]
    packets: int
    warmup: int


@contextlib.contextmanager
def open_lab(args: argparse.Namespace, scratch: Path) -> Iterator[SoakContext]:
    with NetLab() as netlab:
        warmup = args.warmup if args.warmup is not None else args.packets // 10
        yield SoakContext(netlab, scratch, list(args.protocols), int(args.packets), int(warmup))


def serve(context: SoakContext, server: str, group: None, round_: int) -> list[SoakResult]:
    """One daemon, every protocol soaked in turn, on a fresh bsroot."""
    run_dir = context.scratch / f"round-{round_}"
    run_dir.mkdir()
    bsroot = init_bsroot(EXAMPLE, run_dir / "bsroot").root
    with NetLab() as netlab:
        lab = SoakLab.build(netlab, bsroot, run_dir)
        results, log = soak(lab, context.protocols, context.packets, context.warmup)
    lines = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line]
    for result in results:
        result.log_warnings = lines[:3]
    return results


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--packets", type=positive_int, default=1_000_000, help="malformed inputs per protocol"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="inputs sent first per protocol, unmeasured (default: a tenth of --packets)",
    )
    parser.add_argument(
        "--protocols",
        type=lambda text: names_arg(text, PROTOCOLS),
        default=list(PROTOCOLS),
        help=f"comma-separated: {','.join(PROTOCOLS)}",
    )


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def row_cells(result: SoakResult) -> list[str]:
    growth = result.rss_growth
    return [
        result.protocol,
        str(result.sent),
        fmt(result.sent / result.seconds if result.seconds else None, ".0f"),
        str(result.malformed_counted),
        fmt(100 * result.warmup_growth if result.warmup_growth is not None else None, "+.1f"),
        mib(result.rss_before_kib),
        mib(result.rss_peak_kib),
        mib(result.rss_after_kib),
        fmt(100 * growth if growth is not None else None, "+.1f"),
        str(result.tracebacks),
        "yes" if not result.unanswered else "NO",
        "pass" if result.ok else "FAIL",
    ]


COLUMNS = [
    harness.Column("protocol", 8),
    harness.Column("sent", 9, right=True),
    harness.Column("per s", 7, right=True),
    harness.Column("malformed", 9, right=True),
    harness.Column("warm-up %", 9, right=True),
    harness.Column("RSS MiB", 7, right=True),
    harness.Column("peak", 6, right=True),
    harness.Column("after", 6, right=True),
    harness.Column("grow %", 6, right=True),
    harness.Column("tracebacks", 10, right=True),
    harness.Column("answers", 7),
    harness.Column("verdict", 7),
]


def render(run: harness.Run[SoakContext, SoakResult], summaries: Sequence[SoakResult]) -> str:
    lines = harness.text_table(COLUMNS, (row_cells(r) for r in summaries))
    lines += [f"unanswered after {r.protocol}: {r.unanswered}" for r in summaries if r.unanswered]
    return "\n".join(lines + harness.failed_lines(run.results, lambda r: r.protocol))


def json_head(run: harness.Run[SoakContext, SoakResult]) -> dict[str, object]:
    return {
        "packets": run.args.packets,
        "protocols": run.args.protocols,
        "rss_tolerance": RSS_TOLERANCE,
        "conditions": run.conditions(),
    }


def json_run(result: SoakResult) -> dict[str, object]:
    return {**harness.as_json(result), "ok": result.ok, "rss_growth": result.rss_growth}


BENCHMARK: harness.Benchmark[SoakContext, None, SoakResult, SoakResult] = harness.Benchmark(
    name="soak",
    about="Malformed DHCP, TFTP, DNS and HTTP inputs against the running daemon.",
    servers=("bootstrapperd",),
    rounds=harness.RoundsOption(("--rounds",), 1, "soaks, each on a fresh daemon"),
    open_lab=open_lab,
    groups=harness.one_group,
    serve=serve,
    label=lambda result: result.protocol,
    progress=lambda r: f"{r.sent} sent, {r.malformed_counted} counted malformed",
    summarise=list,
    render=render,
    json_head=json_head,
    json_ratios=lambda summaries: [],
    json_run=json_run,
    add_options=add_options,
    missing_tools=lambda: harness.not_on_path("dig", "tftp", "curl"),
    unit="protocol soaked",
)

if __name__ == "__main__":
    sys.exit(harness.main(BENCHMARK))
