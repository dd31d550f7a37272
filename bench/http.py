"""HTTP benchmark: image download MiB/s of bootstrapperd and nginx to many concurrent clients.

Run from the checkout as root (nginx-light and curl installed)::

    .venv/bin/python -m bench.http [--repeats 3] [--clients 100] [--size-mib 256]

Other options: ``--servers bootstrapperd,nginx``, ``--client curl|aiohttp``, ``--timeout 600``
(seconds per row), ``--json out.json``, ``--keep-scratch``.

One bsroot is built in a scratch directory with a file of random bytes at
``html/static/bench/image.bin``. Both servers serve that same file at the same URL,
``http://10.91.0.1/static/bench/image.bin``, on 10.91.0.1:80 in the server namespace:

- bootstrapperd: ``bootstrapperd serve --bsroot BSROOT`` (its image mirror route, /static);
- nginx: ``root BSROOT/html`` with ``sendfile on; tcp_nopush on; worker_processes auto``,
  ``daemon off``, its pid file, error log and temp paths in the run directory, started as a
  program in the server namespace and stopped by its master's PID (the master stops its
  workers). No other nginx on the machine is touched.

The lab is two network namespaces joined by one veth pair (server ``10.91.0.1/24`` on
``srv0``, client ``10.91.0.2/24`` on ``cli0``, MTU 1500, the veth's default offloads, as in
bench/tftp.py); nothing touches the host's interfaces. The clients run in the client
namespace, started together by one small launcher (this module, ``python -c``): by default one
``curl -s -o /dev/null -w '%{size_download} %{http_code}'`` process per client (``--client
aiohttp``: one asyncio process holding every download). Two rows: ``1 client`` and ``N
clients`` (``--clients``, 100). A row's MiB/s is the bytes received by every client ÷ the wall
time from the first client's start to the last one's finish; it counts only when every
download got status 200 and the whole file. Each server is started afresh for every repeat,
serves both rows, and is stopped by PID; the two servers alternate order from one repeat to
the next. Figures are medians over ``--repeats`` runs; the table gives the ratio
bootstrapperd/nginx per row beside its target (N clients: ≥ 0.9), the server's and the clients'
CPU seconds and each server's peak RSS. See bench/README.md for the definitions and results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bootstrapperd.lab.netlab import LabError, Namespace, NetLab, unavailable_reason
from bootstrapperd.model import ConfigError
from bootstrapperd.pack import init_bsroot

from .common import (
    REPO,
    VENV_BIN,
    Launch,
    PairLab,
    first_version_lines,
    fmt,
    lab_description,
    machine_facts,
    median,
    names_arg,
    pair_lab,
    peak_rss_kib,
    positive_int,
    program_pid,
    running,
    scratch_dir,
    serve_args,
    tail,
    wait_tcp_listening,
)

SERVER_ADDR = "10.91.0.1"
CLIENT_ADDR = "10.91.0.2"
PREFIX_LEN = 24
SERVER_IF = "srv0"
CLIENT_IF = "cli0"
MTU = 1500
HTTP_PORT = 80
IMAGE_PATH = "static/bench/image.bin"
"""The image's path under ``html/`` in the bsroot, and its URL path on both servers."""
URL = f"http://{SERVER_ADDR}/{IMAGE_PATH}"
MIB = 1024 * 1024

SERVER_NAMES = ("bootstrapperd", "nginx")
REFERENCE = "nginx"
"""The server bootstrapperd's figures are divided by."""
CLIENT_KINDS = ("curl", "aiohttp")
MANY_TARGET = 0.9
"""bootstrapperd's MiB/s ÷ nginx's with N clients should be at least this."""


# --- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """How many clients download the whole file at once; the target ratio, if any."""

    name: str
    clients: int
    target_ratio: float | None

    @property
    def label(self) -> str:
        return f"{self.clients} client" if self.clients == 1 else f"{self.clients} clients"


def rows_for(clients: int) -> list[Row]:
    """``1 client`` (no target) and ``N clients`` (≥ 0.9 × nginx); one row when N is 1."""
    many = Row("many", clients, MANY_TARGET)
    if clients == 1:
        return [many]
    return [Row("single", 1, None), many]


def server_order(servers: Sequence[str], repeat: int) -> list[str]:
    """The servers in the given order on odd repeats (1, 3, …), reversed on even ones."""
    return list(servers) if repeat % 2 == 1 else list(reversed(servers))


