"""Boot benchmark: one VM's network boot and install, bootstrapperd vs dnsmasq + http.server.

Run from the checkout as root (qemu-system-x86, ipxe-qemu, busybox-static and dnsmasq
installed)::

    .venv/bin/python -m bench.boot [--rounds 3] [--no-ra]

Other options: ``--mac`` (the machine, a node of the description; default the example's master
52:54:00:77:00:10), ``--servers bootstrapperd,dnsmasq``, ``--timeout 300`` (seconds per boot),
``--json out.json``, ``--keep-scratch``.

The cluster is the bundled example (config/examples/cluster-desc.yml) with ``registry: {mode:
off}``, packed once by the VM lab (:func:`bootstrapperd.lab.vm.lab.pack_bsroot`: the stand-in OS
from a signed local mirror). Each server boots the same machine in its own fresh lab
(:class:`bootstrapperd.lab.vm.lab.BootLab`: namespaces ``bs`` with ``bs0`` holding the
bootstrapper address, and ``vm`` with a bridge and the machine's tap), with a fresh disk, under
the lab's acceleration (:func:`~bootstrapperd.lab.vm.qemu.choose_accel`), one server at a time:

- **bootstrapperd**: ``bootstrapperd serve`` on a fresh copy of the packed bsroot
  (``DOCKER_HOST`` pointing nowhere). Config fetched: the machine's timeline (``GET
  /api/v1/nodes/<mac>``), the first ``http`` event of kind ``ignition`` or ``cloud-config``.
- **dnsmasq** + ``python -m http.server``, in the same ``bs`` namespace: dnsmasq for DHCP (the
  machine's reservation, its hostname and the domain), DNS (``host-record`` for the machine's
  FQDN and every master's) and TFTP (the bsroot's tftpboot), with the reference lab's iPXE
  tuning (option 175.176 = 1, ``enable-ra`` with ``fd77::1/64`` on ``bs0``, ``no-ping``; ``--no-ra``
  leaves router advertisements out) and iPXE clients sent to ``http://<bs>/ipxe/<mac>`` as
  bootstrapperd does. http.server, on the description's ``http_port``, serves a directory with
  the files bootstrapperd would serve that machine on the same paths: ``bootstrapperd render``'s
  iPXE script, install.sh and config, and a copy of the bsroot's ``html/static``. The stand-in
  OS's POST reports get 501 there; it carries on. Config fetched: the time this benchmark saw the
  ``GET /ignition/`` (or ``/cloud-config/``) line appear in http.server's log (polled every
  50 ms; the log's own timestamps have 1 s resolution).

Both times are from QEMU's start (:attr:`Machine.started`): to the config fetched and to QEMU's
exit (the stand-in OS powers off when install.sh has finished; polled every 50 ms). A boot counts
only when the stand-in OS reports ``installed`` on its serial console; anything else is a failed
boot, listed under the table, never a time. The servers alternate order from round to round;
every figure is the median of ``--rounds`` (min–max beside it), and the ratio is
bootstrapperd's median ÷ dnsmasq's (target ≤ 1: bootstrapperd no slower). The table also gives
the servers' CPU seconds during a boot and whether each side sent IPv6 router advertisements.
Ctrl-C stops the run; every lab is torn down (SIGINT is held back while one is being torn down)
and the boots done so far are reported. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bootstrapperd.lab.netlab import LabError, NetLab
from bootstrapperd.lab.vm.lab import BootLab, Machine, Packed, console_script, pack_bsroot
from bootstrapperd.lab.vm.qemu import QEMU, MachineSpec
from bootstrapperd.lab.vm.qemu import missing_tools as vm_missing_tools
from bootstrapperd.model import load_cluster_file

from . import harness
from .boot_reference import (
    INTERFACE,
    RA_ADDRESS,
    HttpRoot,
    LogWatch,
    Target,
    build_http_root,
    dnsmasq_conf,
    http_server_argv,
    network_of,
    target_of,
)
from .common import (
    REPO,
    cpu_between,
    cpu_seconds,
    first_version_lines,
    fmt,
    machine_facts,
    median,
    positive_int,
    program_pid,
    wait_tcp_listening,
    wait_udp_listening,
)
from .harness import (
    Benchmark,
    Column,
    RoundsOption,
    Run,
    Spread,
    grouped,
    markdown_table,
    not_on_path,
    spread,
)

EXAMPLE = REPO / "config" / "examples" / "cluster-desc.yml"
DEFAULT_MAC = "52:54:00:77:00:10"  # the example's master1 (static address 10.77.0.10)
DOCKER_HOST = "unix:///nonexistent/bench.sock"
POLL_S = 0.05
RA_LOGGER = "bootstrapperd.ra"  # in bootstrapperd's log when its router advertisements run
SERVER_NAMES = ("bootstrapperd", "dnsmasq")
REFERENCE = "dnsmasq"
LABELS = {"bootstrapperd": "bootstrapperd", "dnsmasq": "dnsmasq + http.server"}
CONFIG_KINDS = ("ignition", "cloud-config")
TARGET = 1.0
"""bootstrapperd's median time ÷ dnsmasq's should be at most this (lower is better)."""
FIGURES = {"fetched_s": "QEMU start → config fetched", "off_s": "QEMU start → powered off"}
"""The figures divided, with their labels."""


def description_text(example: str) -> str:
    """The example description with the registry turned off (no Docker engine in the lab)."""
    return example.rstrip("\n") + "\n\nregistry:\n  mode: off\n"


# --- bootstrapperd's timeline --------------------------------------------------------------------


def config_fetched_at(timeline: Sequence[Mapping[str, Any]]) -> float | None:
    """When the machine's config was first served: the first ``http`` event of kind
    ``ignition`` or ``cloud-config`` (wall clock), or None."""
    for event in timeline:
        if event.get("source") == "http" and event.get("kind") in CONFIG_KINDS:
            return float(event["at"])
    return None


# --- one boot -----------------------------------------------------------------------------------


@dataclass
class BootResult:
    server: str
    round: int
    ok: bool
    error: str | None = None
    fetched_s: float | None = None
    """QEMU start → the machine's config fetched."""
    off_s: float | None = None
    """QEMU start → QEMU exited (the stand-in OS powered off)."""
    outcome: str | None = None
    accel: str = ""
    started: float | None = None
    """QEMU's start, wall clock (as bootstrapperd's timeline and logs)."""
    server_cpu_s: float | None = None
    """CPU time (user + system) the server's processes used from QEMU's start to its exit."""
    lease: str | None = None
    """The stand-in OS's ``lease`` line (address, hostname, domain, DNS it was given)."""
    resolved: str | None = None
    router_advertisements: bool | None = None
    """dnsmasq: enable-ra configured; bootstrapperd: its log shows its RA service started."""
    notes: list[str] = field(default_factory=list)


