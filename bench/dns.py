"""DNS benchmark: queries per second of bootstrapperd and dnsmasq under ``dnsperf``.

Run from the checkout as root (dnsmasq, dnsperf and dig installed)::

    .venv/bin/python -m bench.dns [--repeats 3] [--duration 30] [--json out.json]

Other options: ``--servers bootstrapperd,dnsmasq``, ``--rows local,forwarded``,
``--keep-scratch`` (keep every run's configuration, server logs and dnsperf output).

The lab is three network namespaces (nothing touches the host's interfaces):

- server (``srv0`` 10.90.0.1/24, ``srv1`` 10.90.1.1/24): the server under test;
- client (``cli0`` 10.90.0.2/24, joined to ``srv0``): ``dnsperf`` and ``dig``;
- upstream (``up0`` 10.90.1.2/24, joined to ``srv1``): a dnsmasq holding
  ``host{i}.upstream.test`` A records with a one-day TTL, the upstream the server under test
  forwards other names to.

Both servers under test hold the same local names, ``node{i}.bench.internal`` (A and PTR) for
50 nodes, and forward everything else to the upstream. Two rows, one ``dnsperf`` run each
(``dnsperf -s 10.90.0.1 -d FILE -l DURATION -T 1 -c 4 -q 100``):

- ``local``: every node's A record and a few PTR records: answered from the server's own data;
- ``forwarded``: every ``host{i}.upstream.test`` A record, after a warm-up pass over the same
  names, so the server answers from its cache (the upstream's query count during the measured
  run is reported: it should be 0).

Every figure comes from dnsperf's final statistics (queries per second, queries lost, average
latency) or from outside the server (its CPU seconds, the UDP receive-buffer drops of the
server namespace). Each server is started afresh for every repeat and stopped by PID; before a
row is measured every question of its query file is asked once with ``dig -f`` and must get
its expected answer (the A address, the PTR name). Figures are medians over ``--repeats``
runs; the table ends with the ratio bootstrapperd/dnsmasq per row and the target (local names:
≥ 0.5 × dnsmasq). A run with a wrong answer, a dnsperf failure, or fewer than 99 % NOERROR
answers is a failed run (listed, left out of the medians, exit status 1). See
bench/README.md for the definitions and results.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bootstrapperd.lab.netlab import LabError, Namespace, NetLab
from bootstrapperd.pack import init_bsroot

from . import harness
from .common import (
    VENV_BIN,
    Launch,
    counter_delta,
    cpu_between,
    cpu_seconds,
    dnsmasq_launch,
    fmt,
    median,
    names_arg,
    positive_int,
    serve_args,
    udp_counters,
    wait_udp_listening,
)
from .dns_clients import (
    Check,
    DnsperfStats,
    run_dnsperf,
    wait_answering,
    wrong_answers,
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
    ratio_line,
    text_table,
)

SERVER_ADDR = "10.90.0.1"
CLIENT_ADDR = "10.90.0.2"
SERVER_UPLINK_ADDR = "10.90.1.1"
UPSTREAM_ADDR = "10.90.1.2"
PREFIX_LEN = 24
SERVER_IF = "srv0"
CLIENT_IF = "cli0"
SERVER_UPLINK_IF = "srv1"
UPSTREAM_IF = "up0"
DNS_PORT = 53
HTTP_PORT = 8080

DOMAIN = "bench.internal"
NODES = 50
"""Local names: node1 … node50 in DOMAIN."""
NODE_IP_BASE = 10
"""node{i} has 10.90.0.(NODE_IP_BASE + i - 1): 10.90.0.10 … 10.90.0.59."""
PTR_EVERY = 10
"""A PTR query for every tenth node (node1, node11, …) in the local query file."""
UPSTREAM_DOMAIN = "upstream.test"
UPSTREAM_NAMES = 500
"""Forwarded names: host1 … host500 in UPSTREAM_DOMAIN."""
UPSTREAM_TTL = 86400
"""The upstream's TTL: long enough that a server caches its answers for the whole run."""

