"""DHCP benchmark: completed DORA/s of bootstrapperd, dnsmasq and Kea under perfdhcp.

Run from the checkout as root: ``.venv/bin/python -m bench.dhcp [--duration 30]``. A private lab
of two network namespaces joined by a veth pair (server ``10.88.0.1/16``, client
``10.88.0.2/16``) holds each server in turn, each started with fresh lease state before each
load; perfdhcp runs in relay mode from the client side (giaddr 10.88.0.2, port 67 both ways), so
nothing leaves the namespaces. See bench/README.md for the definitions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bootstrapperd.model import ConfigError
from bootstrapperd.netlab import LabError, Namespace, NetLab, unavailable_reason
from bootstrapperd.pack import init_bsroot

from .common import (
    VENV_BIN,
    counter_delta,
    cpu_seconds,
    first_lines,
    machine_facts,
    peak_rss_kib,
    program_pid,
    scratch_dir,
    udp_counters,
    wait_udp_listening,
)

SERVER_ADDR = "10.88.0.1"
CLIENT_ADDR = "10.88.0.2"
PREFIX_LEN = 16
SERVER_IF = "srv0"
CLIENT_IF = "cli0"
HTTP_PORT = 8080

SERVER_NAMES = ("bootstrapperd", "dnsmasq", "kea")


@dataclass(frozen=True)
class Load:
    """One perfdhcp load: ``clients`` distinct MACs, DORA exchanges started at ``rate``/s."""

    name: str
    rate: int
    clients: int


LOADS = {
    "big": Load("big", rate=8000, clients=60000),
    "small": Load("small", rate=4000, clients=500),
    # Not in the default set: the big client population at half the rate, to see what a
    # server sustains without being overloaded (--loads half).
    "half": Load("half", rate=4000, clients=60000),
}
DEFAULT_LOADS = ("big", "small")


# --- perfdhcp ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """perfdhcp's counters for one exchange (DISCOVER-OFFER or REQUEST-ACK)."""

    sent: int
    received: int
    drops: int


@dataclass(frozen=True)
class PerfdhcpStats:
    """What perfdhcp printed: its rate line and both exchanges' counters."""

    rate: float
    """perfdhcp's "Rate": ACKs received ÷ its own test period, in 4-way exchanges/s."""
    discover_offer: Exchange
    request_ack: Exchange

    @property
    def run_time(self) -> float:
        """perfdhcp's measured test period in seconds (ACKs ÷ Rate; 0 when nothing completed)."""
        if self.rate <= 0:
            return 0.0
        return self.request_ack.received / self.rate

    @property
    def dora_per_s(self) -> float:
        """Completed DORA exchanges per second: ACKs received ÷ the measured run time."""
        run_time = self.run_time
        return self.request_ack.received / run_time if run_time > 0 else 0.0

    @property
    def drop_pct(self) -> float:
        """Share of started 4-way exchanges that did not complete: 1 − ACKs ÷ DISCOVERs sent."""
        sent = self.discover_offer.sent
        return 100.0 * (1 - self.request_ack.received / sent) if sent else 0.0


_RATE = re.compile(r"^Rate:\s*([0-9.eE+-]+)\s", re.MULTILINE)
_SECTION = re.compile(r"\*\*\*Statistics for: ([A-Z-]+)\*\*\*")
_COUNTER = re.compile(r"^(sent packets|received packets|drops):\s*(\d+)", re.MULTILINE)


def parse_perfdhcp(output: str) -> PerfdhcpStats:
    """Parse perfdhcp's final report (``***Rate statistics***`` and the two exchange blocks)."""
    rate = _RATE.search(output)
    if rate is None:
        raise ValueError("no 'Rate:' line in perfdhcp's output")
    parts = _SECTION.split(output)
    exchanges: dict[str, Exchange] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        counters = dict(_COUNTER.findall(body))
        exchanges[name] = Exchange(
            sent=int(counters.get("sent packets", 0)),
            received=int(counters.get("received packets", 0)),
            drops=int(counters.get("drops", 0)),
        )
    missing = {"DISCOVER-OFFER", "REQUEST-ACK"} - exchanges.keys()
    if missing:
        raise ValueError(f"perfdhcp's output has no statistics for {', '.join(sorted(missing))}")
    return PerfdhcpStats(
        float(rate.group(1)), exchanges["DISCOVER-OFFER"], exchanges["REQUEST-ACK"]
    )