# --- the clients (this part runs inside the client namespace) -----------------------------------


@dataclass(frozen=True)
class Download:
    """One client's download: when it started and finished (launcher's monotonic clock)."""

    start: float
    end: float
    size: int
    """Bytes received (curl's ``size_download``)."""
    status: int
    """HTTP status (0: no response)."""
    error: str | None = None


def curl_argv(url: str, timeout: float) -> list[str]:
    """One client: the whole file to /dev/null; prints the size received and the status."""
    return [
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        f"{timeout:g}",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{http_code}",
        url,
    ]


def parse_curl_output(text: str) -> tuple[int, int] | None:
    """(size_download, http_code) from curl's ``-w`` line, or None when it is not there."""
    fields = text.split()
    if len(fields) != 2:
        return None
    try:
        return int(fields[0]), int(fields[1])
    except ValueError:
        return None


def run_curl_clients(url: str, clients: int, timeout: float) -> tuple[list[Download], float]:
    """Start ``clients`` curl processes at once; the downloads and the curls' CPU seconds.

    Every child is reaped with ``wait4`` as soon as it exits: its finish time is when it
    exited, and its rusage is the client CPU.
    """
    argv = curl_argv(url, timeout)
    started: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    for _ in range(clients):
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started[proc.pid] = (proc, start)
    finished: dict[int, tuple[float, int]] = {}
    cpu = 0.0
    while len(finished) < len(started):
        pid, status, usage = os.wait4(-1, 0)
        if pid not in started:
            continue
        finished[pid] = (time.monotonic(), os.waitstatus_to_exitcode(status))
        cpu += usage.ru_utime + usage.ru_stime
    downloads = []
    for pid, (proc, start) in started.items():
        end, code = finished[pid]
        proc.returncode = code  # reaped above; Popen must not wait for it again
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read().decode(errors="replace")
        err = proc.stderr.read().decode(errors="replace")
        proc.stdout.close()
        proc.stderr.close()
        parsed = parse_curl_output(out)
        size, http_status = parsed if parsed is not None else (0, 0)
        error = None
        if code != 0:
            error = f"curl exited with status {code}: {tail(err, 200)}"
        elif parsed is None:
            error = f"unexpected curl output {out!r}"
        downloads.append(Download(start, end, size, http_status, error))
    return downloads, cpu