DNSPERF_CLIENTS = 4
DNSPERF_OUTSTANDING = 100
MIN_NOERROR_SHARE = 0.99
"""A run with fewer NOERROR answers than this share of the completed queries has failed."""

SERVER_NAMES = ("bootstrapperd", "dnsmasq")
REFERENCE = "dnsmasq"
"""The server bootstrapperd's figures are divided by."""


# --- names and query files ---------------------------------------------------------------------


def node_ip(i: int) -> str:
    """The static address of ``node{i}``."""
    return f"10.90.0.{NODE_IP_BASE + i - 1}"


def node_name(i: int) -> str:
    return f"node{i}.{DOMAIN}"


def upstream_ip(i: int) -> str:
    """The upstream's answer for ``host{i}``: in 198.18.0.0/15 (benchmarking, RFC 2544)."""
    return f"198.18.{i // 256}.{i % 256}"


def upstream_name(i: int) -> str:
    return f"host{i}.{UPSTREAM_DOMAIN}"


def reverse_name(address: str) -> str:
    """``10.90.0.10`` → ``10.0.90.10.in-addr.arpa``."""
    return IPv4Address(address).reverse_pointer


def local_checks(nodes: int = NODES, ptr_every: int = PTR_EVERY) -> list[Check]:
    """The local row: every node's A, and a PTR for every ``ptr_every``-th node."""
    checks = [Check(node_name(i), "A", node_ip(i)) for i in range(1, nodes + 1)]
    checks += [
        Check(reverse_name(node_ip(i)), "PTR", node_name(i)) for i in range(1, nodes + 1, ptr_every)
    ]
    return checks


def forwarded_checks(names: int = UPSTREAM_NAMES) -> list[Check]:
    """The forwarded row: every upstream name's A."""
    return [Check(upstream_name(i), "A", upstream_ip(i)) for i in range(1, names + 1)]


# --- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One query file (every question with its expected answer) and bootstrapperd's target."""

    name: str
    label: str
    checks: tuple[Check, ...]
    """The questions dnsperf asks, in file order; each is checked with dig before measuring."""
    target_ratio: float | None
    """bootstrapperd's qps ÷ dnsmasq's should be at least this (None: no target)."""
    warm_up: bool = False
    """Run the file twice before measuring (the second pass catches losses): cached forwarding."""

    @property
    def queries(self) -> list[str]:
        return [check.query for check in self.checks]


ROWS = {
    "local": Row(
        "local",
        f"local ({NODES} A + {len(range(1, NODES + 1, PTR_EVERY))} PTR)",
        tuple(local_checks()),
        0.5,
    ),
    "forwarded": Row(
        "forwarded",
        f"forwarded, cached ({UPSTREAM_NAMES} A)",
        tuple(forwarded_checks()),
        None,
        warm_up=True,
    ),
}
DEFAULT_ROWS = tuple(ROWS)


def dnsperf_argv(
    query_file: Path, duration: int | None = None, passes: int | None = None
) -> list[str]:
    """``dnsperf -s SERVER -d FILE [-l DURATION] [-n PASSES] -T 1 -c 4 -q 100``."""
    argv = ["dnsperf", "-s", SERVER_ADDR, "-d", str(query_file)]
    if duration is not None:
        argv += ["-l", str(duration)]
    if passes is not None:
        argv += ["-n", str(passes)]
    return [*argv, "-T", "1", "-c", str(DNSPERF_CLIENTS), "-q", str(DNSPERF_OUTSTANDING)]


# --- servers -----------------------------------------------------------------------------------