def perfdhcp_argv(load: Load, duration: int) -> list[str]:
    """perfdhcp in relay mode: local (giaddr) 10.88.0.2, server 10.88.0.1."""
    return [
        "perfdhcp",
        "-4",
        "-r",
        str(load.rate),
        "-R",
        str(load.clients),
        "-p",
        str(duration),
        "-l",
        CLIENT_ADDR,
        SERVER_ADDR,
    ]


# --- servers under test -----------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How to start one server in ``run_dir``: argv, environment, its own log files.

    The server's stdout and stderr always go to ``run_dir``/server.stdout and server.stderr.
    """

    run_dir: Path
    argv: list[str]
    env: dict[str, str] | None = None
    logs: tuple[Path, ...] = ()
    stop_timeout: float = 10.0

    @property
    def stderr(self) -> Path:
        return self.run_dir / "server.stderr"


CLUSTER_DESC = f"""\
# Generated by bench/dhcp.py: a /16 pool for perfdhcp's simulated clients.
bootstrapper: {SERVER_ADDR}
subnet: 10.88.0.0
netmask: 255.255.0.0
broadcast: 10.88.255.255
iplow: 10.88.1.0
iphigh: 10.88.255.250
routers: [{SERVER_ADDR}]
nameservers: [{SERVER_ADDR}]
upstreamnameservers: []
domainname: bench.internal
dockerdomain: bootstrapper
k8s_service_cluster_ip_range: 10.100.0.0/24
k8s_cluster_dns: 10.100.0.10
flannel_backend: host-gw
lease: "1h"
images: {{}}
ssh_authorized_keys:
  - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6A4YCOeE3uokw83aYlwiydyL7QBJMEpz4GykWAgmb3 bench"
dhcp:
  mode: full
  unknown_machines: allow
nodes:
  - mac: "52:54:00:88:00:01"
    cur_host_name: "bench1"
    kube_master: y
    etcd_member: y