def mark_of(machine: Machine, word: str) -> str | None:
    for line in machine.marks():
        if line.startswith(word + " "):
            return line[len(word) + 1 :]
    return None


def boot(
    lab: BootLab, machine: Machine, timeout: float, poll: Callable[[], None] | None = None
) -> None:
    """Power the machine on and wait until QEMU exits (polled every 50 ms, ``poll`` too), or
    ``timeout``: then it is stopped and marked ``timed_out``."""
    lab.power_on([machine])
    deadline = time.monotonic() + timeout
    while True:
        if poll is not None:
            poll()
        if not machine.running():
            machine.ended = time.time()
            break
        if time.monotonic() > deadline:
            machine.timed_out = True
            assert machine.proc is not None
            lab.netlab.stop(machine.proc)
            machine.ended = time.time()
            break
        time.sleep(POLL_S)
    if poll is not None:
        poll()


def servers_cpu(procs: Sequence[subprocess.Popen[bytes]]) -> float | None:
    """The CPU seconds the servers' programs have used so far (None if one is gone)."""
    total = 0.0
    for proc in procs:
        used = cpu_seconds(program_pid(proc))
        if used is None:
            return None
        total += used
    return total


def judge(
    server: str,
    round_: int,
    machine: Machine,
    fetched_at: float | None,
    target: Target,
    why: str | None = None,
) -> BootResult:
    """A boot's result: times only when the stand-in OS installed and the config was seen."""
    outcome = machine.outcome()
    result = BootResult(
        server,
        round_,
        ok=False,
        outcome=outcome,
        accel=machine.accel,
        started=machine.started,
        lease=mark_of(machine, "lease"),
        resolved=mark_of(machine, "resolved"),
    )
    if machine.timed_out:
        result.error = f"timed out (last mark: {(machine.marks() or ['none'])[-1]})"
    elif outcome != "installed":
        result.error = f"ended {outcome or 'without an end mark'}" + (f"; {why}" if why else "")
    elif fetched_at is None:
        result.error = why or "the config fetch was not seen"
    else:
        assert machine.ended is not None
        result.ok = True
        result.fetched_s = fetched_at - machine.started
        result.off_s = machine.ended - machine.started
    if result.lease is not None and f"ip={target.ip} " not in result.lease + " ":
        result.notes.append(f"lease {result.lease} (expected ip={target.ip})")
    return result