def cluster_desc(nodes: int = NODES) -> str:
    """bootstrapperd's cluster description: the lab's /24, DNS only (dhcp off), static nodes."""
    lines = [
        "# Generated by bench/dns.py: the lab's /24, no DHCP server (dhcp.mode off), static nodes.",
        f"bootstrapper: {SERVER_ADDR}",
        "subnet: 10.90.0.0",
        "netmask: 255.255.255.0",
        "broadcast: 10.90.0.255",
        "iplow: 10.90.0.100",
        "iphigh: 10.90.0.200",
        f"routers: [{SERVER_ADDR}]",
        f"nameservers: [{SERVER_ADDR}]",
        f"upstreamnameservers: [{UPSTREAM_ADDR}]",
        f"domainname: {DOMAIN}",
        "dockerdomain: bootstrapper",
        "k8s_service_cluster_ip_range: 10.100.0.0/24",
        "k8s_cluster_dns: 10.100.0.10",
        "flannel_backend: host-gw",
        'lease: "1h"',
        "images: {}",
        "ssh_authorized_keys:",
        '  - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6A4YCOeE3uokw83aYlwiydyL7QBJMEpz4GykWAgmb3'
        ' bench"',
        "dhcp:",
        '  mode: "off"',
        "registry:",
        '  mode: "off"',
        "nodes:",
    ]
    for i in range(1, nodes + 1):
        first = "y" if i == 1 else "n"
        lines += [
            f'  - mac: "52:54:00:90:{i // 256:02x}:{i % 256:02x}"',
            f'    cur_host_name: "node{i}"',
            f"    ip: {node_ip(i)}",
            f"    kube_master: {first}",
            f"    etcd_member: {first}",
        ]
    return "\n".join(lines) + "\n"


def launch_bootstrapperd(run_dir: Path) -> Launch:
    """A fresh bsroot from the generated description, and ``bootstrapperd serve`` on it."""
    desc = run_dir / "cluster-desc.yml"
    desc.write_text(cluster_desc())
    bsroot = init_bsroot(desc, run_dir / "bsroot")
    argv = [str(VENV_BIN / "bootstrapperd"), *serve_args(bsroot.root, SERVER_IF, HTTP_PORT)]
    return Launch(run_dir, argv)


DNSMASQ_CONF = """\
# DNS-only dnsmasq (no dhcp-range): the same local names as bootstrapperd, the rest forwarded
# to the lab's upstream and cached. Log and pid file in the run directory.
port=53
listen-address={address}
bind-interfaces
no-resolv
no-hosts
local=/{domain}/
server={upstream}
cache-size=10000
local-ttl=60
log-facility={run_dir}/dnsmasq.log
user=root
pid-file={run_dir}/dnsmasq.pid
"""


def dnsmasq_host_records(names: Sequence[tuple[str, str]]) -> str:
    """``host-record=NAME,ADDRESS`` lines (dnsmasq answers A and the matching PTR)."""
    return "".join(f"host-record={name},{address}\n" for name, address in names)


def launch_dnsmasq(run_dir: Path) -> Launch:
    """dnsmasq as the server under test on 10.90.0.1:53, in the foreground."""
    text = DNSMASQ_CONF.format(
        address=SERVER_ADDR, domain=DOMAIN, upstream=UPSTREAM_ADDR, run_dir=run_dir
    )
    text += dnsmasq_host_records([(node_name(i), node_ip(i)) for i in range(1, NODES + 1)])
    return dnsmasq_launch(run_dir, text)


UPSTREAM_CONF = """\
# The lab's upstream: answers host{{i}}.{domain} with a one-day TTL, nothing else.
port=53
listen-address={address}
bind-interfaces
no-resolv
no-hosts
local=/{domain}/
local-ttl={ttl}
log-facility={run_dir}/dnsmasq.log
user=root
pid-file={run_dir}/dnsmasq.pid
"""