"""


def launch_bootstrapperd(run_dir: Path, profile: Path | None) -> Launch:
    """A fresh bsroot (so an empty lease database) and ``bootstrapperd serve`` on it.

    With ``profile``, the daemon runs under ``python -m cProfile -o PROFILE``.
    """
    desc = run_dir / "cluster-desc.yml"
    desc.write_text(CLUSTER_DESC)
    bsroot = init_bsroot(desc, run_dir / "bsroot")
    serve = [
        "serve",
        "--bsroot",
        str(bsroot.root),
        "--interface",
        SERVER_IF,
        "--log-level",
        "warning",
        "--http-port",
        str(HTTP_PORT),
    ]
    if profile is None:
        argv = [str(VENV_BIN / "bootstrapperd"), *serve]
    else:
        python = str(VENV_BIN / "python")
        argv = [python, "-m", "cProfile", "-o", str(profile), "-m", "bootstrapperd", *serve]
    # Under cProfile, writing the profile after the grace period takes a while.
    return Launch(run_dir, argv, stop_timeout=30.0)


DNSMASQ_CONF = """\
# DHCP-only dnsmasq for perfdhcp load (relay mode, giaddr 10.88.0.2): LAB.md's reference
# configuration with its paths in the run directory, plus no-ping (else dnsmasq pings every new
# address before offering it, ~3 s per client) and a pid file of its own (else /run/dnsmasq.pid).
port=0
interface={interface}
bind-interfaces
no-resolv
no-hosts
dhcp-range=10.88.1.0,10.88.255.250,255.255.0.0,1h
dhcp-leasefile={run_dir}/dnsmasq.leases
dhcp-authoritative
dhcp-lease-max=100000
dhcp-boot=pxelinux.0,,{server}
quiet-dhcp
log-facility={run_dir}/dnsmasq.log
user=root
no-ping
pid-file={run_dir}/dnsmasq.pid
"""


def launch_dnsmasq(run_dir: Path) -> Launch:
    """dnsmasq with ``DNSMASQ_CONF``, in the foreground, leases and log in ``run_dir``."""
    conf = run_dir / "dnsmasq.conf"
    conf.write_text(DNSMASQ_CONF.format(interface=SERVER_IF, run_dir=run_dir, server=SERVER_ADDR))
    argv = ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground"]
    return Launch(run_dir, argv, logs=(run_dir / "dnsmasq.log",))


def kea_config(run_dir: Path) -> dict[str, object]:
    """LAB.md's reference kea-dhcp4 configuration (memfile, persist, no LFC), paths in run_dir."""
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [SERVER_IF], "dhcp-socket-type": "udp"},
            "control-socket": {
                "socket-type": "unix",
                "socket-name": str(run_dir / "kea4-ctrl.sock"),
            },
            "lease-database": {
                "type": "memfile",
                "persist": True,
                "name": str(run_dir / "kea-leases4.csv"),
                "lfc-interval": 0,
            },
            "valid-lifetime": 3600,
            "renew-timer": 1800,
            "rebind-timer": 3150,
            "authoritative": True,
            "subnet4": [
                {
                    "id": 1,
                    "subnet": "10.88.0.0/16",
                    "pools": [{"pool": "10.88.1.0 - 10.88.255.250"}],
                    "next-server": SERVER_ADDR,
                    "boot-file-name": "pxelinux.0",
                    "option-data": [{"name": "routers", "data": SERVER_ADDR}],
                },
                {
                    "id": 2,
                    "subnet": "10.77.0.0/24",
                    "pools": [{"pool": "10.77.0.100 - 10.77.0.200"}],
                },
            ],
            "loggers": [
                {
                    "name": "kea-dhcp4",
                    "output_options": [{"output": str(run_dir / "kea-dhcp4.log")}],
                    "severity": "WARN",
                }
            ],
        }
    }


def launch_kea(run_dir: Path) -> Launch:
    """kea-dhcp4 with ``kea_config``; its pid and lock files in ``run_dir`` too."""
    path = run_dir / "kea-dhcp4.json"
    path.write_text(json.dumps(kea_config(run_dir), indent=2))
    env = dict(os.environ, KEA_PIDFILE_DIR=str(run_dir), KEA_LOCKFILE_DIR=str(run_dir))
    return Launch(
        run_dir, ["kea-dhcp4", "-c", str(path)], env=env, logs=(run_dir / "kea-dhcp4.log",)
    )


# --- one run ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One server under one load: perfdhcp's counters, the derived figures and the server's RSS."""

    server: str
    load: str
    repeat: int
    dora_per_s: float
    drop_pct: float
    offered_per_s: float
    run_time_s: float
    wall_time_s: float
    peak_rss_kib: int | None
    server_cpu_s: float | None
    """CPU time (user + system, all threads) the server used while perfdhcp ran."""
    server_udp: dict[str, int]
    """The server namespace's UDP counters over the load (RcvbufErrors: kernel drops)."""
    client_udp: dict[str, int]
    perfdhcp: dict[str, object]
    log_warnings: list[str] = field(default_factory=list)

    @property
    def server_cpu_pct(self) -> float | None:
        """The server's CPU use while perfdhcp ran, in % of one core."""
        if self.server_cpu_s is None or self.wall_time_s <= 0:
            return None
        return 100.0 * self.server_cpu_s / self.wall_time_s


@dataclass
class Lab:
    """The two namespaces every run shares."""

    lab: NetLab
    server: Namespace
    client: Namespace