def run_bootstrapperd(
    round_: int, run_dir: Path, packed: Packed, target: Target, timeout: float
) -> BootResult:
    bsroot = run_dir / "bsroot"
    shutil.copytree(packed.bsroot, bsroot, symlinks=True)
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST}
    with NetLab() as netlab:
        lab = BootLab(netlab, packed.model, run_dir)
        with (run_dir / "daemon.log").open("wb") as out:
            daemon = lab.start_daemon(bsroot, out, env=env)
        for port in (67, 53, 69):
            wait_udp_listening(lab.bs, port, daemon)
        machine = lab.add_machine(MachineSpec(target.hostname, target.mac))
        cpu_before = servers_cpu([daemon])
        boot(lab, machine, timeout)
        cpu = cpu_between(cpu_before, servers_cpu([daemon]))
        fetched_at, why = None, None
        try:
            timeline = lab.api(f"/api/v1/nodes/{target.mac}")["timeline"]
            fetched_at = config_fetched_at(timeline)
        except (LabError, ValueError, KeyError, TypeError) as exc:
            why = f"timeline unavailable: {exc}"
        if daemon.poll() is not None:
            why = f"bootstrapperd exited with status {daemon.returncode}"
            fetched_at = None
    result = judge("bootstrapperd", round_, machine, fetched_at, target, why)
    result.server_cpu_s = cpu
    result.router_advertisements = RA_LOGGER in (run_dir / "daemon.log").read_text(errors="replace")
    return result


