"""TFTP benchmark: MiB/s of bootstrapperd and dnsmasq sending one large file to real clients.

Run from the checkout as root (dnsmasq, tftp-hpa and atftp installed)::

    .venv/bin/python -m bench.tftp [--repeats 3] [--json out.json]

Other options: ``--servers bootstrapperd,dnsmasq``, ``--rows default,blksize,window``,
``--size-mib 64``, ``--timeout 120`` (seconds per fetch), ``--keep-scratch``.

A file of random bytes (64 MiB by default, made once per run) is fetched from each server in
turn, in a private lab of two network namespaces joined by one veth pair (server ``10.89.0.1/24``
on ``srv0``, client ``10.89.0.2/24`` on ``cli0``, MTU 1500); nothing touches the host's
interfaces. Three rows, one client command each:

- ``default``: tftp-hpa with no options (blksize 512, one block in flight),
  ``tftp -m binary 10.89.0.1 -c get FILE OUT``;
- ``blksize``: atftp with ``--option "blksize 1468"`` (one 1468-byte block fills a 1500-byte
  frame);
- ``window``: atftp with ``--option "blksize 1468" --option "windowsize 16"`` (RFC 7440; a
  server without windowsize support ignores the option and runs lock-step).

MiB/s is the file size ÷ the client command's wall time. Every download is checked against the
original (size and SHA-256); a short or different file, a client error or a timeout is reported
as a failed fetch (and the exit status is 1), never as a figure. Each figure is the median of
``--repeats`` runs; the server is started afresh for every repeat and serves every row once.
The table also shows the server's CPU seconds per fetch, the client's, and the UDP receive
buffer drops on either side, then the ratio bootstrapperd/dnsmasq per row beside its target.
See bench/README.md for the definitions and results.
"""

from __future__ import annotations

import argparse
import hashlib
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

from bootstrapperd.lab.netlab import LabError, NetLab, unavailable_reason
from bootstrapperd.model import ConfigError
from bootstrapperd.pack import init_bsroot

from .common import (
    VENV_BIN,
    Launch,
    PairLab,
    counter_delta,
    cpu_seconds,
    first_version_lines,
    fmt,
    lab_description,
    machine_facts,
    median,
    names_arg,
    pair_lab,
    positive_int,
    program_pid,
    running,
    scratch_dir,
    serve_args,
    tail,
    udp_counters,
    wait_udp_listening,
)

SERVER_ADDR = "10.89.0.1"
CLIENT_ADDR = "10.89.0.2"
PREFIX_LEN = 24
SERVER_IF = "srv0"
CLIENT_IF = "cli0"
MTU = 1500
TFTP_PORT = 69
HTTP_PORT = 8080
PAYLOAD_NAME = "bench-payload.bin"
"""The file's name in each server's TFTP root."""
MIB = 1024 * 1024

SERVER_NAMES = ("bootstrapperd", "dnsmasq")
REFERENCE = "dnsmasq"
"""The server bootstrapperd's figures are divided by."""


# --- rows: one client command each -------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One way of fetching the file: which client, which TFTP options, the target ratio."""

    name: str
    label: str
    client: str
    """``tftp-hpa`` or ``atftp``."""
    options: tuple[str, ...]
    """atftp ``--option`` values ("name value")."""
    target_ratio: float
    """bootstrapperd's MiB/s ÷ dnsmasq's should be at least this."""

    def argv(self, server: str, remote: str, local: Path) -> list[str]:
        """The client command that fetches ``remote`` from ``server`` into ``local``."""
        if self.client == "tftp-hpa":
            return ["tftp", "-m", "binary", server, "-c", "get", remote, str(local)]
        argv = ["atftp"]
        for option in self.options:
            argv += ["--option", option]
        return [*argv, "-g", "-r", remote, "-l", str(local), server]


ROWS = {
    "default": Row("default", "default (tftp-hpa, 512)", "tftp-hpa", (), 1.0),
    "blksize": Row("blksize", "blksize 1468 (atftp)", "atftp", ("blksize 1468",), 1.0),
    "window": Row(
        "window",
        "+ windowsize 16 (atftp)",
        "atftp",
        ("blksize 1468", "windowsize 16"),
        1.3,
    ),
}
DEFAULT_ROWS = tuple(ROWS)


