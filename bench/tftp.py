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
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrapperd.lab.netlab import LabError, NetLab
from bootstrapperd.pack import init_bsroot

from . import harness
from .common import (
    MIB,
    VENV_BIN,
    Launch,
    PairLab,
    Payload,
    check_download,
    counter_delta,
    cpu_between,
    cpu_seconds,
    dnsmasq_launch,
    first_version_lines,
    fmt,
    lab_description,
    make_payload,
    median,
    names_arg,
    pair_lab,
    positive_int,
    serve_args,
    tail,
    udp_counters,
    wait_udp_listening,
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
    conf = DNSMASQ_CONF.format(interface=SERVER_IF, tftp_root=tftp_root, run_dir=run_dir)
    return dnsmasq_launch(run_dir, conf)


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


@dataclass(frozen=True)
class TftpLab:
    """What every fetch shares: the two namespaces, the payload, the rows and the options."""

    pair: PairLab
    scratch: Path
    payload: Payload
    fetched: Path
    """Where downloads land (and those that failed their check stay)."""
    timeout: float


@contextlib.contextmanager
def open_lab(args: argparse.Namespace, scratch: Path) -> Iterator[TftpLab]:
    """The payload, then server and client namespaces joined by one veth pair (MTU 1500), both
    in 10.89.0.0/24."""
    payload = make_payload(scratch / PAYLOAD_NAME, args.size_mib * MIB)
    fetched = scratch / "fetched"
    fetched.mkdir()
    with NetLab() as netlab:
        pair = pair_lab(netlab, (SERVER_IF, SERVER_ADDR), (CLIENT_IF, CLIENT_ADDR), PREFIX_LEN, MTU)
        yield TftpLab(pair, scratch, payload, fetched, args.timeout)


def _children_cpu() -> float:
    """User + system CPU of every child this process has waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fetch(lab: TftpLab, server: str, pid: int, row: Row, repeat: int) -> FetchResult:
    """Run ``row``'s client once against the server ``pid``; check what it wrote."""
    out = lab.fetched / f"{server}-{row.name}-{repeat}.bin"
    out.unlink(missing_ok=True)
    argv = row.argv(SERVER_ADDR, PAYLOAD_NAME, out)
    pair = lab.pair
    server_before, client_before = udp_counters(pair.server), udp_counters(pair.client)
    cpu_before = cpu_seconds(pid)
    # `ip netns exec` execs, so the waited-for child is the client itself.
    children_before = _children_cpu()
    started = time.monotonic()
    error: str | None = None
    output = ""
    try:
        result = pair.client.run(argv, timeout=lab.timeout)
    except subprocess.TimeoutExpired:
        error = f"timed out after {lab.timeout:g} s"
    else:
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            error = f"{row.client} exited with status {result.returncode}: {tail(output)}"
    seconds = time.monotonic() - started
    client_cpu = _children_cpu() - children_before
    server_cpu = cpu_between(cpu_before, cpu_seconds(pid))
    server_udp = counter_delta(server_before, udp_counters(pair.server))
    client_udp = counter_delta(client_before, udp_counters(pair.client))
    if error is None:
        error = check_download(out, lab.payload)
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
        mib_per_s=lab.payload.size / MIB / seconds if ok and seconds > 0 else None,
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        server_udp=server_udp,
        client_udp=client_udp,
        client_output=tail(output),
    )


def serve_rows(lab: TftpLab, server: str, rows: Sequence[Row], repeat: int) -> list[FetchResult]:
    """Start ``server`` afresh, wait for UDP port 69, fetch once per row, stop it (by PID)."""
    run_dir = lab.scratch / f"{server}-{repeat}"
    run_dir.mkdir()
    launch = prepare(server, run_dir, lab.payload)

    def ready(proc: subprocess.Popen[bytes]) -> str | None:
        try:
            wait_udp_listening(lab.pair.server, TFTP_PORT, proc)
        except LabError as exc:
            return f"not serving: {exc}"
        return None

    def failed(targets: Sequence[Row], error: str) -> list[FetchResult]:
        return [
            FetchResult(server, row.name, repeat, False, error, None, None, None, None)
            for row in targets
        ]

    def measure(pid: int, row: Row) -> FetchResult:
        return fetch(lab, server, pid, row, repeat)

    return harness.run_server(
        lab.pair.lab, lab.pair.server, launch, server, rows, ready, measure, failed
    )


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


def _row_rank(row: str) -> int:
    return list(ROWS).index(row) if row in ROWS else 99