def launch_upstream(run_dir: Path) -> Launch:
    """The upstream dnsmasq on 10.90.1.2:53 (upstream namespace), for the whole benchmark."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = UPSTREAM_CONF.format(
        address=UPSTREAM_ADDR, domain=UPSTREAM_DOMAIN, ttl=UPSTREAM_TTL, run_dir=run_dir
    )
    text += dnsmasq_host_records(
        [(upstream_name(i), upstream_ip(i)) for i in range(1, UPSTREAM_NAMES + 1)]
    )
    return dnsmasq_launch(run_dir, text)


def prepare(server: str, run_dir: Path) -> Launch:
    """A fresh configuration for ``server`` in ``run_dir``; how to start it."""
    if server == "bootstrapperd":
        return launch_bootstrapperd(run_dir)
    return launch_dnsmasq(run_dir)


# --- the lab -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """What every run shares: the three namespaces, the query files and the options."""

    lab: NetLab
    server: Namespace
    client: Namespace
    upstream: Namespace
    scratch: Path
    query_files: dict[str, Path]
    """Row name → its dnsperf input file."""
    duration: int


def write_query_files(directory: Path, rows: Sequence[Row]) -> dict[str, Path]:
    """One dnsperf input file per row."""
    files = {}
    for row in rows:
        path = directory / f"queries-{row.name}.txt"
        path.write_text("\n".join(row.queries) + "\n")
        files[row.name] = path
    return files


def start_upstream(lab: Lab, launch: Launch) -> None:
    """Start the upstream dnsmasq and wait until it answers host1 (checked from the server)."""
    out = (launch.run_dir / "server.stdout").open("wb")
    err = launch.stderr.open("wb")
    try:
        proc = lab.upstream.spawn(launch.argv, stdout=out, stderr=err)
    finally:
        out.close()  # the child has its own descriptors
        err.close()
    wait_udp_listening(lab.upstream, DNS_PORT, proc)
    check = forwarded_checks(1)[0]
    if (why := wait_answering(lab.server, UPSTREAM_ADDR, check)) is not None:
        raise LabError(f"the upstream dnsmasq does not answer: {why}")


@contextlib.contextmanager
def open_lab(args: argparse.Namespace, scratch: Path) -> Iterator[Lab]:
    """The query files; server ↔ client on 10.90.0.0/24, server ↔ upstream on 10.90.1.0/24;
    the upstream dnsmasq answering for the whole benchmark."""
    query_files = write_query_files(scratch, [ROWS[name] for name in args.rows])
    with NetLab() as netlab:
        server = netlab.namespace("srv")
        client = netlab.namespace("cli")
        upstream = netlab.namespace("up")
        netlab.veth(
            server,
            SERVER_IF,
            client,
            CLIENT_IF,
            f"{SERVER_ADDR}/{PREFIX_LEN}",
            f"{CLIENT_ADDR}/{PREFIX_LEN}",
        )
        netlab.veth(
            server,
            SERVER_UPLINK_IF,
            upstream,
            UPSTREAM_IF,
            f"{SERVER_UPLINK_ADDR}/{PREFIX_LEN}",
            f"{UPSTREAM_ADDR}/{PREFIX_LEN}",
        )
        lab = Lab(netlab, server, client, upstream, scratch, query_files, args.duration)
        start_upstream(lab, launch_upstream(scratch / "upstream"))
        yield lab


# --- one measured run --------------------------------------------------------------------------


@dataclass
class RunResult:
    """One dnsperf run of one row against one server."""

    server: str
    row: str
    repeat: int
    ok: bool
    error: str | None
    """Why the run failed (not serving, wrong answer, dnsperf error, not NOERROR), or None."""
    stats: DnsperfStats | None
    server_cpu_s: float | None
    """CPU time (user + system, all threads) the server used during the dnsperf run."""
    server_udp: dict[str, int] = field(default_factory=dict)
    client_udp: dict[str, int] = field(default_factory=dict)
    upstream_udp: dict[str, int] = field(default_factory=dict)
    """The upstream namespace's UDP counters: InDatagrams are queries the server forwarded."""
    log_warnings: list[str] = field(default_factory=list)

    @property
    def qps(self) -> float | None:
        return self.stats.qps if self.ok and self.stats else None