# --- the payload -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """The file every server sends: where it is, its size and SHA-256."""

    path: Path
    size: int
    sha256: str


def make_payload(path: Path, size: int, chunk: int = MIB) -> Payload:
    """Write ``size`` random bytes to ``path`` and return its digest."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left > 0:
            data = os.urandom(min(chunk, left))
            digest.update(data)
            out.write(data)
            left -= len(data)
    return Payload(path, size, digest.hexdigest())


def file_digest(path: Path, chunk: int = MIB) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while data := stream.read(chunk):
            digest.update(data)
    return digest.hexdigest()


def check_download(path: Path, payload: Payload) -> str | None:
    """Why ``path`` is not the payload (missing, wrong size, different bytes), or None."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"no downloaded file: {exc.strerror or exc}"
    if size != payload.size:
        return f"size {size} bytes, expected {payload.size}"
    digest = file_digest(path)
    if digest != payload.sha256:
        return f"sha256 {digest[:16]}…, expected {payload.sha256[:16]}…"
    return None


def place(payload: Payload, directory: Path) -> None:
    """Put the payload in a server's TFTP root (a hard link: no second copy of the bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / PAYLOAD_NAME
    try:
        os.link(payload.path, target)
    except OSError:
        shutil.copyfile(payload.path, target)


# --- servers under test ------------------------------------------------------------------------


CLUSTER_DESC = lab_description("bench/tftp.py", "10.89.0", SERVER_ADDR, "52:54:00:89:00:01")


def launch_bootstrapperd(run_dir: Path, payload: Payload) -> Launch:
    """A fresh bsroot with the payload in tftpboot/, and ``bootstrapperd serve`` on it."""
    desc = run_dir / "cluster-desc.yml"
    desc.write_text(CLUSTER_DESC)
    bsroot = init_bsroot(desc, run_dir / "bsroot")
    place(payload, bsroot.tftpboot)
    argv = [str(VENV_BIN / "bootstrapperd"), *serve_args(bsroot.root, SERVER_IF, HTTP_PORT)]
    return Launch(run_dir, argv)


DNSMASQ_CONF = """\
# TFTP-only dnsmasq: no DNS (port=0), no DHCP (no dhcp-range). Not no-dhcp-interface=, which
# turns TFTP off on that interface too. Log and pid file in the run directory.
port=0
interface={interface}
bind-interfaces
no-resolv
no-hosts
enable-tftp
tftp-root={tftp_root}
log-facility={run_dir}/dnsmasq.log
user=root
pid-file={run_dir}/dnsmasq.pid
"""


def launch_dnsmasq(run_dir: Path, payload: Payload) -> Launch:
    """dnsmasq's TFTP server on ``srv0``, in the foreground, its root in ``run_dir``/tftpboot."""
    tftp_root = run_dir / "tftpboot"
    place(payload, tftp_root)
    conf = run_dir / "dnsmasq.conf"
    conf.write_text(DNSMASQ_CONF.format(interface=SERVER_IF, tftp_root=tftp_root, run_dir=run_dir))
    argv = ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground"]
    return Launch(run_dir, argv, logs=(run_dir / "dnsmasq.log",))


def prepare(server: str, run_dir: Path, payload: Payload) -> Launch:
    """A fresh TFTP root holding the payload for ``server`` in ``run_dir``; how to start it."""
    if server == "bootstrapperd":
        return launch_bootstrapperd(run_dir, payload)
    return launch_dnsmasq(run_dir, payload)


# --- one fetch ---------------------------------------------------------------------------------


@dataclass
class FetchResult:
    """One fetch of the payload by one row's client from one server."""

    server: str
    row: str
    repeat: int
    ok: bool
    error: str | None
    """Why the fetch failed (client status, timeout, size or digest mismatch), or None."""
    seconds: float | None
    """Wall time of the client command."""
    mib_per_s: float | None
    """Payload size ÷ seconds, only when the download is byte-identical."""
    server_cpu_s: float | None
    """CPU time (user + system, all threads) the server used during the fetch."""
    client_cpu_s: float | None
    """CPU time (user + system) of the client command."""
    server_udp: dict[str, int] = field(default_factory=dict)
    client_udp: dict[str, int] = field(default_factory=dict)
    client_output: str = ""
    log_warnings: list[str] = field(default_factory=list)


