"""Helpers shared by the benchmarks: scratch directories, server readiness, CPU and memory of
processes, payload files, facts."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bootstrapperd.lab.netlab import LabError, Namespace, NetLab

REPO = Path(__file__).resolve().parents[1]
"""The project checkout this benchmark runs from."""

VENV_BIN = Path(sys.executable).parent
"""The venv's bin directory (the benchmark is run with ``.venv/bin/python``)."""

MIB = 1024 * 1024


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A ``tempfile.mkdtemp`` directory, removed on exit unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"scratch directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def program_pid(proc: subprocess.Popen[bytes]) -> int:
    """The PID of the program started by ``Namespace.spawn``, not of an ``ip netns exec`` left.

    ``ip netns exec`` execs, so this is normally ``proc.pid`` itself; if an ``ip`` process is
    still there (a wrapper that forked), its only child is the program.
    """
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(proc.pid)
        if process.name() == "ip":
            children = process.children()
            if len(children) == 1:
                return children[0].pid
    return proc.pid


def peak_rss_kib(pid: int) -> int | None:
    """The process's peak resident set size (``VmHWM`` in /proc/PID/status), in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process (all its threads) has used so far, in seconds."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def cpu_between(before: float | None, after: float | None) -> float | None:
    """``after - before`` of two CPU readings, None when either is unknown."""
    return after - before if before is not None and after is not None else None


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


def udp_counters(ns: Namespace) -> dict[str, int]:
    """The namespace's UDP counters (``Udp:`` lines of /proc/net/snmp): InDatagrams,
    RcvbufErrors (datagrams the kernel dropped because a socket's buffer was full), …"""
    text = ns.run(["cat", "/proc/net/snmp"], timeout=5, check=True).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    return {name: int(value) for name, value in zip(rows[0], rows[1], strict=True)}


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """``after - before`` for every counter present in both."""
    return {name: after[name] - before[name] for name in after if name in before}


def wait_udp_listening(
    ns: Namespace, port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0
) -> None:
    """Wait until something in ``ns`` listens on UDP ``port`` (``ss -lun``); fail if proc dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"server exited with status {proc.returncode} before listening")
        listing = ns.run(["ss", "-Hlun", f"sport = :{port}"], timeout=5).stdout
        if listing.strip():
            return
        time.sleep(0.05)
    raise LabError(f"nothing listens on UDP port {port} in {ns.name} after {timeout} s")


def wait_tcp_listening(
    ns: Namespace, port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0
) -> None:
    """Wait until something in ``ns`` listens on TCP ``port`` (``ss -ltn``); fail if proc dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"server exited with status {proc.returncode} before listening")
        listing = ns.run(["ss", "-Hltn", f"sport = :{port}"], timeout=5).stdout
        if listing.strip():
            return
        time.sleep(0.05)
    raise LabError(f"nothing listens on TCP port {port} in {ns.name} after {timeout} s")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, object]:
    """What the figures depend on: CPU count and model, kernel, Python."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def first_lines(path: Path, markers: tuple[str, ...], limit: int = 5) -> list[str]:
    """The first ``limit`` lines of a log file that contain one of ``markers``."""
    found: list[str] = []
    with contextlib.suppress(OSError), path.open(errors="replace") as stream:
        for line in stream:
            if any(marker in line for marker in markers):
                found.append(line.rstrip())
                if len(found) >= limit:
                    break
    return found


# --- the file a server sends ------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """A file of random bytes a server sends: where it is, its size and SHA-256."""

    path: Path
    size: int
    sha256: str


def make_payload(path: Path, size: int, chunk: int = MIB) -> Payload:
    """Write ``size`` random bytes to ``path`` and return its digest."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
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


# --- servers under test -----------------------------------------------------------------------

WARNING_MARKERS = ("WARN", "ERROR", "Traceback", "CRITICAL", "failed", "error")


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

    def warnings(self, markers: tuple[str, ...] = WARNING_MARKERS, limit: int = 5) -> list[str]:
        """The first lines of the server's stderr and logs that look like trouble."""
        found = [line for log in (self.stderr, *self.logs) for line in first_lines(log, markers)]
        return found[:limit]