def run_dnsmasq(
    round_: int,
    run_dir: Path,
    packed: Packed,
    target: Target,
    http_root: HttpRoot,
    timeout: float,
    ra: bool,
) -> BootResult:
    net = network_of(packed.model)
    tftp_root = run_dir / "tftpboot"
    shutil.copytree(packed.bsroot / "tftpboot", tftp_root, symlinks=True)
    conf = run_dir / "dnsmasq.conf"
    conf.write_text(dnsmasq_conf(run_dir, tftp_root, net, target, ra))
    http_log = run_dir / "http.log"
    with NetLab() as netlab:
        lab = BootLab(netlab, packed.model, run_dir)
        if ra:
            lab.bs.ip("addr", "add", RA_ADDRESS, "dev", INTERFACE, "nodad")
        with (run_dir / "dnsmasq.out").open("wb") as out:
            dnsmasq = lab.bs.spawn(
                ["dnsmasq", "-C", str(conf), "--keep-in-foreground"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        with http_log.open("wb") as out:
            http = lab.bs.spawn(
                http_server_argv(net.bootstrapper, net.http_port, http_root.root),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        for port in (67, 53, 69):
            wait_udp_listening(lab.bs, port, dnsmasq)
        wait_tcp_listening(lab.bs, net.http_port, http)
        machine = lab.add_machine(MachineSpec(target.hostname, target.mac))
        watch = LogWatch(http_log, http_root.prefix)
        cpu_before = servers_cpu([dnsmasq, http])
        boot(lab, machine, timeout, watch.poll)
        cpu = cpu_between(cpu_before, servers_cpu([dnsmasq, http]))
        why = None
        for name, proc in (("dnsmasq", dnsmasq), ("http.server", http)):
            if proc.poll() is not None:
                why = f"{name} exited with status {proc.returncode}"
    fetched_at = watch.seen_at if why is None else None
    result = judge("dnsmasq", round_, machine, fetched_at, target, why)
    result.server_cpu_s = cpu
    result.router_advertisements = ra
    return result


# --- the rounds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootRun:
    """What every boot shares: the packed bsroot, the machine, http.server's directory (when
    dnsmasq runs) and the options. Each boot builds its own lab."""

    scratch: Path
    packed: Packed
    target: Target
    http_root: HttpRoot | None
    timeout: float
    ra: bool
    """dnsmasq sends router advertisements."""


@contextlib.contextmanager
def open_lab(args: argparse.Namespace, scratch: Path) -> Iterator[BootRun]:
    """The description, the machine, the bsroot packed once, http.server's directory rendered
    once."""
    description = scratch / "cluster-desc.yml"
    description.write_text(description_text(EXAMPLE.read_text()))
    target = target_of(load_cluster_file(description), args.mac)
    packed = pack_bsroot(description, scratch / "pack")
    http_root = None
    if "dnsmasq" in args.servers:
        http_root = build_http_root(packed.bsroot, scratch / "http-root", target.mac)
    yield BootRun(scratch, packed, target, http_root, args.timeout, args.ra)


def serve_boot(run: BootRun, server: str, group: None, round_: int) -> list[BootResult]:
    """One boot of the machine served by ``server``, in its own fresh lab."""
    run_dir = run.scratch / f"round{round_}-{server}"
    run_dir.mkdir()
    if server == "bootstrapperd":
        return [run_bootstrapperd(round_, run_dir, run.packed, run.target, run.timeout)]
    assert run.http_root is not None
    return [
        run_dnsmasq(round_, run_dir, run.packed, run.target, run.http_root, run.timeout, run.ra)
    ]


# --- medians, ratios and the table ---------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """One server's boots: medians and ranges over the successful ones."""

    server: str
    fetched_s: Spread
    off_s: Spread
    server_cpu_s: float | None
    """Median over the successful boots."""
    ok: int
    runs: int
    router_advertisements: str
    """``yes``, ``no``, ``mixed`` or ``?`` over the server's boots."""


def _yes_no(values: Sequence[bool | None]) -> str:
    known = {value for value in values if value is not None}
    if not known:
        return "?"
    return "mixed" if len(known) > 1 else ("yes" if known.pop() else "no")


def summarise(results: Sequence[BootResult]) -> list[Summary]:
    """Per server (in the order first seen): medians and ranges over the successful boots."""
    summaries = []
    for server, runs in grouped(results, lambda r: r.server).items():
        good = [r for r in runs if r.ok]
        summaries.append(
            Summary(
                server,
                spread([r.fetched_s for r in good]),
                spread([r.off_s for r in good]),
                median([r.server_cpu_s for r in good]),
                len(good),
                len(runs),
                _yes_no([r.router_advertisements for r in runs]),
            )
        )
    return summaries


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[harness.Ratio]:
    """bootstrapperd's median ÷ the reference's, for each figure (None where one is missing)."""
    table = {figure: {s.server: getattr(s, figure).median for s in summaries} for figure in FIGURES}
    return harness.ratios(
        table, reference, lambda figure: TARGET, both_measured=False, lower_is_better=True
    )


def _seconds(value: Spread) -> str:
    if value.median is None:
        return "-"
    return f"{value.median:.2f} ({value.low:.2f}–{value.high:.2f})"


COLUMNS = (
    Column("server"),
    Column("config fetched s", right=True),
    Column("powered off s", right=True),
    Column("server CPU s", right=True),
    Column("installed/runs", right=True),
    Column("IPv6 RA"),
)
RATIO_COLUMNS = (
    Column("ratio bootstrapperd/dnsmasq"),
    Column("value", right=True),
    Column("target"),
)


def label(result: BootResult) -> str:
    return f"#{result.round}"


def render_table(
    summaries: Sequence[Summary],
    results: Sequence[BootResult],
    target: Target,
    rounds: int,
    versions: Mapping[str, str],
    footer: Sequence[str] = (),
) -> str:
    """Markdown: the conditions, one row per server, the ratios with the target, the versions,
    ``footer``, and every failed boot."""
    accels = sorted({r.accel for r in results if r.accel}) or ["?"]
    rows = [
        [
            LABELS.get(s.server, s.server),
            _seconds(s.fetched_s),
            _seconds(s.off_s),
            fmt(s.server_cpu_s, ".2f"),
            f"{s.ok}/{s.runs}",
            s.router_advertisements,
        ]
        for s in summaries
    ]
    ratio_rows = [
        [FIGURES[r.row], fmt(r.ratio, ".2f"), f"{r.bound} ({r.verdict})"] for r in ratios(summaries)
    ]
    lines = [
        f"Boot (VM): {target.hostname} {target.mac} (BIOS, iPXE ROM), accel "
        f"{'/'.join(accels)}; seconds from QEMU start, median (min–max) of {rounds} "
        f"round{'s' if rounds != 1 else ''}",
        "",
        *markdown_table(COLUMNS, rows),
        "",
        *markdown_table(RATIO_COLUMNS, ratio_rows),
        "",
        "versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()),
        *footer,
    ]
    for result in results:
        if not result.ok:
            lines.append(f"FAILED {result.server} {label(result)}: {result.error}")
        for note in result.notes:
            lines.append(f"note {result.server} {label(result)}: {note}")
    return "\n".join(lines)


# --- the benchmark -------------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    """--no-ra, --mac, --timeout."""
    parser.add_argument(
        "--no-ra",
        dest="ra",
        action="store_false",
        help="no router advertisements from dnsmasq (like-for-like while bootstrapperd has none)",
    )
    parser.add_argument(
        "--mac", default=DEFAULT_MAC, help=f"the machine: a node of the example ({DEFAULT_MAC})"
    )
    parser.add_argument(
        "--timeout", type=positive_int, default=300, help="seconds allowed per boot (300)"
    )


def progress(result: BootResult) -> str:
    return (
        f"config fetched {fmt(result.fetched_s, '.2f')} s, powered off "
        f"{fmt(result.off_s, '.2f')} s, server CPU {fmt(result.server_cpu_s, '.2f')} s "
        f"({result.accel})"
    )


def tool_versions(accels: Sequence[str]) -> dict[str, str]:
    commands = {
        "dnsmasq": ["dnsmasq", "--version"],
        "qemu": [QEMU, "--version"],
        "http.server": [sys.executable, "--version"],
        "bootstrapperd": [*console_script("bootstrapperd", "bootstrapperd"), "--version"],
        "checkout": ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
    }
    versions = first_version_lines(commands)
    versions["accel"] = "/".join(accels) or "?"
    return versions


def _accels(results: Sequence[BootResult]) -> list[str]:
    return sorted({r.accel for r in results if r.accel})


def render(run: Run[BootRun, BootResult], summaries: Sequence[Summary]) -> str:
    """The table for the rounds done, with the load average before and after."""
    before, after = run.loadavg_before[0], (run.loadavg_after or os.getloadavg())[0]
    footer = [f"load average (1 min) before/after: {before:.2f}/{after:.2f}"]
    done = max(r.round for r in run.results)
    return render_table(summaries, run.results, run.lab.target, done, run.versions, footer)


def json_head(run: Run[BootRun, BootResult]) -> dict[str, object]:
    """The machine facts, the machine booted, the options, the versions, the load average."""
    return {
        "machine": machine_facts(),
        "target": asdict(run.lab.target),
        "rounds": run.args.rounds,
        "router_advertisements": run.args.ra,
        "versions": run.versions,
        "loadavg_before": run.loadavg_before,
        "loadavg_after": run.loadavg_after,
    }


BENCHMARK: Benchmark[BootRun, None, BootResult, Summary] = Benchmark(
    name="boot",
    about="One VM's network boot and install time: bootstrapperd vs dnsmasq + http.server, "
    "in the VM lab.",
    servers=SERVER_NAMES,
    rounds=RoundsOption(("--rounds",), 3, "boots per server; median (3)"),
    open_lab=open_lab,
    groups=harness.one_group,
    serve=serve_boot,
    label=label,
    progress=progress,
    summarise=summarise,
    render=render,
    json_head=json_head,
    json_ratios=lambda summaries: [
        {"figure": r.row, "label": FIGURES[r.row], **r.json("ours", "theirs", "ratio", "met")}
        for r in ratios(summaries)
    ],
    add_options=add_options,
    missing_tools=lambda: [*vm_missing_tools(), *not_on_path("dnsmasq", "ss", "curl")],
    versions=lambda run: tool_versions(_accels(run.results)),
    alternate=True,
    keeps_partial=True,
    unit="boot",
    scratch_holds="bsroot, logs, serial consoles, configuration",
    runs_key="boots",
    config_name="cluster description",
)


def build_parser() -> argparse.ArgumentParser:
    return harness.build_parser(BENCHMARK)


def main(argv: Sequence[str] | None = None) -> int:
    return harness.main(BENCHMARK, argv)


if __name__ == "__main__":
    sys.exit(main())