Lab = PairLab


def build_lab(lab: NetLab) -> Lab:
    """Server and client namespaces joined by one veth pair (MTU 1500), both in 10.89.0.0/24."""
    return pair_lab(lab, (SERVER_IF, SERVER_ADDR), (CLIENT_IF, CLIENT_ADDR), PREFIX_LEN, MTU)


def _children_cpu() -> float:
    """User + system CPU of every child this process has waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fetch(
    lab: Lab,
    server: str,
    pid: int,
    row: Row,
    payload: Payload,
    out: Path,
    repeat: int,
    timeout: float,
) -> FetchResult:
    """Run ``row``'s client once against the server ``pid``; check what it wrote to ``out``."""
    out.unlink(missing_ok=True)
    argv = row.argv(SERVER_ADDR, PAYLOAD_NAME, out)
    server_before, client_before = udp_counters(lab.server), udp_counters(lab.client)
    cpu_before = cpu_seconds(pid)
    # `ip netns exec` execs, so the waited-for child is the client itself.
    children_before = _children_cpu()
    started = time.monotonic()
    error: str | None = None
    output = ""
    try:
        result = lab.client.run(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:g} s"
    else:
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            error = f"{row.client} exited with status {result.returncode}: {tail(output)}"
    seconds = time.monotonic() - started
    client_cpu = _children_cpu() - children_before
    cpu_after = cpu_seconds(pid)
    server_udp = counter_delta(server_before, udp_counters(lab.server))
    client_udp = counter_delta(client_before, udp_counters(lab.client))
    if error is None:
        error = check_download(out, payload)
    ok = error is None
    if ok:
        out.unlink(missing_ok=True)  # 64 MiB per fetch: keep only the ones that failed
    return FetchResult(
        server=server,
        row=row.name,
        repeat=repeat,
        ok=ok,
        error=error,
        seconds=seconds,
        mib_per_s=payload.size / MIB / seconds if ok and seconds > 0 else None,
        server_cpu_s=(
            cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        ),
        client_cpu_s=client_cpu,
        server_udp=server_udp,
        client_udp=client_udp,
        client_output=tail(output),
    )


def _failed(server: str, rows: Sequence[Row], repeat: int, error: str) -> list[FetchResult]:
    return [
        FetchResult(server, row.name, repeat, False, error, None, None, None, None) for row in rows
    ]


def serve_and_fetch(
    lab: Lab,
    server: str,
    launch: Launch,
    rows: Sequence[Row],
    payload: Payload,
    fetched: Path,
    repeat: int,
    timeout: float,
) -> list[FetchResult]:
    """Start ``server``, wait for UDP port 69, fetch once per row, stop it (by PID)."""
    results: list[FetchResult] = []
    with running(lab.lab, lab.server, launch) as proc:
        try:
            wait_udp_listening(lab.server, TFTP_PORT, proc)
        except LabError as exc:
            results = _failed(server, rows, repeat, f"not serving: {exc}")
        else:
            pid = program_pid(proc)
            for row in rows:
                if proc.poll() is not None:
                    error = f"{server} exited with status {proc.returncode}"
                    results += _failed(server, [row], repeat, error)
                    continue
                target = fetched / f"{server}-{row.name}-{repeat}.bin"
                results.append(fetch(lab, server, pid, row, payload, target, repeat, timeout))
    warnings = launch.warnings()
    for result in results:
        result.log_warnings = warnings
    return results


# --- summary -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The median over the successful repeats of one server on one row."""

    server: str
    row: str
    mib_per_s: float | None
    seconds: float | None
    server_cpu_s: float | None
    client_cpu_s: float | None
    server_rcvbuf_drops: float | None
    client_rcvbuf_drops: float | None
    ok: int
    runs: int