def build_lab(lab: NetLab) -> Lab:
    """Server and client namespaces joined by one veth pair, both /16 in 10.88.0.0."""
    server = lab.namespace("srv")
    client = lab.namespace("cli")
    lab.veth(
        server,
        SERVER_IF,
        client,
        CLIENT_IF,
        f"{SERVER_ADDR}/{PREFIX_LEN}",
        f"{CLIENT_ADDR}/{PREFIX_LEN}",
    )
    return Lab(lab, server, client)


def run_perfdhcp(ns: Namespace, load: Load, duration: int) -> tuple[PerfdhcpStats, float, str]:
    """Run perfdhcp to its end; return its statistics, wall-clock seconds and raw output."""
    started = time.monotonic()
    result = ns.run(perfdhcp_argv(load, duration), timeout=duration + 120)
    wall = time.monotonic() - started
    # perfdhcp exits 3 when some packets were dropped: that is a measurement, not a failure.
    if result.returncode not in (0, 3):
        raise LabError(f"perfdhcp failed ({result.returncode}): {result.stderr.strip()}")
    try:
        return parse_perfdhcp(result.stdout), wall, result.stdout
    except ValueError as exc:
        raise LabError(f"{exc}:\n{result.stdout}\n{result.stderr}") from exc


@dataclass
class Measurement:
    """One load against a running server, seen from both sides."""

    stats: PerfdhcpStats
    wall_time_s: float
    raw: str
    peak_rss_kib: int | None
    server_cpu_s: float | None
    server_udp: dict[str, int]
    client_udp: dict[str, int]


def measure(lab: Lab, pid: int, load: Load, duration: int) -> Measurement:
    """Run perfdhcp against the server ``pid``; its CPU and the UDP counters over the run."""
    cpu_before = cpu_seconds(pid)
    server_before, client_before = udp_counters(lab.server), udp_counters(lab.client)
    stats, wall, raw = run_perfdhcp(lab.client, load, duration)
    cpu_after = cpu_seconds(pid)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Measurement(
        stats=stats,
        wall_time_s=wall,
        raw=raw,
        peak_rss_kib=peak_rss_kib(pid),
        server_cpu_s=cpu,
        server_udp=counter_delta(server_before, udp_counters(lab.server)),
        client_udp=counter_delta(client_before, udp_counters(lab.client)),
    )


def run_one(
    lab: Lab, server: str, launch: Launch, load: Load, duration: int, repeat: int
) -> RunResult:
    """Start ``server``, wait for port 67, load it with perfdhcp, measure it, stop it."""
    with (launch.run_dir / "server.stdout").open("wb") as out, launch.stderr.open("wb") as err:
        proc = lab.server.spawn(launch.argv, stdout=out, stderr=err, env=launch.env)
        try:
            wait_udp_listening(lab.server, 67, proc)
            m = measure(lab, program_pid(proc), load, duration)
            if proc.poll() is not None:
                raise LabError(f"{server} exited ({proc.returncode}) during the load")
        finally:
            lab.lab.stop(proc, timeout=launch.stop_timeout)
    (launch.run_dir / "perfdhcp.out").write_text(m.raw)
    warnings = [
        line
        for log in (launch.stderr, *launch.logs)
        for line in first_lines(log, ("WARN", "ERROR", "Traceback", "CRITICAL"))
    ]
    return RunResult(
        server=server,
        load=load.name,
        repeat=repeat,
        dora_per_s=m.stats.dora_per_s,
        drop_pct=m.stats.drop_pct,
        offered_per_s=m.stats.discover_offer.sent / (m.stats.run_time or duration),
        run_time_s=m.stats.run_time,
        wall_time_s=m.wall_time_s,
        peak_rss_kib=m.peak_rss_kib,
        server_cpu_s=m.server_cpu_s,
        server_udp=m.server_udp,
        client_udp=m.client_udp,
        perfdhcp=asdict(m.stats),
        log_warnings=warnings[:5],
    )


def prepare(server: str, run_dir: Path, profile: Path | None) -> Launch:
    """Fresh state for ``server`` in the empty ``run_dir``, and how to start it."""
    if server == "bootstrapperd":
        return launch_bootstrapperd(run_dir, profile)
    if server == "dnsmasq":
        return launch_dnsmasq(run_dir)
    return launch_kea(run_dir)


