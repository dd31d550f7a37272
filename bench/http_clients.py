"""The HTTP benchmark's clients: many downloads of one file started together in the client
namespace, by one small launcher (``python -c``, from the checkout): one curl process per
download or one asyncio (aiohttp) process for all; what they amount to (bytes ÷ first start to
last finish, only when every download is whole); and the HEAD check that a server serves the
file before a row is measured."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bootstrapperd.lab.netlab import Namespace

from .common import MIB, tail

# --- the clients (this part runs inside the client namespace) -------------------------------------


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
        assert proc.stdout is not None
        assert proc.stderr is not None
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
    url: str,
    clients: int,
    timeout: float,  # noqa: ASYNC109 (the downloads' own limit, given to aiohttp)
    chunk: int = MIB,
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


LAUNCHER = (
    "import sys\nfrom bench.http_clients import client_main\nsys.exit(client_main(sys.argv[1:]))"
)


def launcher_argv(kind: str, url: str, clients: int, timeout: float) -> list[str]:
    """The command run in the client namespace (from the checkout, so ``bench`` imports)."""
    return [sys.executable, "-c", LAUNCHER, kind, url, str(clients), f"{timeout:g}"]


# --- what one row's downloads amount to -----------------------------------------------------------


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


# --- is the server serving the file? --------------------------------------------------------------


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