def measure(lab: Lab, server: str, pid: int, row: Row, run_dir: Path, repeat: int) -> RunResult:
    """Check ``row``'s answers, warm the cache if the row says so, then one timed dnsperf run."""

    def failed(error: str) -> RunResult:
        return RunResult(server, row.name, repeat, False, error, None, None)

    query_file = lab.query_files[row.name]
    batch = run_dir / f"dig-{row.name}.txt"
    if (why := wrong_answers(lab.client, SERVER_ADDR, row.checks, batch)) is not None:
        return failed(f"wrong answer: {why}")
    if row.warm_up:
        argv = dnsperf_argv(query_file, passes=2)
        _, why = run_dnsperf(lab.client, argv, run_dir / f"dnsperf-{row.name}-warm.txt", 60)
        if why is not None:
            return failed(f"warm-up: {why}")
    namespaces = {"server": lab.server, "client": lab.client, "upstream": lab.upstream}
    before = {name: udp_counters(ns) for name, ns in namespaces.items()}
    cpu_before = cpu_seconds(pid)
    stats, why = run_dnsperf(
        lab.client,
        dnsperf_argv(query_file, duration=lab.duration),
        run_dir / f"dnsperf-{row.name}.txt",
        lab.duration + 60,
    )
    cpu = cpu_between(cpu_before, cpu_seconds(pid))
    delta = {name: counter_delta(before[name], udp_counters(ns)) for name, ns in namespaces.items()}
    error = why
    if stats is not None and stats.noerror_share < MIN_NOERROR_SHARE:
        codes = ", ".join(f"{c} {n}" for c, n in sorted(stats.response_codes.items()))
        error = f"only {100 * stats.noerror_share:.1f} % NOERROR ({codes})"
    if stats is not None and error is None and stats.completed == 0:
        error = "no query answered"
    return RunResult(
        server=server,
        row=row.name,
        repeat=repeat,
        ok=error is None,
        error=error,
        stats=stats,
        server_cpu_s=cpu,
        server_udp=delta["server"],
        client_udp=delta["client"],
        upstream_udp=delta["upstream"],
    )


def serve_rows(lab: Lab, server: str, rows: Sequence[Row], repeat: int) -> list[RunResult]:
    """Start ``server`` afresh, wait for UDP 53 and a right answer, measure every row, stop it
    by PID."""
    run_dir = lab.scratch / f"{server}-{repeat}"
    run_dir.mkdir()
    launch = prepare(server, run_dir)

    def ready(proc: subprocess.Popen[bytes]) -> str | None:
        try:
            wait_udp_listening(lab.server, DNS_PORT, proc, timeout=30)
        except LabError as exc:
            return f"not serving: {exc}"
        why = wait_answering(lab.client, SERVER_ADDR, ROWS["local"].checks[0])
        return None if why is None else f"not answering: {why}"

    def failed(targets: Sequence[Row], error: str) -> list[RunResult]:
        return [RunResult(server, r.name, repeat, False, error, None, None) for r in targets]

    def run_row(pid: int, row: Row) -> RunResult:
        return measure(lab, server, pid, row, run_dir, repeat)

    return harness.run_server(lab.lab, lab.server, launch, server, rows, ready, run_row, failed)


# --- summary -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The medians over the successful runs of one server on one row."""

    server: str
    row: str
    qps: float | None
    lost_percent: float | None
    avg_latency_ms: float | None
    server_cpu_s: float | None
    cpu_us_per_query: float | None
    """Server CPU time ÷ queries completed, in µs."""
    upstream_queries: float | None
    """Datagrams the upstream received during the run (cache misses of a forwarded row)."""
    server_rcvbuf_drops: float | None
    ok: int
    runs: int


def _cpu_per_query(result: RunResult) -> float | None:
    if result.server_cpu_s is None or result.stats is None or not result.stats.completed:
        return None
    return 1e6 * result.server_cpu_s / result.stats.completed