# --- summary ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The median over repeats of one server under one load."""

    server: str
    load: str
    dora_per_s: float
    drop_pct: float
    offered_per_s: float
    server_cpu_pct: float | None
    rcvbuf_drops: float | None
    """Datagrams the server namespace's kernel dropped: the server's socket buffer was full."""
    peak_rss_kib: float | None
    runs: int


def summarise(results: Sequence[RunResult]) -> list[Summary]:
    """Medians per (load, server), in the order the pairs first appear."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.load, result.server), []).append(result)
    summaries = []
    for (load, server), runs in groups.items():
        summaries.append(
            Summary(
                server=server,
                load=load,
                dora_per_s=statistics.median(r.dora_per_s for r in runs),
                drop_pct=statistics.median(r.drop_pct for r in runs),
                offered_per_s=statistics.median(r.offered_per_s for r in runs),
                server_cpu_pct=_median([r.server_cpu_pct for r in runs]),
                rcvbuf_drops=_median([r.server_udp.get("RcvbufErrors") for r in runs]),
                peak_rss_kib=_median([r.peak_rss_kib for r in runs]),
                runs=len(runs),
            )
        )
    return summaries


def _median(values: Sequence[float | None]) -> float | None:
    """The median of the known values, or None when none is known."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def ratios(summaries: Sequence[Summary]) -> dict[str, dict[str, float]]:
    """Per load: bootstrapperd's DORA/s divided by each reference server's."""
    by_load: dict[str, dict[str, float]] = {}
    for s in summaries:
        by_load.setdefault(s.load, {})[s.server] = s.dora_per_s
    out: dict[str, dict[str, float]] = {}
    for load, rates in by_load.items():
        ours = rates.get("bootstrapperd")
        if ours is None:
            continue
        out[load] = {
            f"bootstrapperd/{other}": ours / rate
            for other, rate in rates.items()
            if other != "bootstrapperd" and rate > 0
        }
    return out


def render_table(summaries: Sequence[Summary], duration: int) -> str:
    """A plain-text table of the medians, then the DORA/s ratios per load."""
    lines = [
        f"DHCP, perfdhcp relay mode, {duration} s per run; drop % = 1 − ACKs received ÷ "
        "DISCOVERs sent",
        f"{'load':<21} {'server':<13} {'DORA/s':>7} {'drop %':>6} {'offered/s':>9} "
        f"{'CPU %':>5} {'rcvbuf drops':>12} {'peak RSS':>10} {'runs':>4}",
    ]
    for s in summaries:
        load = LOADS[s.load]
        label = f"{s.load} ({load.clients} @ {load.rate}/s)"
        rss = "?" if s.peak_rss_kib is None else f"{s.peak_rss_kib / 1024:.1f} MiB"
        cpu = "?" if s.server_cpu_pct is None else f"{s.server_cpu_pct:.0f}"
        drops = "?" if s.rcvbuf_drops is None else f"{s.rcvbuf_drops:.0f}"
        lines.append(
            f"{label:<21} {s.server:<13} {s.dora_per_s:>7.0f} {s.drop_pct:>6.1f} "
            f"{s.offered_per_s:>9.0f} {cpu:>5} {drops:>12} {rss:>10} {s.runs:>4}"
        )
    for load_name, pairs in ratios(summaries).items():
        if pairs:
            text = ", ".join(f"{name} = {value:.2f}" for name, value in pairs.items())
            lines.append(f"ratios ({load_name}, DORA/s): {text}")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------