def summarise(results: Sequence[FetchResult]) -> list[Summary]:
    """Medians per (row, server) over the fetches that succeeded, rows in ``ROWS`` order."""
    groups = grouped(results, lambda r: (r.row, r.server))
    summaries = []
    for (row, server), runs in sorted(groups.items(), key=lambda item: _row_rank(item[0][0])):
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


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[harness.Ratio]:
    """Per row with both servers measured: bootstrapperd ÷ ``reference``, with its target."""
    table = figures(summaries, lambda s: s.row, lambda s: s.mib_per_s)
    return harness.ratios(
        table, reference, lambda row: ROWS[row].target_ratio if row in ROWS else 1.0
    )


COLUMNS = (
    Column("row", 24),
    Column("server", 13),
    Column("MiB/s", 7, right=True),
    Column("time s", 7, right=True),
    Column("srv CPU s", 9, right=True),
    Column("cli CPU s", 9, right=True),
    Column("rcvbuf drops", 12, right=True),
    Column("ok/runs", 7, right=True),
)


def label(result: FetchResult) -> str:
    return f"{result.row} #{result.repeat}"


def render_table(summaries: Sequence[Summary], results: Sequence[FetchResult], size: int) -> str:
    """The medians, the ratio per row beside its target, then every failed fetch."""
    rows = [
        [
            ROWS[s.row].label if s.row in ROWS else s.row,
            s.server,
            "FAILED" if s.mib_per_s is None else f"{s.mib_per_s:.1f}",
            fmt(s.seconds, ".2f"),
            fmt(s.server_cpu_s, ".2f"),
            fmt(s.client_cpu_s, ".2f"),
            f"{fmt(s.server_rcvbuf_drops, '.0f')}/{fmt(s.client_rcvbuf_drops, '.0f')}",
            f"{s.ok}/{s.runs}",
        ]
        for s in summaries
    ]
    lines = [
        f"TFTP, {size / MIB:g} MiB file, veth MTU {MTU}{affinity_note()}; MiB/s = file size ÷ "
        "client wall time; CPU s per fetch; rcvbuf drops server/client",
        *text_table(COLUMNS, rows),
        *(ratio_line(r, "MiB/s", REFERENCE) for r in ratios(summaries)),
        *failed_lines(results, label),
    ]
    return "\n".join(lines)


# --- the benchmark -----------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    """--rows, --size-mib, --timeout."""
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


def progress(result: FetchResult) -> str:
    return (
        f"{fmt(result.mib_per_s, '.1f')} MiB/s in {fmt(result.seconds, '.2f')} s, "
        f"server CPU {fmt(result.server_cpu_s, '.2f')} s"
    )


def tool_versions(run: Run[TftpLab, FetchResult]) -> dict[str, str]:
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


def json_head(run: Run[TftpLab, FetchResult]) -> dict[str, object]:
    """The payload, the options, the conditions, the definitions and the rows' commands."""
    payload = run.lab.payload
    return {
        "size_bytes": payload.size,
        "sha256": payload.sha256,
        "repeats": run.args.repeats,
        "mtu": MTU,
        **run.conditions(),
        "definitions": DEFINITIONS,
        "rows": {
            name: {
                "label": row.label,
                "argv": row.argv(SERVER_ADDR, PAYLOAD_NAME, Path("OUT")),
                "target_ratio": row.target_ratio,
            }
            for name, row in ROWS.items()
            if name in run.args.rows
        },
    }


BENCHMARK: Benchmark[TftpLab, list[Row], FetchResult, Summary] = Benchmark(
    name="tftp",
    about="MiB/s of bootstrapperd and dnsmasq TFTP (tftp-hpa, atftp) in a private lab.",
    servers=SERVER_NAMES,
    rounds=RoundsOption(("--repeats", "--repeat"), 3, "runs per pair; median (3)"),
    open_lab=open_lab,
    groups=lambda args: [[ROWS[name] for name in args.rows]],
    serve=serve_rows,
    label=label,
    progress=progress,
    summarise=summarise,
    render=lambda run, summaries: render_table(summaries, run.results, run.lab.payload.size),
    json_head=json_head,
    json_ratios=lambda summaries: [r.json() for r in ratios(summaries)],
    add_options=add_options,
    missing_tools=lambda: not_on_path("dnsmasq", "tftp", "atftp", "ss"),
    versions=tool_versions,
    unit="fetch",
    scratch_holds="server logs, failed downloads",
)


def build_parser() -> argparse.ArgumentParser:
    return harness.build_parser(BENCHMARK)


def main(argv: Sequence[str] | None = None) -> int:
    return harness.main(BENCHMARK, argv)


if __name__ == "__main__":
    sys.exit(main())
