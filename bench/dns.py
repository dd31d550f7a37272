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
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from bootstrapperd.lab.netlab import LabError, Namespace, NetLab, unavailable_reason
from bootstrapperd.model import ConfigError
from bootstrapperd.pack import init_bsroot

from .common import (
    VENV_BIN,
    Launch,
    counter_delta,
    cpu_seconds,
    fmt,
    machine_facts,
    median,
    names_arg,
    positive_int,
    program_pid,
    running,
    scratch_dir,
    serve_args,
    tail,
    udp_counters,
    wait_udp_listening,
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


@dataclass(frozen=True)
class Check:
    """One question of a query file and the answer it must get."""

    name: str
    qtype: str
    expected: str

    @property
    def query(self) -> str:
        """The question as a dnsperf (and ``dig -f``) input line."""
        return f"{self.name} {self.qtype}"

    def matches(self, answers: Sequence[tuple[str, str, str]]) -> bool:
        """Whether ``answers`` ((name, type, data), as from ``dig_answers``) hold the answer."""
        name, want = _canonical(self.name), _canonical(self.expected)
        return (name, self.qtype, want) in {
            (_canonical(n), t, _canonical(d)) for n, t, d in answers
        }


def _canonical(name: str) -> str:
    return name.rstrip(".").lower()


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


# --- parsing dig and dnsperf -------------------------------------------------------------------


def dig_answers(output: str) -> list[tuple[str, str, str]]:
    """(name, type, data) of every answer in ``dig +noall +answer`` output; comments skipped.

    dig prints its errors (``;; communications error …``) as comments, so a timeout gives [].
    """
    answers = []
    for line in output.splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = line.split(None, 4)
        if len(fields) == 5 and fields[2] == "IN":
            answers.append((fields[0], fields[3], fields[4].strip()))
    return answers


def unanswered(checks: Sequence[Check], answers: Sequence[tuple[str, str, str]]) -> list[Check]:
    """The checks whose expected answer is not among ``answers``."""
    return [check for check in checks if not check.matches(answers)]


@dataclass(frozen=True)
class DnsperfStats:
    """dnsperf's final statistics."""

    sent: int
    completed: int
    lost: int
    interrupted: int
    qps: float
    run_time_s: float
    avg_latency_s: float
    min_latency_s: float | None
    max_latency_s: float | None
    response_codes: dict[str, int]
    request_bytes: float | None = None
    """dnsperf's average request size (its 'Average packet size' line)."""
    response_bytes: float | None = None
    """dnsperf's average response size: both servers should give the same answers' sizes."""

    @property
    def lost_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    @property
    def noerror_share(self) -> float:
        """NOERROR answers ÷ completed queries (1.0 when nothing completed: no wrong answers)."""
        if not self.completed:
            return 1.0
        return self.response_codes.get("NOERROR", 0) / self.completed


_INT_FIELDS = {
    "sent": "Queries sent",
    "completed": "Queries completed",
    "lost": "Queries lost",
    "interrupted": "Queries interrupted",
}


def parse_dnsperf(output: str) -> DnsperfStats:
    """The statistics block of dnsperf's output; ``ValueError`` when a figure is missing."""

    def figure(label: str) -> str | None:
        match = re.search(rf"^\s*{re.escape(label)}:\s+(\S+)", output, re.MULTILINE)
        return match.group(1) if match else None

    counts: dict[str, int] = {}
    for key, label in _INT_FIELDS.items():
        value = figure(label)
        if value is None:
            if key == "interrupted":  # only printed when some were
                counts[key] = 0
                continue
            raise ValueError(f"no {label!r} in dnsperf's output")
        counts[key] = int(value)
    qps, run_time = figure("Queries per second"), figure("Run time (s)")
    latency = re.search(
        r"^\s*Average Latency \(s\):\s+(\S+)(?:\s+\(min\s+(\S+),\s+max\s+(\S+)\))?",
        output,
        re.MULTILINE,
    )
    if qps is None or run_time is None or latency is None:
        raise ValueError("no queries per second, run time or average latency in dnsperf's output")
    codes: dict[str, int] = {}
    match = re.search(r"^\s*Response codes:\s+(.*)$", output, re.MULTILINE)
    if match:
        for code, count in re.findall(r"([A-Z]+)\s+(\d+)", match.group(1)):
            codes[code] = int(count)
    sizes = re.search(
        r"^\s*Average packet size:\s+request\s+(\S+),\s+response\s+(\S+)", output, re.MULTILINE
    )
    return DnsperfStats(
        request_bytes=float(sizes.group(1)) if sizes else None,
        response_bytes=float(sizes.group(2)) if sizes else None,
        sent=counts["sent"],
        completed=counts["completed"],
        lost=counts["lost"],
        interrupted=counts["interrupted"],
        qps=float(qps),
        run_time_s=float(run_time),
        avg_latency_s=float(latency.group(1)),
        min_latency_s=float(latency.group(2)) if latency.group(2) else None,
        max_latency_s=float(latency.group(3)) if latency.group(3) else None,
        response_codes=codes,
    )


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
    conf = run_dir / "dnsmasq.conf"
    text = DNSMASQ_CONF.format(
        address=SERVER_ADDR, domain=DOMAIN, upstream=UPSTREAM_ADDR, run_dir=run_dir
    )
    text += dnsmasq_host_records([(node_name(i), node_ip(i)) for i in range(1, NODES + 1)])
    conf.write_text(text)
    argv = ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground"]
    return Launch(run_dir, argv, logs=(run_dir / "dnsmasq.log",))


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
    conf = run_dir / "dnsmasq.conf"
    text = UPSTREAM_CONF.format(
        address=UPSTREAM_ADDR, domain=UPSTREAM_DOMAIN, ttl=UPSTREAM_TTL, run_dir=run_dir
    )
    text += dnsmasq_host_records(
        [(upstream_name(i), upstream_ip(i)) for i in range(1, UPSTREAM_NAMES + 1)]
    )
    conf.write_text(text)
    argv = ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground"]
    return Launch(run_dir, argv, logs=(run_dir / "dnsmasq.log",))


def prepare(server: str, run_dir: Path) -> Launch:
    """A fresh configuration for ``server`` in ``run_dir``; how to start it."""
    if server == "bootstrapperd":
        return launch_bootstrapperd(run_dir)
    return launch_dnsmasq(run_dir)


# --- the lab -----------------------------------------------------------------------------------


@dataclass
class Lab:
    """The three namespaces every run shares."""

    lab: NetLab
    server: Namespace
    client: Namespace
    upstream: Namespace


def build_lab(lab: NetLab) -> Lab:
    """server ↔ client on 10.90.0.0/24, server ↔ upstream on 10.90.1.0/24."""
    server = lab.namespace("srv")
    client = lab.namespace("cli")
    upstream = lab.namespace("up")
    lab.veth(
        server,
        SERVER_IF,
        client,
        CLIENT_IF,
        f"{SERVER_ADDR}/{PREFIX_LEN}",
        f"{CLIENT_ADDR}/{PREFIX_LEN}",
    )
    lab.veth(
        server,
        SERVER_UPLINK_IF,
        upstream,
        UPSTREAM_IF,
        f"{SERVER_UPLINK_ADDR}/{PREFIX_LEN}",
        f"{UPSTREAM_ADDR}/{PREFIX_LEN}",
    )
    return Lab(lab, server, client, upstream)


def dig(ns: Namespace, server: str, args: Sequence[str], timeout: float = 10) -> str:
    """``dig @server +noall +answer ARGS`` in ``ns`` (1 s per try, 2 tries); its stdout."""
    argv = ["dig", f"@{server}", "+noall", "+answer", "+time=1", "+tries=2", *args]
    try:
        result = ns.run(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout if result.returncode == 0 else ""


def _describe(check: Check, answers: Sequence[tuple[str, str, str]]) -> str:
    mine = [f"{t} {d}" for n, t, d in answers if _canonical(n) == _canonical(check.name)]
    got = ", ".join(mine) or "no answer"
    return f"{check.query}: {got} (expected {check.expected})"


def wait_answering(ns: Namespace, server: str, check: Check, timeout: float = 15.0) -> str | None:
    """Ask ``check`` until it gets the expected answer; None then, else why not."""
    deadline = time.monotonic() + timeout
    answers: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline:
        answers = dig_answers(dig(ns, server, [check.name, check.qtype]))
        if check.matches(answers):
            return None
        time.sleep(0.2)
    return f"{_describe(check, answers)} after {timeout:g} s"


def wrong_answers(ns: Namespace, server: str, checks: Sequence[Check], batch: Path) -> str | None:
    """Ask every check once (one ``dig -f`` batch): None when each gets its expected answer,
    else how many did not and the first of them."""
    batch.write_text("".join(f"{check.query}\n" for check in checks))
    answers = dig_answers(dig(ns, server, ["-f", str(batch)], timeout=120))
    missed = unanswered(checks, answers)
    if not missed:
        return None
    first = _describe(missed[0], answers)
    return f"{len(missed)} of {len(checks)} without the expected answer, first {first}"


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


def run_dnsperf(
    ns: Namespace, argv: Sequence[str], output: Path, timeout: float
) -> tuple[DnsperfStats | None, str | None]:
    """Run dnsperf in ``ns``, keep its output in ``output``; (statistics, None) or (None, why)."""
    try:
        result = ns.run(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"dnsperf did not finish within {timeout:g} s"
    text = result.stdout + result.stderr
    output.write_text(text)
    if result.returncode != 0:
        return None, f"dnsperf exited with status {result.returncode}: {tail(text)}"
    try:
        return parse_dnsperf(result.stdout), None
    except ValueError as exc:
        return None, f"{exc}: {tail(text)}"


def measure(
    lab: Lab,
    server: str,
    pid: int,
    row: Row,
    query_file: Path,
    run_dir: Path,
    repeat: int,
    duration: int,
) -> RunResult:
    """Check ``row``'s answers, warm the cache if the row says so, then one timed dnsperf run."""

    def failed(error: str) -> RunResult:
        return RunResult(server, row.name, repeat, False, error, None, None)

    batch = run_dir / f"dig-{row.name}.txt"
    if (why := wrong_answers(lab.client, SERVER_ADDR, row.checks, batch)) is not None:
        return failed(f"wrong answer: {why}")
    if row.warm_up:
        argv = dnsperf_argv(query_file, passes=2)
        _, why = run_dnsperf(lab.client, argv, run_dir / f"dnsperf-{row.name}-warm.txt", 60)
        if why is not None:
            return failed(f"warm-up: {why}")
    before = {ns: udp_counters(getattr(lab, ns)) for ns in ("server", "client", "upstream")}
    cpu_before = cpu_seconds(pid)
    stats, why = run_dnsperf(
        lab.client,
        dnsperf_argv(query_file, duration=duration),
        run_dir / f"dnsperf-{row.name}.txt",
        duration + 60,
    )
    cpu_after = cpu_seconds(pid)
    delta = {ns: counter_delta(b, udp_counters(getattr(lab, ns))) for ns, b in before.items()}
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
        server_cpu_s=(
            cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        ),
        server_udp=delta["server"],
        client_udp=delta["client"],
        upstream_udp=delta["upstream"],
    )


def serve_and_measure(
    lab: Lab,
    server: str,
    launch: Launch,
    rows: Sequence[Row],
    query_files: dict[str, Path],
    repeat: int,
    duration: int,
) -> list[RunResult]:
    """Start ``server``, wait for UDP 53 and a right answer, measure every row, stop it by PID."""
    results: list[RunResult] = []

    def failed(targets: Sequence[Row], error: str) -> list[RunResult]:
        return [RunResult(server, r.name, repeat, False, error, None, None) for r in targets]

    with running(lab.lab, lab.server, launch) as proc:
        try:
            wait_udp_listening(lab.server, DNS_PORT, proc, timeout=30)
        except LabError as exc:
            results = failed(rows, f"not serving: {exc}")
        else:
            why = wait_answering(lab.client, SERVER_ADDR, ROWS["local"].checks[0])
            if why is not None:
                results = failed(rows, f"not answering: {why}")
            else:
                pid = program_pid(proc)
                for row in rows:
                    if proc.poll() is not None:
                        error = f"{server} exited with status {proc.returncode}"
                        results += failed([row], error)
                        continue
                    query_file = query_files[row.name]
                    results.append(
                        measure(lab, server, pid, row, query_file, launch.run_dir, repeat, duration)
                    )
    warnings = launch.warnings()
    for result in results:
        result.log_warnings = warnings
    return results


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


def summarise(results: Sequence[RunResult]) -> list[Summary]:
    """Medians per (row, server) over the runs that succeeded, rows in ``ROWS`` order."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.row, result.server), []).append(result)
    order = list(ROWS)

    def key(item: tuple[str, str]) -> tuple[int, str]:
        row, server = item
        return (order.index(row) if row in ROWS else len(order), server)

    summaries = []
    for row, server in sorted(groups, key=key):
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


@dataclass(frozen=True)
class Ratio:
    """bootstrapperd's median qps ÷ the reference's on one row, against the row's target."""

    row: str
    ratio: float | None
    """None when either side has no successful run."""
    target: float | None
    """None: no target for this row (the ratio is informative)."""

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.target is None:
            return None
        return self.ratio >= self.target


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[Ratio]:
    """Per row with both servers measured: bootstrapperd ÷ ``reference``, with its target."""
    by_row: dict[str, dict[str, float | None]] = {}
    for s in summaries:
        by_row.setdefault(s.row, {})[s.server] = s.qps
    out = []
    for row, rates in by_row.items():
        if "bootstrapperd" not in rates or reference not in rates:
            continue
        ours, theirs = rates["bootstrapperd"], rates[reference]
        value = ours / theirs if ours is not None and theirs else None
        out.append(Ratio(row, value, ROWS[row].target_ratio if row in ROWS else None))
    return out


def render_table(summaries: Sequence[Summary], results: Sequence[RunResult], duration: int) -> str:
    """The medians, the ratio per row beside its target, then every failed run."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = f"; all on CPU {','.join(map(str, cpus))}" if len(cpus) < (os.cpu_count() or 0) else ""
    lines = [
        f"DNS, dnsperf -l {duration} -T 1 -c {DNSPERF_CLIENTS} -q {DNSPERF_OUTSTANDING} over "
        f"UDP{pinned}; median per row; latency = dnsperf's average; CPU = server's during the run",
        f"{'row':<27} {'server':<13} {'qps':>8} {'lost %':>7} {'avg ms':>7} {'CPU s':>6} "
        f"{'CPU µs/q':>8} {'upstream q':>10} {'rcvbuf drops':>12} {'ok/runs':>7}",
    ]
    for s in summaries:
        label = ROWS[s.row].label if s.row in ROWS else s.row
        rate = "FAILED" if s.qps is None else f"{s.qps:.0f}"
        lines.append(
            f"{label:<27} {s.server:<13} {rate:>8} {fmt(s.lost_percent, '.2f'):>7} "
            f"{fmt(s.avg_latency_ms, '.3f'):>7} {fmt(s.server_cpu_s, '.1f'):>6} "
            f"{fmt(s.cpu_us_per_query, '.1f'):>8} {fmt(s.upstream_queries, '.0f'):>10} "
            f"{fmt(s.server_rcvbuf_drops, '.0f'):>12} {f'{s.ok}/{s.runs}':>7}"
        )
    for r in ratios(summaries):
        line = f"ratio ({r.row}, qps): bootstrapperd/{REFERENCE} = {fmt(r.ratio, '.2f')}"
        if r.target is None:
            line += " (no target)" if r.ratio is not None else " (not measured)"
        else:
            verdict = {True: "met", False: "NOT met", None: "not measured"}[r.met]
            line += f" (target ≥ {r.target:.2f}: {verdict})"
        lines.append(line)
    for f in results:
        if not f.ok:
            lines.append(f"FAILED {f.server} {f.row} #{f.repeat}: {f.error}")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dns",
        description="Queries per second of bootstrapperd and dnsmasq DNS (dnsperf) in a "
        "private lab.",
    )
    parser.add_argument(
        "--repeats", "--repeat", type=positive_int, default=3, help="runs per pair; median (3)"
    )
    parser.add_argument(
        "--servers",
        type=lambda text: names_arg(text, SERVER_NAMES),
        default=list(SERVER_NAMES),
        help="comma-separated: bootstrapperd,dnsmasq",
    )
    parser.add_argument(
        "--rows",
        type=lambda text: names_arg(text, tuple(ROWS)),
        default=list(DEFAULT_ROWS),
        help="comma-separated: local,forwarded",
    )
    parser.add_argument(
        "--duration", type=positive_int, default=30, help="seconds per dnsperf run (-l, 30)"
    )
    parser.add_argument("--json", type=Path, help="also write every run and the medians here")
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help="keep the scratch directory (configurations, server logs, dnsperf output)",
    )
    return parser


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


def run_all(args: argparse.Namespace, scratch: Path) -> list[RunResult]:
    """Every repeat × server in one lab; each server started afresh per repeat."""
    rows = [ROWS[name] for name in args.rows]
    query_files = write_query_files(scratch, rows)
    results: list[RunResult] = []
    with NetLab() as netlab:
        lab = build_lab(netlab)
        start_upstream(lab, launch_upstream(scratch / "upstream"))
        for repeat in range(1, args.repeats + 1):
            for server in args.servers:
                run_dir = scratch / f"{server}-{repeat}"
                run_dir.mkdir()
                launch = prepare(server, run_dir)
                runs = serve_and_measure(
                    lab, server, launch, rows, query_files, repeat, args.duration
                )
                for result in runs:
                    print(_progress(result), file=sys.stderr, flush=True)
                results += runs
    return results


def _progress(result: RunResult) -> str:
    head = f"[{result.row} #{result.repeat}] {result.server}: "
    if result.ok and result.stats is not None:
        s = result.stats
        line = (
            f"{head}{s.qps:.0f} qps, lost {s.lost_percent:.2f} %, "
            f"avg {1000 * s.avg_latency_s:.3f} ms, "
            f"server CPU {fmt(result.server_cpu_s, '.1f')} s, "
            f"upstream queries {result.upstream_udp.get('InDatagrams', '?')}"
        )
    else:
        line = f"{head}FAILED: {result.error}"
    for warning in result.log_warnings:
        line += f"\n    log: {warning}"
    return line


def tool_versions() -> dict[str, str]:
    """The first line of each server's and client's version output."""
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


def json_report(
    args: argparse.Namespace,
    summaries: Sequence[Summary],
    results: Sequence[RunResult],
    loadavg_before: tuple[float, float, float],
) -> dict[str, object]:
    """Everything measured: facts, definitions, rows, medians, ratios and every run."""
    runs = []
    for r in results:
        run = asdict(r)
        if r.stats is not None:
            run["stats"]["lost_percent"] = r.stats.lost_percent
        runs.append(run)
    return {
        "benchmark": "dns",
        "duration_s": args.duration,
        "repeats": args.repeats,
        "machine": machine_facts(),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "tools": tool_versions(),
        "definitions": DEFINITIONS,
        "rows": {
            name: {
                "label": row.label,
                "queries": len(row.queries),
                "argv": dnsperf_argv(Path(f"queries-{name}.txt"), duration=args.duration),
                "warm_up": row.warm_up,
                "target_ratio": row.target_ratio,
            }
            for name, row in ROWS.items()
            if name in args.rows
        },
        "summary": [asdict(s) for s in summaries],
        "ratios": [{**asdict(r), "met": r.met} for r in ratios(summaries)],
        "runs": runs,
    }


def missing_tools() -> list[str]:
    return [tool for tool in ("dnsmasq", "dnsperf", "dig", "ss") if shutil.which(tool) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reason = unavailable_reason()
    if reason is None and (missing := missing_tools()):
        reason = f"not installed: {', '.join(missing)}"
    if reason is not None:
        print(f"bench.dns: cannot build the lab: {reason}", file=sys.stderr)
        return 1
    loadavg_before = os.getloadavg()
    try:
        with scratch_dir("bench-dns-", keep=args.keep_scratch) as scratch:
            results = run_all(args, scratch)
    except ConfigError as exc:
        print(f"bench.dns: the generated cluster description is refused:\n{exc.report()}")
        return 1
    except LabError as exc:
        print(f"bench.dns: {exc}", file=sys.stderr)
        return 1
    summaries = summarise(results)
    print(render_table(summaries, results, args.duration))
    if args.json is not None:
        report = json_report(args, summaries, results, loadavg_before)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