def _names(text: str, allowed: Sequence[str]) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dhcp",
        description="DORA/s of bootstrapperd, dnsmasq and Kea under perfdhcp in a private lab.",
    )
    parser.add_argument("--duration", type=_positive, default=30, help="perfdhcp -p seconds (30)")
    parser.add_argument("--repeat", type=_positive, default=1, help="runs per pair; median (1)")
    parser.add_argument(
        "--servers",
        type=lambda text: _names(text, SERVER_NAMES),
        default=list(SERVER_NAMES),
        help="comma-separated: bootstrapperd,dnsmasq,kea",
    )
    parser.add_argument(
        "--loads",
        type=lambda text: _names(text, tuple(LOADS)),
        default=list(DEFAULT_LOADS),
        help="comma-separated: big,small",
    )
    parser.add_argument("--json", type=Path, help="also write every run and the medians here")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="run bootstrapperd under cProfile, one .prof per run in this directory",
    )
    parser.add_argument(
        "--keep-scratch", action="store_true", help="keep the scratch directory (logs, leases)"
    )
    return parser


def run_all(args: argparse.Namespace, scratch: Path) -> list[RunResult]:
    """Every repeat × load × server, one after the other in one lab."""
    results: list[RunResult] = []
    with NetLab() as netlab:
        lab = build_lab(netlab)
        for repeat in range(1, args.repeat + 1):
            for load_name in args.loads:
                load = LOADS[load_name]
                for server in args.servers:
                    run_dir = scratch / f"{server}-{load.name}-{repeat}"
                    run_dir.mkdir()
                    profile = _profile_path(args.profile_dir, load, repeat)
                    launch = prepare(server, run_dir, profile)
                    result = run_one(lab, server, launch, load, args.duration, repeat)
                    print(_progress(result), file=sys.stderr, flush=True)
                    results.append(result)
    return results


def _profile_path(profile_dir: Path | None, load: Load, repeat: int) -> Path | None:
    """Where bootstrapperd's cProfile output for this run goes (None: not profiled)."""
    if profile_dir is None:
        return None
    return profile_dir / f"bootstrapperd-{load.name}-{repeat}.prof"


def _progress(result: RunResult) -> str:
    line = (
        f"[{result.load} #{result.repeat}] {result.server}: {result.dora_per_s:.0f} DORA/s, "
        f"{result.drop_pct:.1f} % dropped, peak RSS {result.peak_rss_kib} KiB"
    )
    for warning in result.log_warnings:
        line += f"\n    log: {warning}"
    return line


DEFINITIONS = {
    "dora_per_s": "REQUEST-ACK received ÷ perfdhcp's measured test period (its Rate line)",
    "drop_pct": "100 × (1 − REQUEST-ACK received ÷ DISCOVER sent)",
    "offered_per_s": "DISCOVER sent ÷ the test period",
    "server_cpu_pct": "server CPU time (user + system, all threads) during perfdhcp ÷ wall time",
    "rcvbuf_drops": "UDP RcvbufErrors in the server namespace during perfdhcp",
    "peak_rss_kib": "VmHWM of the server process itself, read just before it is stopped",
}
"""What each reported figure is (also written into the JSON report)."""


def json_report(
    args: argparse.Namespace, summaries: Sequence[Summary], results: Sequence[RunResult]
) -> dict[str, object]:
    """Everything measured: machine facts, definitions, medians, ratios and every run."""
    return {
        "benchmark": "dhcp",
        "duration_s": args.duration,
        "repeat": args.repeat,
        "machine": machine_facts(),
        "definitions": DEFINITIONS,
        "summary": [asdict(s) for s in summaries],
        "ratios": ratios(summaries),
        "runs": [{**asdict(r), "server_cpu_pct": r.server_cpu_pct} for r in results],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench.dhcp: cannot build the lab: {reason}", file=sys.stderr)
        return 1
    if args.profile_dir is not None:
        args.profile_dir = args.profile_dir.resolve()
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    try:
        with scratch_dir("bench-dhcp-", keep=args.keep_scratch) as scratch:
            results = run_all(args, scratch)
    except ConfigError as exc:
        print(f"bench.dhcp: the generated cluster description is refused:\n{exc.report()}")
        return 1
    except LabError as exc:
        print(f"bench.dhcp: {exc}", file=sys.stderr)
        return 1
    summaries = summarise(results)
    print(render_table(summaries, args.duration))
    if args.json is not None:
        args.json.write_text(json.dumps(json_report(args, summaries, results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