async def run_aiohttp_clients(
    url: str, clients: int, timeout: float, chunk: int = MIB
) -> tuple[list[Download], float]:
    """``clients`` concurrent GETs from one asyncio process; the downloads and its CPU seconds."""
    import aiohttp  # only in the client namespace's launcher

    before = resource.getrusage(resource.RUSAGE_SELF)

    async def one(session: aiohttp.ClientSession) -> Download:
        start = time.monotonic()
        size, status = 0, 0
        try:
            async with session.get(url) as response:
                status = response.status
                while data := await response.content.read(chunk):
                    size += len(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Download(start, time.monotonic(), size, status, f"{type(exc).__name__}: {exc}")
        return Download(start, time.monotonic(), size, status)

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    session_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=session_timeout, auto_decompress=False
    ) as session:
        downloads = await asyncio.gather(*(one(session) for _ in range(clients)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return list(downloads), cpu


def client_main(argv: Sequence[str]) -> int:
    """The launcher: ``KIND URL CLIENTS TIMEOUT``; prints one JSON object on stdout."""
    kind, url, clients, timeout = argv[0], argv[1], int(argv[2]), float(argv[3])
    if kind == "curl":
        downloads, cpu = run_curl_clients(url, clients, timeout)
    else:
        downloads, cpu = asyncio.run(run_aiohttp_clients(url, clients, timeout))
    print(json.dumps({"downloads": [asdict(d) for d in downloads], "client_cpu_s": cpu}))
    return 0


LAUNCHER = "import sys\nfrom bench.http import client_main\nsys.exit(client_main(sys.argv[1:]))"


def launcher_argv(kind: str, url: str, clients: int, timeout: float) -> list[str]:
    """The command run in the client namespace (from the checkout, so ``bench`` imports)."""
    return [sys.executable, "-c", LAUNCHER, kind, url, str(clients), f"{timeout:g}"]


# --- what one row's downloads amount to ---------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """All the downloads of one row, checked and summed."""

    clients: int
    total_bytes: int
    seconds: float | None
    """First start to last finish."""
    mib_per_s: float | None
    """total_bytes ÷ seconds, only when every download is complete."""
    fastest_s: float | None
    slowest_s: float | None
    spawn_spread_s: float | None
    """Last start − first start: how long starting every client took."""
    errors: list[str]


def aggregate(downloads: Sequence[Download], expected_size: int, clients: int) -> Aggregate:
    """Check every download (status 200, the whole file) and the aggregate MiB/s."""
    errors = []
    if len(downloads) != clients:
        errors.append(f"{len(downloads)} downloads reported, expected {clients}")
    bad = [d for d in downloads if d.error or d.status != 200 or d.size != expected_size]
    if bad:
        first = bad[0]
        why = first.error or f"status {first.status}, {first.size} of {expected_size} bytes"
        errors.append(f"{len(bad)} of {len(downloads)} downloads failed, e.g. {why}")
    total = sum(d.size for d in downloads)
    if not downloads:
        return Aggregate(clients, 0, None, None, None, None, None, errors or ["no downloads"])
    seconds = max(d.end for d in downloads) - min(d.start for d in downloads)
    durations = [d.end - d.start for d in downloads]
    rate = total / MIB / seconds if not errors and seconds > 0 else None
    return Aggregate(
        clients=clients,
        total_bytes=total,
        seconds=seconds,
        mib_per_s=rate,
        fastest_s=min(durations),
        slowest_s=max(durations),
        spawn_spread_s=max(d.start for d in downloads) - min(d.start for d in downloads),
        errors=errors,
    )


def parse_launcher_output(text: str) -> tuple[list[Download], float]:
    """The launcher's JSON: the downloads and the clients' CPU seconds (ValueError if bad)."""
    data = json.loads(text.strip().splitlines()[-1])
    downloads = [Download(**item) for item in data["downloads"]]
    return downloads, float(data["client_cpu_s"])


# --- servers under test -------------------------------------------------------------------------


CLUSTER_DESC = lab_description("bench/http.py", "10.91.0", SERVER_ADDR, "52:54:00:91:00:01")


def build_bsroot(scratch: Path, size: int, chunk: int = MIB) -> Path:
    """A bsroot in ``scratch``/bsroot holding ``size`` random bytes at html/IMAGE_PATH."""
    desc = scratch / "cluster-desc.yml"
    desc.write_text(CLUSTER_DESC)
    bsroot = init_bsroot(desc, scratch / "bsroot")
    image = bsroot.root / "html" / IMAGE_PATH
    image.parent.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as out:
        left = size
        while left > 0:
            data = os.urandom(min(chunk, left))
            out.write(data)
            left -= len(data)
    return bsroot.root


def launch_bootstrapperd(run_dir: Path, bsroot: Path) -> Launch:
    """``bootstrapperd serve`` on the shared bsroot (HTTP on 10.91.0.1:80)."""
    argv = [str(VENV_BIN / "bootstrapperd"), *serve_args(bsroot, SERVER_IF, HTTP_PORT)]
    return Launch(run_dir, argv)


NGINX_CONF = """\
# Generated by bench/http.py: the bsroot's html/ at /, static files only, everything in run_dir.
daemon off;
master_process on;
worker_processes auto;
user root;
pid {run_dir}/nginx.pid;
error_log {run_dir}/nginx-error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;

    server {{
        listen {address}:{port};
        root {root};
    }}
}}
"""


def nginx_conf(run_dir: Path, html: Path, address: str = SERVER_ADDR, port: int = HTTP_PORT) -> str:
    """nginx serving ``html`` at / on ``address:port``; pid, logs and temp files in run_dir.

    ``user root``: the scratch directory is a 0700 ``mkdtemp``, which the default worker user
    could not enter.
    """
    return NGINX_CONF.format(run_dir=run_dir, root=html, address=address, port=port)


def launch_nginx(run_dir: Path, bsroot: Path) -> Launch:
    """nginx in the foreground (its master is the spawned PID) on the bsroot's html/."""
    conf = run_dir / "nginx.conf"
    conf.write_text(nginx_conf(run_dir, bsroot / "html"))
    # -e: the error log used before the configuration is read; -p: no default prefix paths.
    argv = [
        "nginx",
        "-c",
        str(conf),
        "-p",
        f"{run_dir}/",
        "-e",
        str(run_dir / "nginx-error.log"),
    ]
    return Launch(run_dir, argv, logs=(run_dir / "nginx-error.log",))


def prepare(server: str, run_dir: Path, bsroot: Path) -> Launch:
    run_dir.mkdir(parents=True, exist_ok=True)
    if server == "bootstrapperd":
        return launch_bootstrapperd(run_dir, bsroot)
    return launch_nginx(run_dir, bsroot)


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (nginx: the master and its workers)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of the process and its live descendants, all threads, in seconds."""
    total, seen = 0.0, False
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        seen = True
    return total if seen else None


def tree_peak_rss_kib(pid: int) -> int | None:
    """VmHWM summed over the process and its descendants (shared pages counted in each)."""
    peaks = [peak_rss_kib(process.pid) for process in process_tree(pid)]
    known = [peak for peak in peaks if peak is not None]
    return sum(known) if known else None


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs so far (the ``cpu`` line of /proc/stat)."""
    try:
        with open("/proc/stat") as stream:
            fields = [int(value) for value in stream.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of all CPUs' time that was not idle between two ``cpu_jiffies`` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


# --- the lab ------------------------------------------------------------------------------------


Lab = PairLab


def build_lab(lab: NetLab) -> Lab:
    """Server and client namespaces joined by one veth pair (MTU 1500), both in 10.91.0.0/24."""
    return pair_lab(lab, (SERVER_IF, SERVER_ADDR), (CLIENT_IF, CLIENT_ADDR), PREFIX_LEN, MTU)


def head_check_argv(url: str) -> list[str]:
    """A HEAD request printing the status and the Content-Length."""
    return [
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "2",
        "-I",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{content-length}",
        url,
    ]


def wait_serving(ns: Namespace, url: str, size: int, timeout: float = 15.0) -> str | None:
    """HEAD ``url`` until it answers 200 with Content-Length ``size``: None, else why not."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        result = ns.run(head_check_argv(url), timeout=5)
        answer = result.stdout.strip()
        if answer == f"200 {size}":
            return None
        last = f"HEAD {url}: {answer or 'no answer'} {tail(result.stderr, 200)}".strip()
        if answer.startswith("404"):
            return last  # serving, but not this file: waiting will not help
        time.sleep(0.1)
    return last


# --- one row ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One row (one set of simultaneous downloads) against one server, in one repeat."""

    server: str
    row: str
    clients: int
    repeat: int
    ok: bool
    error: str | None
    seconds: float | None = None
    mib_per_s: float | None = None
    total_bytes: int = 0
    fastest_s: float | None = None
    slowest_s: float | None = None
    spawn_spread_s: float | None = None
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    machine_busy_pct: float | None = None
    """Share of all CPUs' time not idle during the row (everything on the machine)."""
    peak_rss_kib: int | None = None
    """The server's VmHWM (nginx: master + workers summed) when it was stopped."""
    log_warnings: list[str] = field(default_factory=list)


def measure(
    lab: Lab, server: str, pid: int, row: Row, size: int, kind: str, repeat: int, timeout: float
) -> RunResult:
    """Run ``row``'s clients once against the server ``pid``; check and sum their downloads."""

    def failed(error: str) -> RunResult:
        return RunResult(server, row.name, row.clients, repeat, False, error)

    cpu_before, jiffies_before = tree_cpu_seconds(pid), cpu_jiffies()
    argv = launcher_argv(kind, URL, row.clients, timeout)
    try:
        done = lab.client.run(argv, timeout=timeout + 60, cwd=REPO)
    except subprocess.TimeoutExpired:
        return failed(f"clients still running after {timeout + 60:g} s")
    cpu_after, jiffies_after = tree_cpu_seconds(pid), cpu_jiffies()
    if done.returncode != 0:
        return failed(f"client launcher exited with {done.returncode}: {tail(done.stderr)}")
    try:
        downloads, client_cpu = parse_launcher_output(done.stdout)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return failed(f"unreadable launcher output ({exc}): {tail(done.stdout)}")
    agg = aggregate(downloads, size, row.clients)
    return RunResult(
        server=server,
        row=row.name,
        clients=row.clients,
        repeat=repeat,
        ok=not agg.errors,
        error="; ".join(agg.errors) or None,
        seconds=agg.seconds,
        mib_per_s=agg.mib_per_s,
        total_bytes=agg.total_bytes,
        fastest_s=agg.fastest_s,
        slowest_s=agg.slowest_s,
        spawn_spread_s=agg.spawn_spread_s,
        server_cpu_s=(
            cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        ),
        client_cpu_s=client_cpu,
        machine_busy_pct=busy_percent(jiffies_before, jiffies_after),
    )


def _last_line(path: Path) -> str:
    """The last line of a server's stderr (a traceback's exception) after ": ", or ""."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f": {tail(lines[-1], 300)}" if lines else ""


def serve_and_measure(
    lab: Lab,
    server: str,
    launch: Launch,
    rows: Sequence[Row],
    size: int,
    kind: str,
    repeat: int,
    timeout: float,
) -> list[RunResult]:
    """Start ``server``, wait for TCP 80 and a right HEAD answer, run every row, stop it."""
    results: list[RunResult] = []

    def failed(targets: Sequence[Row], error: str) -> list[RunResult]:
        return [RunResult(server, r.name, r.clients, repeat, False, error) for r in targets]

    with running(lab.lab, lab.server, launch) as proc:
        try:
            wait_tcp_listening(lab.server, HTTP_PORT, proc, timeout=30)
        except LabError as exc:
            results = failed(rows, f"not serving: {exc}{_last_line(launch.stderr)}")
        else:
            why = wait_serving(lab.client, URL, size)
            if why is not None:
                results = failed(rows, f"not serving the image: {why}")
            else:
                pid = program_pid(proc)
                for row in rows:
                    if proc.poll() is not None:
                        results += failed([row], f"{server} exited with status {proc.returncode}")
                        continue
                    results.append(measure(lab, server, pid, row, size, kind, repeat, timeout))
                rss = tree_peak_rss_kib(pid)
                for result in results:
                    result.peak_rss_kib = rss
    warnings = launch.warnings()
    for result in results:
        result.log_warnings = warnings
    return results


# --- summary ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The medians over the successful repeats of one server on one row."""

    server: str
    row: str
    clients: int
    mib_per_s: float | None
    seconds: float | None
    slowest_s: float | None
    server_cpu_s: float | None
    client_cpu_s: float | None
    peak_rss_kib: float | None
    ok: int
    runs: int


def summarise(results: Sequence[RunResult]) -> list[Summary]:
    """Medians per (row, server) over the runs that succeeded: 1 client first, servers in
    ``SERVER_NAMES`` order."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.row, result.server), []).append(result)

    def key(item: tuple[tuple[str, str], list[RunResult]]) -> tuple[int, int, str]:
        (_row, server), runs = item
        rank = SERVER_NAMES.index(server) if server in SERVER_NAMES else 99
        return (runs[0].clients, rank, server)

    summaries = []
    for (row, server), runs in sorted(groups.items(), key=key):
        good = [r for r in runs if r.ok]
        summaries.append(
            Summary(
                server=server,
                row=row,
                clients=runs[0].clients,
                mib_per_s=median([r.mib_per_s for r in good]),
                seconds=median([r.seconds for r in good]),
                slowest_s=median([r.slowest_s for r in good]),
                server_cpu_s=median([r.server_cpu_s for r in good]),
                client_cpu_s=median([r.client_cpu_s for r in good]),
                peak_rss_kib=median([r.peak_rss_kib for r in runs]),
                ok=len(good),
                runs=len(runs),
            )
        )
    return summaries


@dataclass(frozen=True)
class Ratio:
    """bootstrapperd's median MiB/s ÷ nginx's on one row, against the row's target (if any)."""

    row: str
    clients: int
    ours: float | None
    theirs: float | None
    target: float | None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.theirs if self.ours is not None and self.theirs else None

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.target is None:
            return None
        return self.ratio >= self.target


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[Ratio]:
    """One per row (in the summaries' order): bootstrapperd ÷ ``reference``, with its target;
    a side not measured is None."""
    out: dict[str, Ratio] = {}
    for s in summaries:
        ratio = out.get(s.row) or Ratio(
            s.row, s.clients, None, None, MANY_TARGET if s.row == "many" else None
        )
        if s.server == "bootstrapperd":
            ratio = Ratio(ratio.row, ratio.clients, s.mib_per_s, ratio.theirs, ratio.target)
        elif s.server == reference:
            ratio = Ratio(ratio.row, ratio.clients, ratio.ours, s.mib_per_s, ratio.target)
        out[s.row] = ratio
    return list(out.values())


def _target_text(r: Ratio) -> str:
    if r.target is None:
        return "none"
    verdict = {True: "met", False: "NOT met", None: "not measured"}[r.met]
    return f"≥ {r.target:.2f} ({verdict})"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_table(
    summaries: Sequence[Summary],
    results: Sequence[RunResult],
    size: int,
    kind: str = "curl",
    repeats: int = 1,
) -> str:
    """The ratio table (row, both servers' MiB/s, ratio, target), then the details per server
    and row, peak RSS, and every failed run."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = f"; all on CPU {','.join(map(str, cpus))}" if len(cpus) < (os.cpu_count() or 0) else ""
    clients = "curl processes" if kind == "curl" else "one aiohttp process"
    lines = [
        f"HTTP, {size / MIB:g} MiB file, veth MTU {MTU}, clients: {clients}{pinned}; "
        f"MiB/s = bytes received by all clients ÷ first start to last finish; "
        f"median of {repeats}",
        f"{'row':<12} {'bootstrapperd MiB/s':>19} {'nginx MiB/s':>11} {'ratio':>6}  target",
    ]
    for r in ratios(summaries):
        label = Row(r.row, r.clients, r.target).label
        lines.append(
            f"{label:<12} {_rate(r.ours):>19} {_rate(r.theirs):>11} "
            f"{fmt(r.ratio, '.2f'):>6}  {_target_text(r)}"
        )
    lines.append("")
    lines.append(
        f"{'row':<12} {'server':<13} {'MiB/s':>8} {'time s':>7} {'slowest s':>9} "
        f"{'srv CPU s':>9} {'cli CPU s':>9} {'ok/runs':>7}"
    )
    for s in summaries:
        label = Row(s.row, s.clients, None).label
        rate = "FAILED" if s.mib_per_s is None else f"{s.mib_per_s:.1f}"
        lines.append(
            f"{label:<12} {s.server:<13} {rate:>8} {fmt(s.seconds, '.2f'):>7} "
            f"{fmt(s.slowest_s, '.2f'):>9} {fmt(s.server_cpu_s, '.2f'):>9} "
            f"{fmt(s.client_cpu_s, '.2f'):>9} {f'{s.ok}/{s.runs}':>7}"
        )
    peaks: dict[str, float] = {}
    for s in summaries:
        if s.peak_rss_kib is not None:
            peaks[s.server] = max(peaks.get(s.server, 0.0), s.peak_rss_kib)
    if peaks:
        text = ", ".join(f"{server} {kib / 1024:.1f} MiB" for server, kib in peaks.items())
        lines.append(f"peak RSS (VmHWM at stop; nginx: master + workers summed): {text}")
    for f in results:
        if not f.ok:
            label = Row(f.row, f.clients, None).label
            lines.append(f"FAILED {f.server} {label} #{f.repeat}: {f.error}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http",
        description="Image download MiB/s of bootstrapperd and nginx to many clients, in a "
        "private lab.",
    )
    parser.add_argument(
        "--repeats", "--repeat", type=positive_int, default=3, help="runs per pair; median (3)"
    )
    parser.add_argument(
        "--clients", type=positive_int, default=100, help="concurrent downloads in the N row (100)"
    )
    parser.add_argument("--size-mib", type=positive_int, default=256, help="file size in MiB (256)")
    parser.add_argument(
        "--servers",
        type=lambda text: names_arg(text, SERVER_NAMES),
        default=list(SERVER_NAMES),
        help="comma-separated: bootstrapperd,nginx",
    )
    parser.add_argument(
        "--client",
        choices=CLIENT_KINDS,
        default="curl",
        help="one curl process per download (default) or one aiohttp process for all",
    )
    parser.add_argument(
        "--timeout", type=positive_int, default=600, help="seconds allowed per row (600)"
    )
    parser.add_argument("--json", type=Path, help="also write every run and the medians here")
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help="keep the scratch directory (bsroot, server logs and configuration)",
    )
    return parser


def run_all(args: argparse.Namespace, scratch: Path, bsroot: Path) -> list[RunResult]:
    """Every repeat × server (alternating order) × row in one lab; servers started afresh."""
    rows = rows_for(args.clients)
    size = args.size_mib * MIB
    results: list[RunResult] = []
    with NetLab() as netlab:
        lab = build_lab(netlab)
        for repeat in range(1, args.repeats + 1):
            for server in server_order(args.servers, repeat):
                launch = prepare(server, scratch / f"{server}-{repeat}", bsroot)
                runs = serve_and_measure(
                    lab, server, launch, rows, size, args.client, repeat, args.timeout
                )
                for result in runs:
                    print(_progress(result), file=sys.stderr, flush=True)
                results += runs
    return results


def _progress(result: RunResult) -> str:
    head = f"[{Row(result.row, result.clients, None).label} #{result.repeat}] {result.server}: "
    if result.ok:
        line = (
            f"{head}{fmt(result.mib_per_s, '.1f')} MiB/s in {fmt(result.seconds, '.2f')} s "
            f"(slowest client {fmt(result.slowest_s, '.2f')} s, clients started within "
            f"{fmt(result.spawn_spread_s, '.3f')} s), server CPU {fmt(result.server_cpu_s, '.2f')}"
            f" s, client CPU {fmt(result.client_cpu_s, '.2f')} s, all CPUs "
            f"{fmt(result.machine_busy_pct, '.0f')} % busy"
        )
    else:
        line = f"{head}FAILED: {result.error}"
    for warning in result.log_warnings:
        line += f"\n    log: {warning}"
    return line


def tool_versions() -> dict[str, str]:
    """The first line of each server's and client's version output."""
    commands = {"nginx": ["nginx", "-v"], "curl": ["curl", "--version"]}
    versions = first_version_lines(commands)
    import aiohttp

    versions["aiohttp"] = aiohttp.__version__
    return versions


DEFINITIONS = {
    "mib_per_s": "bytes received by all clients of the row (MiB) ÷ seconds; only when every "
    "download got status 200 and the whole file",
    "seconds": "first client's start to the last client's finish (the launcher's clock)",
    "slowest_s": "the longest single download of the row",
    "spawn_spread_s": "the last client's start − the first's (starting the clients)",
    "server_cpu_s": "server CPU time (user + system, all threads; nginx: master + workers) "
    "during the row",
    "client_cpu_s": "CPU time of the clients (curl: every curl process's rusage; aiohttp: "
    "the launcher's)",
    "machine_busy_pct": "share of all CPUs' time not idle during the row (/proc/stat; "
    "includes anything else running on the machine)",
    "peak_rss_kib": "VmHWM of the server when it was stopped (nginx: master + workers summed)",
    "ratio": "bootstrapperd's median MiB/s ÷ nginx's, per row",
}
"""What each reported figure is (also written into the JSON report)."""


def json_report(
    args: argparse.Namespace,
    summaries: Sequence[Summary],
    results: Sequence[RunResult],
    loadavg_before: tuple[float, float, float],
) -> dict[str, object]:
    """Everything measured: facts, definitions, rows, medians, ratios and every run."""
    return {
        "benchmark": "http",
        "url": URL,
        "size_bytes": args.size_mib * MIB,
        "repeats": args.repeats,
        "client": args.client,
        "client_argv": curl_argv(URL, args.timeout) if args.client == "curl" else None,
        "mtu": MTU,
        "machine": machine_facts(),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "tools": tool_versions(),
        "definitions": DEFINITIONS,
        "rows": [asdict(row) for row in rows_for(args.clients)],
        "summary": [asdict(s) for s in summaries],
        "ratios": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in ratios(summaries)],
        "runs": [asdict(r) for r in results],
    }


def missing_tools() -> list[str]:
    return [tool for tool in ("nginx", "curl", "ss") if shutil.which(tool) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reason = unavailable_reason()
    if reason is None and (missing := missing_tools()):
        reason = f"not installed: {', '.join(missing)}"
    if reason is not None:
        print(f"bench.http: cannot build the lab: {reason}", file=sys.stderr)
        return 1
    loadavg_before = os.getloadavg()
    try:
        with scratch_dir("bench-http-", keep=args.keep_scratch) as scratch:
            bsroot = build_bsroot(scratch, args.size_mib * MIB)
            results = run_all(args, scratch, bsroot)
    except ConfigError as exc:
        print(f"bench.http: the generated cluster description is refused:\n{exc.report()}")
        return 1
    except LabError as exc:
        print(f"bench.http: {exc}", file=sys.stderr)
        return 1
    summaries = summarise(results)
    print(render_table(summaries, results, args.size_mib * MIB, args.client, args.repeats))
    if args.json is not None:
        report = json_report(args, summaries, results, loadavg_before)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
