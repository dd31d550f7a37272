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
namespace, started together by one small launcher (bench/http_clients.py, ``python -c``): by
default one ``curl -s -o /dev/null -w '%{size_download} %{http_code}'`` process per client
(``--client aiohttp``: one asyncio process holding every download). Two rows: ``1 client`` and
``N clients`` (``--clients``, 100). A row's MiB/s is the bytes received by every client ÷ the
wall time from the first client's start to the last one's finish; it counts only when every
download got status 200 and the whole file. Each server is started afresh for every repeat,
serves both rows, and is stopped by PID; the two servers alternate order from one repeat to
the next. Figures are medians over ``--repeats`` runs; the table gives the ratio
bootstrapperd/nginx per row beside its target (N clients: ≥ 0.9), the server's and the clients'
CPU seconds and each server's peak RSS. See bench/README.md for the definitions and results.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bootstrapperd.lab.netlab import LabError, NetLab
from bootstrapperd.pack import init_bsroot

from . import harness
from .common import (
    MIB,
    REPO,
    VENV_BIN,
    Launch,
    PairLab,
    busy_percent,
    cpu_between,
    cpu_jiffies,
    first_version_lines,
    fmt,
    lab_description,
    make_payload,
    median,
    pair_lab,
    positive_int,
    program_pid,
    serve_args,
    tail,
    tree_cpu_seconds,
    tree_peak_rss_kib,
    wait_tcp_listening,
)
from .harness import (
    Benchmark,
    Column,
    RoundsOption,
    Run,
    affinity_note,
    failed_lines,
    figures,
    grouped,
    not_on_path,
    text_table,
)
from .http_clients import aggregate, curl_argv, launcher_argv, parse_launcher_output, wait_serving

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


# --- servers under test -------------------------------------------------------------------------


CLUSTER_DESC = lab_description("bench/http.py", "10.91.0", SERVER_ADDR, "52:54:00:91:00:01")


def build_bsroot(scratch: Path, size: int) -> Path:
    """A bsroot in ``scratch``/bsroot holding ``size`` random bytes at html/IMAGE_PATH."""
    desc = scratch / "cluster-desc.yml"
    desc.write_text(CLUSTER_DESC)
    bsroot = init_bsroot(desc, scratch / "bsroot")
    make_payload(bsroot.root / "html" / IMAGE_PATH, size)
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


@dataclass(frozen=True)
class HttpLab:
    """What every row shares: the two namespaces, the bsroot holding the file, the options."""

    pair: PairLab
    scratch: Path
    bsroot: Path
    size: int
    kind: str
    """The clients: ``curl`` or ``aiohttp``."""
    timeout: float


@contextlib.contextmanager
def open_lab(args: argparse.Namespace, scratch: Path) -> Iterator[HttpLab]:
    """The bsroot with the file; server and client namespaces joined by one veth pair (MTU
    1500), both in 10.91.0.0/24."""
    size = args.size_mib * MIB
    bsroot = build_bsroot(scratch, size)
    with NetLab() as netlab:
        pair = pair_lab(netlab, (SERVER_IF, SERVER_ADDR), (CLIENT_IF, CLIENT_ADDR), PREFIX_LEN, MTU)
        yield HttpLab(pair, scratch, bsroot, size, args.client, args.timeout)


def measure(lab: HttpLab, server: str, pid: int, row: Row, repeat: int) -> RunResult:
    """Run ``row``'s clients once against the server ``pid``; check and sum their downloads."""

    def failed(error: str) -> RunResult:
        return RunResult(server, row.name, row.clients, repeat, False, error)

    cpu_before, jiffies_before = tree_cpu_seconds(pid), cpu_jiffies()
    argv = launcher_argv(lab.kind, URL, row.clients, lab.timeout)
    try:
        done = lab.pair.client.run(argv, timeout=lab.timeout + 60, cwd=REPO)
    except subprocess.TimeoutExpired:
        return failed(f"clients still running after {lab.timeout + 60:g} s")
    cpu_after, jiffies_after = tree_cpu_seconds(pid), cpu_jiffies()
    if done.returncode != 0:
        return failed(f"client launcher exited with {done.returncode}: {tail(done.stderr)}")
    try:
        downloads, client_cpu = parse_launcher_output(done.stdout)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return failed(f"unreadable launcher output ({exc}): {tail(done.stdout)}")
    agg = aggregate(downloads, lab.size, row.clients)
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
        server_cpu_s=cpu_between(cpu_before, cpu_after),
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