def summarise(results: Sequence[FetchResult]) -> list[Summary]:
    """Medians per (row, server) over the fetches that succeeded, rows in ``ROWS`` order."""
    groups: dict[tuple[str, str], list[FetchResult]] = {}
    for result in results:
        groups.setdefault((result.row, result.server), []).append(result)
    order = list(ROWS)
    summaries = []
    for (row, server), runs in sorted(
        groups.items(), key=lambda item: order.index(item[0][0]) if item[0][0] in ROWS else 99
    ):
        good = [r for r in runs if r.ok]
        summaries.append(
            Summary(
                server=server,
                row=row,
                mib_per_s=median([r.mib_per_s for r in good]),
                seconds=median([r.seconds for r in good]),
                server_cpu_s=median([r.server_cpu_s for r in good]),
                client_cpu_s=median([r.client_cpu_s for r in good]),
                server_rcvbuf_drops=median([r.server_udp.get("RcvbufErrors") for r in good]),
                client_rcvbuf_drops=median([r.client_udp.get("RcvbufErrors") for r in good]),
                ok=len(good),
                runs=len(runs),
            )
        )
    return summaries


@dataclass(frozen=True)
class Ratio:
    """bootstrapperd's median MiB/s ÷ the reference's on one row, against the row's target."""

    row: str
    ratio: float | None
    """None when either side has no successful fetch."""
    target: float

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= self.target


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[Ratio]:
    """Per row with both servers measured: bootstrapperd ÷ ``reference``, with its target."""
    by_row: dict[str, dict[str, float | None]] = {}
    for s in summaries:
        by_row.setdefault(s.row, {})[s.server] = s.mib_per_s
    out = []
    for row, rates in by_row.items():
        if "bootstrapperd" not in rates or reference not in rates:
            continue
        ours, theirs = rates["bootstrapperd"], rates[reference]
        value = ours / theirs if ours is not None and theirs else None
        out.append(Ratio(row, value, ROWS[row].target_ratio if row in ROWS else 1.0))
    return out