def _order(key: tuple[str, str]) -> tuple[int, str]:
    """Rows in ``ROWS`` order (others last), then servers by name."""
    row, server = key
    return (list(ROWS).index(row) if row in ROWS else len(ROWS), server)


def summarise(results: Sequence[RunResult]) -> list[Summary]:
    """Medians per (row, server) over the runs that succeeded, rows in ``ROWS`` order."""
    groups = grouped(results, lambda r: (r.row, r.server))
    summaries = []
    for row, server in sorted(groups, key=_order):
        runs = groups[row, server]
        good = [r for r in runs if r.ok and r.stats is not None]
        stats = [r.stats for r in good if r.stats is not None]
        summaries.append(
            Summary(
                server=server,
                row=row,
                qps=median([s.qps for s in stats]),
                lost_percent=median([s.lost_percent for s in stats]),
                avg_latency_ms=median([1000 * s.avg_latency_s for s in stats]),
                server_cpu_s=median([r.server_cpu_s for r in good]),
                cpu_us_per_query=median([_cpu_per_query(r) for r in good]),
                upstream_queries=median([r.upstream_udp.get("InDatagrams") for r in good]),
                server_rcvbuf_drops=median([r.server_udp.get("RcvbufErrors") for r in good]),
                ok=len(good),
                runs=len(runs),
            )
        )
    return summaries


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[harness.Ratio]:
    """Per row with both servers measured: bootstrapperd ÷ ``reference``, with its target."""
    table = figures(summaries, lambda s: s.row, lambda s: s.qps)
    return harness.ratios(
        table, reference, lambda row: ROWS[row].target_ratio if row in ROWS else None
    )


COLUMNS = (
    Column("row", 27),
    Column("server", 13),
    Column("qps", 8, right=True),
    Column("lost %", 7, right=True),
    Column("avg ms", 7, right=True),
    Column("CPU s", 6, right=True),
    Column("CPU µs/q", 8, right=True),
    Column("upstream q", 10, right=True),
    Column("rcvbuf drops", 12, right=True),
    Column("ok/runs", 7, right=True),
)


def label(result: RunResult) -> str:
    return f"{result.row} #{result.repeat}"


def render_table(summaries: Sequence[Summary], results: Sequence[RunResult], duration: int) -> str:
    """The medians, the ratio per row beside its target, then every failed run."""
    rows = [
        [
            ROWS[s.row].label if s.row in ROWS else s.row,
            s.server,
            "FAILED" if s.qps is None else f"{s.qps:.0f}",
            fmt(s.lost_percent, ".2f"),
            fmt(s.avg_latency_ms, ".3f"),
            fmt(s.server_cpu_s, ".1f"),
            fmt(s.cpu_us_per_query, ".1f"),
            fmt(s.upstream_queries, ".0f"),
            fmt(s.server_rcvbuf_drops, ".0f"),
            f"{s.ok}/{s.runs}",
        ]
        for s in summaries
    ]
    lines = [
        f"DNS, dnsperf -l {duration} -T 1 -c {DNSPERF_CLIENTS} -q {DNSPERF_OUTSTANDING} over "
        f"UDP{affinity_note()}; median per row; latency = dnsperf's average; CPU = server's "
        "during the run",
        *text_table(COLUMNS, rows),
        *(ratio_line(r, "qps", REFERENCE) for r in ratios(summaries)),
        *failed_lines(results, label),
    ]
    return "\n".join(lines)


# --- the benchmark -----------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    """--rows, --duration."""
    parser.add_argument(
        "--rows",
        type=lambda text: names_arg(text, tuple(ROWS)),
        default=list(DEFAULT_ROWS),
        help="comma-separated: local,forwarded",
    )
    parser.add_argument(
        "--duration", type=positive_int, default=30, help="seconds per dnsperf run (-l, 30)"
    )