def serve_rows(lab: HttpLab, server: str, rows: Sequence[Row], repeat: int) -> list[RunResult]:
    """Start ``server`` afresh, wait for TCP 80 and a right HEAD answer, run every row, note its
    peak RSS, stop it."""
    launch = prepare(server, lab.scratch / f"{server}-{repeat}", lab.bsroot)

    def ready(proc: subprocess.Popen[bytes]) -> str | None:
        try:
            wait_tcp_listening(lab.pair.server, HTTP_PORT, proc, timeout=30)
        except LabError as exc:
            return f"not serving: {exc}{_last_line(launch.stderr)}"
        why = wait_serving(lab.pair.client, URL, lab.size)
        return None if why is None else f"not serving the image: {why}"

    def failed(targets: Sequence[Row], error: str) -> list[RunResult]:
        return [RunResult(server, r.name, r.clients, repeat, False, error) for r in targets]

    def run_row(pid: int, row: Row) -> RunResult:
        return measure(lab, server, pid, row, repeat)

    def note_rss(proc: subprocess.Popen[bytes], results: list[RunResult]) -> None:
        rss = tree_peak_rss_kib(program_pid(proc))
        for result in results:
            result.peak_rss_kib = rss

    pair = lab.pair
    return harness.run_server(
        pair.lab, pair.server, launch, server, rows, ready, run_row, failed, note_rss
    )


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


def _order(item: tuple[tuple[str, str], list[RunResult]]) -> tuple[int, int, str]:
    """1 client first, then servers in ``SERVER_NAMES`` order (others last, by name)."""
    (_row, server), runs = item
    rank = SERVER_NAMES.index(server) if server in SERVER_NAMES else 99
    return (runs[0].clients, rank, server)


def summarise(results: Sequence[RunResult]) -> list[Summary]:
    """Medians per (row, server) over the runs that succeeded: 1 client first, servers in
    ``SERVER_NAMES`` order."""
    groups = grouped(results, lambda r: (r.row, r.server))
    summaries = []
    for (row, server), runs in sorted(groups.items(), key=_order):
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


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[harness.Ratio]:
    """One per row (in the summaries' order): bootstrapperd ÷ ``reference``, with its target;
    a side not measured is None."""
    table = figures(summaries, lambda s: s.row, lambda s: s.mib_per_s)
    return harness.ratios(table, reference, _target, both_measured=False)


def _target(row: str) -> float | None:
    return MANY_TARGET if row == "many" else None


def clients_label(clients: int) -> str:
    """``1 client``, ``100 clients``."""
    return Row("", clients, None).label


RATIO_COLUMNS = (
    Column("row", 12),
    Column("bootstrapperd MiB/s", 19, right=True),
    Column("nginx MiB/s", 11, right=True),
    Column("ratio", 6, right=True),
    Column("target", gap="  "),
)
COLUMNS = (
    Column("row", 12),
    Column("server", 13),
    Column("MiB/s", 8, right=True),
    Column("time s", 7, right=True),
    Column("slowest s", 9, right=True),
    Column("srv CPU s", 9, right=True),
    Column("cli CPU s", 9, right=True),
    Column("ok/runs", 7, right=True),
)


def label(result: RunResult) -> str:
    return f"{clients_label(result.clients)} #{result.repeat}"


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
    clients = {s.row: s.clients for s in summaries}
    ratio_rows = [
        [
            clients_label(clients[r.row]),
            _rate(r.ours),
            _rate(r.theirs),
            fmt(r.ratio, ".2f"),
            r.bound if r.target is None else f"{r.bound} ({r.verdict})",
        ]
        for r in ratios(summaries)
    ]
    rows = [
        [
            clients_label(s.clients),
            s.server,
            "FAILED" if s.mib_per_s is None else f"{s.mib_per_s:.1f}",
            fmt(s.seconds, ".2f"),
            fmt(s.slowest_s, ".2f"),
            fmt(s.server_cpu_s, ".2f"),
            fmt(s.client_cpu_s, ".2f"),
            f"{s.ok}/{s.runs}",
        ]
        for s in summaries
    ]
    who = "curl processes" if kind == "curl" else "one aiohttp process"
    lines = [
        f"HTTP, {size / MIB:g} MiB file, veth MTU {MTU}, clients: {who}{affinity_note()}; "
        f"MiB/s = bytes received by all clients ÷ first start to last finish; "
        f"median of {repeats}",
        *text_table(RATIO_COLUMNS, ratio_rows),
        "",
        *text_table(COLUMNS, rows),
    ]
    peaks: dict[str, float] = {}
    for s in summaries:
        if s.peak_rss_kib is not None:
            peaks[s.server] = max(peaks.get(s.server, 0.0), s.peak_rss_kib)
    if peaks:
        text = ", ".join(f"{server} {kib / 1024:.1f} MiB" for server, kib in peaks.items())
        lines.append(f"peak RSS (VmHWM at stop; nginx: master + workers summed): {text}")
    return "\n".join([*lines, *failed_lines(results, label)])