def render_table(summaries: Sequence[Summary], results: Sequence[FetchResult], size: int) -> str:
    """The medians, the ratio per row beside its target, then every failed fetch."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = f"; all on CPU {','.join(map(str, cpus))}" if len(cpus) < (os.cpu_count() or 0) else ""
    lines = [
        f"TFTP, {size / MIB:g} MiB file, veth MTU {MTU}{pinned}; MiB/s = file size ÷ client wall "
        "time; CPU s per fetch; rcvbuf drops server/client",
        f"{'row':<24} {'server':<13} {'MiB/s':>7} {'time s':>7} {'srv CPU s':>9} "
        f"{'cli CPU s':>9} {'rcvbuf drops':>12} {'ok/runs':>7}",
    ]
    for s in summaries:
        label = ROWS[s.row].label if s.row in ROWS else s.row
        drops = f"{fmt(s.server_rcvbuf_drops, '.0f')}/{fmt(s.client_rcvbuf_drops, '.0f')}"
        rate = "FAILED" if s.mib_per_s is None else f"{s.mib_per_s:.1f}"
        lines.append(
            f"{label:<24} {s.server:<13} {rate:>7} {fmt(s.seconds, '.2f'):>7} "
            f"{fmt(s.server_cpu_s, '.2f'):>9} {fmt(s.client_cpu_s, '.2f'):>9} "
            f"{drops:>12} {f'{s.ok}/{s.runs}':>7}"
        )
    for r in ratios(summaries):
        verdict = {True: "met", False: "NOT met", None: "not measured"}[r.met]
        lines.append(
            f"ratio ({r.row}, MiB/s): bootstrapperd/{REFERENCE} = {fmt(r.ratio, '.2f')} "
            f"(target ≥ {r.target:.2f}: {verdict})"
        )
    for f in results:
        if not f.ok:
            lines.append(f"FAILED {f.server} {f.row} #{f.repeat}: {f.error}")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tftp",
        description="MiB/s of bootstrapperd and dnsmasq TFTP (tftp-hpa, atftp) in a private lab.",
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
        help="comma-separated: default,blksize,window",
    )
    parser.add_argument("--size-mib", type=positive_int, default=64, help="file size in MiB (64)")
    parser.add_argument(
        "--timeout", type=positive_int, default=120, help="seconds allowed per fetch (120)"
    )
    parser.add_argument("--json", type=Path, help="also write every fetch and the medians here")
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help="keep the scratch directory (server logs, failed downloads)",
    )
    return parser


def run_all(args: argparse.Namespace, scratch: Path, payload: Payload) -> list[FetchResult]:
    """Every repeat × server × row in one lab; each server started afresh per repeat."""
    rows = [ROWS[name] for name in args.rows]
    fetched = scratch / "fetched"
    fetched.mkdir()
    results: list[FetchResult] = []
    with NetLab() as netlab:
        lab = build_lab(netlab)
        for repeat in range(1, args.repeats + 1):
            for server in args.servers:
                run_dir = scratch / f"{server}-{repeat}"
                run_dir.mkdir()
                launch = prepare(server, run_dir, payload)
                runs = serve_and_fetch(
                    lab, server, launch, rows, payload, fetched, repeat, args.timeout
                )
                for result in runs:
                    print(_progress(result), file=sys.stderr, flush=True)
                results += runs
    return results


def _progress(result: FetchResult) -> str:
    head = f"[{result.row} #{result.repeat}] {result.server}: "
    if result.ok:
        line = (
            f"{head}{fmt(result.mib_per_s, '.1f')} MiB/s in {fmt(result.seconds, '.2f')} s, "
            f"server CPU {fmt(result.server_cpu_s, '.2f')} s"
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
        "tftp-hpa": ["tftp", "-V"],
        "atftp": ["atftp", "--version"],
    }
    return first_version_lines(commands)


DEFINITIONS = {
    "mib_per_s": "payload size (MiB) ÷ wall time of the client command; byte-identical only",
    "seconds": "wall time of the client command (ip netns exec + client start + transfer)",
    "server_cpu_s": "server CPU time (user + system, all threads) during the fetch",
    "client_cpu_s": "client command CPU time (user + system), from getrusage(RUSAGE_CHILDREN)",
    "rcvbuf_drops": "UDP RcvbufErrors in the server / client namespace during the fetch",
    "ratio": "bootstrapperd's median MiB/s ÷ dnsmasq's, per row",
}
"""What each reported figure is (also written into the JSON report)."""


def json_report(
    args: argparse.Namespace,
    payload: Payload,
    summaries: Sequence[Summary],
    results: Sequence[FetchResult],
    loadavg_before: tuple[float, float, float],
) -> dict[str, object]:
    """Everything measured: facts, definitions, rows, medians, ratios and every fetch."""
    return {
        "benchmark": "tftp",
        "size_bytes": payload.size,
        "sha256": payload.sha256,
        "repeats": args.repeats,
        "mtu": MTU,
        "machine": machine_facts(),
        # Other work on the machine skews the figures: the load average before and after.
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "tools": tool_versions(),
        "definitions": DEFINITIONS,
        "rows": {
            name: {
                "label": row.label,
                "argv": row.argv(SERVER_ADDR, PAYLOAD_NAME, Path("OUT")),
                "target_ratio": row.target_ratio,
            }
            for name, row in ROWS.items()
            if name in args.rows
        },
        "summary": [asdict(s) for s in summaries],
        "ratios": [{**asdict(r), "met": r.met} for r in ratios(summaries)],
        "runs": [asdict(r) for r in results],
    }


def missing_tools() -> list[str]:
    return [tool for tool in ("dnsmasq", "tftp", "atftp", "ss") if shutil.which(tool) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reason = unavailable_reason()
    if reason is None and (missing := missing_tools()):
        reason = f"not installed: {', '.join(missing)}"
    if reason is not None:
        print(f"bench.tftp: cannot build the lab: {reason}", file=sys.stderr)
        return 1
    loadavg_before = os.getloadavg()
    try:
        with scratch_dir("bench-tftp-", keep=args.keep_scratch) as scratch:
            payload = make_payload(scratch / PAYLOAD_NAME, args.size_mib * MIB)
            results = run_all(args, scratch, payload)
    except ConfigError as exc:
        print(f"bench.tftp: the generated cluster description is refused:\n{exc.report()}")
        return 1
    except LabError as exc:
        print(f"bench.tftp: {exc}", file=sys.stderr)
        return 1
    summaries = summarise(results)
    print(render_table(summaries, results, payload.size))
    if args.json is not None:
        report = json_report(args, payload, summaries, results, loadavg_before)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