def progress(result: RunResult) -> str:
    s = result.stats
    if s is None:
        return "no statistics"
    return (
        f"{s.qps:.0f} qps, lost {s.lost_percent:.2f} %, avg {1000 * s.avg_latency_s:.3f} ms, "
        f"server CPU {fmt(result.server_cpu_s, '.1f')} s, "
        f"upstream queries {result.upstream_udp.get('InDatagrams', '?')}"
    )


def tool_versions(run: Run[Lab, RunResult]) -> dict[str, str]:
    """The line of each server's and client's output that names its version."""
    commands = {
        "dnsmasq": ["dnsmasq", "--version"],
        "dnsperf": ["dnsperf", "-h"],
        "dig": ["dig", "-v"],
    }
    versions = {}
    for name, argv in commands.items():
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            versions[name] = f"unavailable: {exc}"
            continue
        text = (done.stdout + done.stderr).strip()
        version = [line for line in text.splitlines() if re.search(r"[Vv]ersion|DiG", line)]
        versions[name] = version[0] if version else (text.splitlines()[0] if text else "?")
    return versions


DEFINITIONS = {
    "qps": "dnsperf's 'Queries per second' (queries completed ÷ its run time)",
    "lost_percent": "dnsperf's 'Queries lost' ÷ 'Queries sent' × 100 (no answer within 5 s)",
    "avg_latency_ms": "dnsperf's 'Average Latency', in ms",
    "server_cpu_s": "server CPU time (user + system, all threads) during the measured run",
    "cpu_us_per_query": "server CPU time ÷ queries completed, in µs",
    "upstream_queries": "UDP datagrams received in the upstream namespace during the run",
    "rcvbuf_drops": "UDP RcvbufErrors in the server namespace during the run",
    "ratio": "bootstrapperd's median qps ÷ dnsmasq's, per row",
}
"""What each reported figure is (also written into the JSON report)."""


def json_head(run: Run[Lab, RunResult]) -> dict[str, object]:
    """The options, the conditions, the definitions and the rows' query files and commands."""
    duration = run.args.duration
    return {
        "duration_s": duration,
        "repeats": run.args.repeats,
        **run.conditions(),
        "definitions": DEFINITIONS,
        "rows": {
            name: {
                "label": row.label,
                "queries": len(row.queries),
                "argv": dnsperf_argv(Path(f"queries-{name}.txt"), duration=duration),
                "warm_up": row.warm_up,
                "target_ratio": row.target_ratio,
            }
            for name, row in ROWS.items()
            if name in run.args.rows
        },
    }


def json_run(result: RunResult) -> dict[str, Any]:
    """The run's fields, its dnsperf statistics with their lost share."""
    run = asdict(result)
    if result.stats is not None:
        run["stats"]["lost_percent"] = result.stats.lost_percent
    return run


BENCHMARK: Benchmark[Lab, list[Row], RunResult, Summary] = Benchmark(
    name="dns",
    about="Queries per second of bootstrapperd and dnsmasq DNS (dnsperf) in a private lab.",
    servers=SERVER_NAMES,
    rounds=RoundsOption(("--repeats", "--repeat"), 3, "runs per pair; median (3)"),
    open_lab=open_lab,
    groups=lambda args: [[ROWS[name] for name in args.rows]],
    serve=serve_rows,
    label=label,
    progress=progress,
    summarise=summarise,
    render=lambda run, summaries: render_table(summaries, run.results, run.args.duration),
    json_head=json_head,
    json_ratios=lambda summaries: [r.json() for r in ratios(summaries)],
    json_run=json_run,
    add_options=add_options,
    missing_tools=lambda: not_on_path("dnsmasq", "dnsperf", "dig", "ss"),
    versions=tool_versions,
    scratch_holds="configurations, server logs, dnsperf output",
)


def build_parser() -> argparse.ArgumentParser:
    return harness.build_parser(BENCHMARK)


def main(argv: Sequence[str] | None = None) -> int:
    return harness.main(BENCHMARK, argv)


if __name__ == "__main__":
    sys.exit(main())