# --- the benchmark ------------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    """--clients, --size-mib, --client, --timeout."""
    parser.add_argument(
        "--clients", type=positive_int, default=100, help="concurrent downloads in the N row (100)"
    )
    parser.add_argument("--size-mib", type=positive_int, default=256, help="file size in MiB (256)")
    parser.add_argument(
        "--client",
        choices=CLIENT_KINDS,
        default="curl",
        help="one curl process per download (default) or one aiohttp process for all",
    )
    parser.add_argument(
        "--timeout", type=positive_int, default=600, help="seconds allowed per row (600)"
    )


def progress(result: RunResult) -> str:
    return (
        f"{fmt(result.mib_per_s, '.1f')} MiB/s in {fmt(result.seconds, '.2f')} s "
        f"(slowest client {fmt(result.slowest_s, '.2f')} s, clients started within "
        f"{fmt(result.spawn_spread_s, '.3f')} s), server CPU {fmt(result.server_cpu_s, '.2f')}"
        f" s, client CPU {fmt(result.client_cpu_s, '.2f')} s, all CPUs "
        f"{fmt(result.machine_busy_pct, '.0f')} % busy"
    )


def tool_versions(run: Run[HttpLab, RunResult]) -> dict[str, str]:
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


def json_head(run: Run[HttpLab, RunResult]) -> dict[str, object]:
    """The URL, the options, the client command, the conditions, the definitions, the rows."""
    args = run.args
    return {
        "url": URL,
        "size_bytes": args.size_mib * MIB,
        "repeats": args.repeats,
        "client": args.client,
        "client_argv": curl_argv(URL, args.timeout) if args.client == "curl" else None,
        "mtu": MTU,
        **run.conditions(),
        "definitions": DEFINITIONS,
        "rows": [asdict(row) for row in rows_for(args.clients)],
    }


def json_ratios(summaries: Sequence[Summary]) -> list[dict[str, object]]:
    """Each ratio with its row's client count and both sides."""
    clients = {s.row: s.clients for s in summaries}
    fields = ("ours", "theirs", "target", "ratio", "met")
    return [{"row": r.row, "clients": clients[r.row], **r.json(*fields)} for r in ratios(summaries)]


BENCHMARK: Benchmark[HttpLab, list[Row], RunResult, Summary] = Benchmark(
    name="http",
    about="Image download MiB/s of bootstrapperd and nginx to many clients, in a private lab.",
    servers=SERVER_NAMES,
    rounds=RoundsOption(("--repeats", "--repeat"), 3, "runs per pair; median (3)"),
    open_lab=open_lab,
    groups=lambda args: [rows_for(args.clients)],
    serve=serve_rows,
    label=label,
    progress=progress,
    summarise=summarise,
    render=lambda run, summaries: render_table(
        summaries, run.results, run.lab.size, run.args.client, run.args.repeats
    ),
    json_head=json_head,
    json_ratios=json_ratios,
    add_options=add_options,
    missing_tools=lambda: not_on_path("nginx", "curl", "ss"),
    versions=tool_versions,
    alternate=True,
    scratch_holds="bsroot, server logs and configuration",
)


def build_parser() -> argparse.ArgumentParser:
    return harness.build_parser(BENCHMARK)


def main(argv: Sequence[str] | None = None) -> int:
    return harness.main(BENCHMARK, argv)


if __name__ == "__main__":
    sys.exit(main())