def dnsmasq_launch(run_dir: Path, conf: str) -> Launch:
    """dnsmasq in the foreground with ``conf`` (written to ``run_dir``/dnsmasq.conf), whose log
    is ``run_dir``/dnsmasq.log (its ``log-facility``)."""
    path = run_dir / "dnsmasq.conf"
    path.write_text(conf)
    argv = ["dnsmasq", f"--conf-file={path}", "--keep-in-foreground"]
    return Launch(run_dir, argv, logs=(run_dir / "dnsmasq.log",))


@contextlib.contextmanager
def running(netlab: NetLab, ns: Namespace, launch: Launch) -> Iterator[subprocess.Popen[bytes]]:
    """The server of ``launch`` running in ``ns``, its output in its run directory; stopped
    (by PID) on exit, even on failure."""
    with (launch.run_dir / "server.stdout").open("wb") as out, launch.stderr.open("wb") as err:
        proc = ns.spawn(launch.argv, stdout=out, stderr=err, env=launch.env)
        try:
            yield proc
        finally:
            netlab.stop(proc, timeout=launch.stop_timeout)


# --- figures and the command line -------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    """The median of the known values, or None when none is known."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or "?" when unknown."""
    return "?" if value is None else format(value, spec)


def tail(text: str, limit: int = 400) -> str:
    """The end of ``text``, for an error message."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def names_arg(text: str, allowed: Sequence[str]) -> list[str]:
    """A comma-separated choice among ``allowed`` (argparse type)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
    return names


def positive_int(text: str) -> int:
    """An integer of at least 1 (argparse type)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@dataclass
class PairLab:
    """A server namespace and a client namespace joined by one veth pair."""

    lab: NetLab
    server: Namespace
    client: Namespace


def pair_lab(
    lab: NetLab,
    server: tuple[str, str],
    client: tuple[str, str],
    prefix_len: int,
    mtu: int | None = None,
) -> PairLab:
    """``server`` and ``client`` are (interface, address); both ends get ``mtu`` when given."""
    server_ns = lab.namespace("srv")
    client_ns = lab.namespace("cli")
    (server_if, server_addr), (client_if, client_addr) = server, client
    lab.veth(
        server_ns,
        server_if,
        client_ns,
        client_if,
        f"{server_addr}/{prefix_len}",
        f"{client_addr}/{prefix_len}",
    )
    if mtu is not None:
        server_ns.ip("link", "set", server_if, "mtu", str(mtu))
        client_ns.ip("link", "set", client_if, "mtu", str(mtu))
    return PairLab(lab, server_ns, client_ns)


def serve_args(bsroot: Path, interface: str, http_port: int) -> list[str]:
    """``bootstrapperd serve``'s arguments in every benchmark: quiet, on the lab's interface, on
    a bsroot that pack laid out without downloads (no iPXE binaries or OS kernel to boot)."""
    return [
        "serve",
        "--bsroot",
        str(bsroot),
        "--serve-without-boot-files",
        "--interface",
        interface,
        "--log-level",
        "warning",
        "--http-port",
        str(http_port),
    ]


def lab_description(generator: str, network: str, server: str, mac: str) -> str:
    """A one-node cluster description for a benchmark's /24 lab (``network`` like 10.89.0)
    with no DHCP server, served by ``server``."""
    return f"""\
# Generated by {generator}: the lab's /24, no DHCP server (dhcp.mode off).
bootstrapper: {server}
subnet: {network}.0
netmask: 255.255.255.0
broadcast: {network}.255
iplow: {network}.100
iphigh: {network}.200
routers: [{server}]
nameservers: [{server}]
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
  mode: "off"
registry:
  mode: "off"
nodes:
  - mac: "{mac}"
    cur_host_name: "bench1"
    kube_master: y
    etcd_member: y
"""


def first_version_lines(commands: dict[str, list[str]]) -> dict[str, str]:
    """The first line each command prints about its version (stdout, else stderr)."""
    versions = {}
    for name, argv in commands.items():
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            versions[name] = f"unavailable: {exc}"
            continue
        text = (done.stdout or done.stderr).strip()
        versions[name] = text.splitlines()[0] if text else "?"
    return versions
