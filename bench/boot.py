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
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bootstrapperd.lab.netlab import LabError, NetLab, unavailable_reason
from bootstrapperd.lab.vm.lab import BootLab, Machine, Packed, console_script, pack_bsroot
from bootstrapperd.lab.vm.qemu import QEMU, MachineSpec
from bootstrapperd.lab.vm.qemu import missing_tools as vm_missing_tools
from bootstrapperd.model import ClusterModel, ConfigError, load_cluster_file

from .common import (
    REPO,
    cpu_seconds,
    first_version_lines,
    fmt,
    machine_facts,
    median,
    names_arg,
    positive_int,
    program_pid,
    scratch_dir,
    tail,
    wait_tcp_listening,
    wait_udp_listening,
)

EXAMPLE = REPO / "config" / "examples" / "cluster-desc.yml"
DEFAULT_MAC = "52:54:00:77:00:10"  # the example's master1 (static address 10.77.0.10)
DOCKER_HOST = "unix:///nonexistent/bench.sock"
INTERFACE = "bs0"  # BootLab's interface in the bootstrapper namespace
RA_ADDRESS = "fd77::1/64"  # what dnsmasq's enable-ra advertises from (the reference lab's)
POLL_S = 0.05
RA_LOGGER = "bootstrapperd.ra"  # in bootstrapperd's log when its router advertisements run
SERVER_NAMES = ("bootstrapperd", "dnsmasq")
REFERENCE = "dnsmasq"
LABELS = {"bootstrapperd": "bootstrapperd", "dnsmasq": "dnsmasq + http.server"}
CONFIG_KINDS = ("ignition", "cloud-config")
TARGET = 1.0
"""bootstrapperd's median time ÷ dnsmasq's should be at most this (lower is better)."""
FIGURES = (("fetched_s", "QEMU start → config fetched"), ("off_s", "QEMU start → powered off"))


def description_text(example: str) -> str:
    """The example description with the registry turned off (no Docker engine in the lab)."""
    return example.rstrip("\n") + "\n\nregistry:\n  mode: off\n"


# --- the machine and the network, from the model ------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The machine booted, and what the DNS must answer for it."""

    mac: str
    hostname: str
    fqdn: str
    ip: str
    records: tuple[tuple[str, str], ...]
    """(name, address) for host-record: the machine's FQDN and every master's with an address."""


@dataclass(frozen=True)
class Network:
    """What dnsmasq needs of the description to answer as bootstrapperd does."""

    bootstrapper: str
    netmask: str
    pool_low: str
    pool_high: str
    lease: str
    """dnsmasq's lease time: seconds, or ``infinite``."""
    domain: str
    routers: tuple[str, ...]
    nameservers: tuple[str, ...]
    http_port: int

    @property
    def http_base(self) -> str:
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://{self.bootstrapper}{port}"


def network_of(model: ClusterModel) -> Network:
    if model.pool.low is None or model.pool.high is None:
        raise LabError("the description has no address pool (iplow/iphigh)")
    return Network(
        bootstrapper=str(model.bootstrapper),
        netmask=str(model.network.netmask),
        pool_low=str(model.pool.low),
        pool_high=str(model.pool.high),
        lease="infinite" if model.lease_seconds is None else str(model.lease_seconds),
        domain=model.domain,
        routers=tuple(str(r) for r in model.routers),
        nameservers=tuple(str(n) for n in model.nameservers),
        http_port=model.http_port,
    )


def first_free(model: ClusterModel) -> IPv4Address:
    """The pool's first address not reserved: what a fresh bootstrapperd gives a first machine
    without a static address."""
    low, high = model.pool.low, model.pool.high
    assert low is not None and high is not None
    address = low
    while address in model.reserved_addresses:
        if address >= high:
            raise LabError("the pool has no free address")
        address += 1
    return address


def target_of(model: ClusterModel, mac: str) -> Target:
    """The node ``mac`` of the description (its static address, else the pool's first free)."""
    node = model.node(mac)
    if node is None:
        raise LabError(f"{mac} is not a node of the description")
    ip = str(node.ip) if node.ip is not None else str(first_free(model))
    records = {node.fqdn: ip}
    for master in model.masters:
        if master.ip is not None:
            records.setdefault(master.fqdn, str(master.ip))
    return Target(node.mac, node.hostname, node.fqdn, ip, tuple(records.items()))


# --- dnsmasq -------------------------------------------------------------------------------------


def dnsmasq_conf(
    run_dir: Path, tftp_root: Path, net: Network, target: Target, ra: bool = True
) -> str:
    """dnsmasq for one machine: DHCP (its reservation, iPXE sent to bootstrapperd's iPXE script
    URL), DNS and TFTP, with the reference lab's tuning; logs, leases and pid in ``run_dir``."""
    lines = [
        "# Generated by bench/boot.py: DHCP + DNS + TFTP for one machine, the reference lab's",
        "# configuration (/work/shared/lab/reference-lab.sh) on the boot lab's interface.",
        f"interface={INTERFACE}",
        "bind-interfaces",
        f"listen-address={net.bootstrapper}",
        "no-resolv",
        "no-hosts",
        f"domain={net.domain}",
        f"local=/{net.domain}/",
        *(f"host-record={name},{address}" for name, address in target.records),
        f"dhcp-range={net.pool_low},{net.pool_high},{net.netmask},{net.lease}",
        f"dhcp-host={target.mac},set:bench,{target.ip},{target.hostname}",
        f"dhcp-leasefile={run_dir}/dnsmasq.leases",
        "dhcp-authoritative",
    ]
    if net.routers:
        lines.append(f"dhcp-option=option:router,{','.join(net.routers)}")
    if net.nameservers:
        lines.append(f"dhcp-option=option:dns-server,{','.join(net.nameservers)}")
    lines += [
        "# iPXE (option 175 or user class iPXE) gets its script over HTTP, as from bootstrapperd;",
        "# PXE firmware gets the iPXE binary for its architecture over TFTP.",
        "dhcp-match=set:ipxe,175",
        "dhcp-userclass=set:ipxe,iPXE",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        f"dhcp-boot=tag:ipxe,tag:bench,{net.http_base}/ipxe/{target.mac}",
        f"dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,{net.bootstrapper}",
        f"dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,{net.bootstrapper}",
        "# iPXE: don't wait for ProxyDHCP (option 175.176 = 1), saves ~2 s per boot",
        "dhcp-option=tag:ipxe,encap:175,176,1b",
    ]
    if ra:
        lines += [
            "# RA so iPXE's IPv6 autoconfiguration completes instead of timing out (~13 s)",
            "enable-ra",
            f"dhcp-range=::,constructor:{INTERFACE},ra-only,64,1h",
        ]
    else:
        lines.append("# --no-ra: no router advertisements (like bootstrapperd without RA)")
    lines += [
        "# dnsmasq by default pings a new address before offering it: ~3 s per new client",
        "no-ping",
        "enable-tftp",
        f"tftp-root={tftp_root}",
        "log-dhcp",
        "log-queries",
        f"log-facility={run_dir}/dnsmasq.log",
        f"pid-file={run_dir}/dnsmasq.pid",
        "user=root",
    ]
    return "\n".join(lines) + "\n"


# --- http.server's directory ---------------------------------------------------------------------


def config_kind(ipxe_script: str) -> str:
    """``ignition`` or ``cloud-config``: what the iPXE script's kernel line points the OS at."""
    if "ignition.config.url=" in ipxe_script:
        return "ignition"
    if "cloud-config-url=" in ipxe_script:
        return "cloud-config"
    raise LabError("the iPXE script names no ignition.config.url= or cloud-config-url=")


_KERNEL_URL = re.compile(r"(?:ignition\.config\.url|cloud-config-url)=(\S+)")
_INSTALL_FETCH = re.compile(r'fetch "\$SERVER(/[^"$]*)\$MAC([^"]*)"')


def config_paths(ipxe_script: str, install_sh: str, mac: str) -> list[str]:
    """The URL paths the machine fetches its config from: the kernel argument's (the MAC with
    dashes) and install.sh's (``$SERVER/<route>/$MAC<suffix>``, the MAC with colons)."""
    paths = [urlsplit(url).path for url in _KERNEL_URL.findall(ipxe_script)]
    paths += [f"{route}{mac}{suffix}" for route, suffix in _INSTALL_FETCH.findall(install_sh)]
    return list(dict.fromkeys(paths))


def config_prefix(paths: Sequence[str]) -> str:
    """The route all config paths share, e.g. ``/ignition/``: what the log watch looks for."""
    prefixes = {path[: path.rindex("/") + 1] for path in paths}
    if len(prefixes) != 1:
        raise LabError(f"the config is served on several routes: {sorted(prefixes)}")
    return prefixes.pop()


def render(bsroot: Path, mac: str, kind: str) -> str:
    """``bootstrapperd render``: exactly what bootstrapperd serves ``mac`` for ``kind``."""
    argv = [*console_script("bootstrapperd", "bootstrapperd"), "render"]
    argv += ["--bsroot", str(bsroot), "--mac", mac, "--kind", kind]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise LabError(f"bootstrapperd render --kind {kind} failed: {tail(result.stderr)}")
    return result.stdout


@dataclass(frozen=True)
class HttpRoot:
    root: Path
    kind: str
    prefix: str
    """The config's route (``/ignition/``): its GET in the access log is "config fetched"."""
    files: tuple[str, ...]


def build_http_root(bsroot: Path, root: Path, mac: str) -> HttpRoot:
    """The files bootstrapperd would serve ``mac``, on the same paths, under ``root``."""
    ipxe = render(bsroot, mac, "ipxe")
    install = render(bsroot, mac, "install")
    kind = config_kind(ipxe)
    config = render(bsroot, mac, kind)
    paths = config_paths(ipxe, install, mac)
    if not paths:
        raise LabError("found no config URL in the iPXE script or install.sh")
    files = {f"/ipxe/{mac}": ipxe, "/install.sh": install, **dict.fromkeys(paths, config)}
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    shutil.copytree(bsroot / "html" / "static", root / "static", symlinks=True)
    return HttpRoot(root, kind, config_prefix(paths), tuple(files))


def http_server_argv(address: str, port: int, root: Path) -> list[str]:
    """The plain HTTP server: the standard library's, unbuffered (its log is watched)."""
    argv = [sys.executable, "-u", "-m", "http.server", str(port)]
    return [*argv, "--bind", address, "--directory", str(root)]


# --- http.server's access log --------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One request line of http.server's log (``BaseHTTPRequestHandler.log_request``)."""

    client: str
    method: str
    path: str
    status: int


_ACCESS = re.compile(
    r'^(?P<client>\S+) - - \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+)(?: [^"]*)?" '
    r"(?P<status>\d{3}) \S+$"
)


def parse_access(line: str) -> Access | None:
    """The request of one log line, or None (the start-up line, ``code 501, message …``)."""
    match = _ACCESS.match(line.strip())
    if match is None:
        return None
    return Access(match["client"], match["method"], match["path"], int(match["status"]))


def is_config_fetch(access: Access | None, prefix: str) -> bool:
    return access is not None and access.method == "GET" and access.path.startswith(prefix)


class LogWatch:
    """Follows a log file; notes the wall-clock time it first sees a config GET."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self.offset = 0
        self.pending = b""
        self.seen_at: float | None = None
        self.line: str | None = None

    def poll(self) -> None:
        if self.seen_at is not None:
            return
        try:
            with self.path.open("rb") as stream:
                stream.seek(self.offset)
                data = stream.read()
        except OSError:
            return
        now = time.time()
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        for raw in lines:
            text = raw.decode(errors="replace")
            if is_config_fetch(parse_access(text), self.prefix):
                self.seen_at, self.line = now, text.strip()
                return


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


def cpu_between(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


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


# --- rounds, medians, ratios and the table ------------------------------------------------------


def server_order(servers: Sequence[str], round_: int) -> list[str]:
    """The servers in the given order on odd rounds (1, 3, …), reversed on even ones."""
    return list(servers) if round_ % 2 == 1 else list(reversed(servers))


@dataclass(frozen=True)
class Spread:
    median: float | None
    low: float | None
    high: float | None


def spread(values: Sequence[float | None]) -> Spread:
    known = [value for value in values if value is not None]
    if not known:
        return Spread(None, None, None)
    return Spread(median(known), min(known), max(known))


@dataclass(frozen=True)
class Summary:
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
    by_server: dict[str, list[BootResult]] = {}
    for result in results:
        by_server.setdefault(result.server, []).append(result)
    summaries = []
    for server, runs in by_server.items():
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


@dataclass(frozen=True)
class Ratio:
    figure: str
    label: str
    ours: float | None
    theirs: float | None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.theirs if self.ours is not None and self.theirs else None

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio <= TARGET


def ratios(summaries: Sequence[Summary], reference: str = REFERENCE) -> list[Ratio]:
    """bootstrapperd's median ÷ the reference's, for each figure (None where one is missing)."""
    by_server = {s.server: s for s in summaries}
    ours, theirs = by_server.get("bootstrapperd"), by_server.get(reference)
    out = []
    for figure, label in FIGURES:
        mine = getattr(ours, figure).median if ours is not None else None
        other = getattr(theirs, figure).median if theirs is not None else None
        out.append(Ratio(figure, label, mine, other))
    return out


def _seconds(value: Spread) -> str:
    if value.median is None:
        return "-"
    return f"{value.median:.2f} ({value.low:.2f}–{value.high:.2f})"


def _verdict(r: Ratio) -> str:
    text = {True: "met", False: "NOT met", None: "not measured"}[r.met]
    return f"≤ {TARGET:.2f} ({text})"


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
    lines = [
        f"Boot (VM): {target.hostname} {target.mac} (BIOS, iPXE ROM), accel "
        f"{'/'.join(accels)}; seconds from QEMU start, median (min–max) of {rounds} "
        f"round{'s' if rounds != 1 else ''}",
        "",
        "| server | config fetched s | powered off s | server CPU s | installed/runs | IPv6 RA |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {LABELS.get(s.server, s.server)} | {_seconds(s.fetched_s)} | "
            f"{_seconds(s.off_s)} | {fmt(s.server_cpu_s, '.2f')} | {s.ok}/{s.runs} | "
            f"{s.router_advertisements} |"
        )
    lines += ["", "| ratio bootstrapperd/dnsmasq | value | target |", "|---|---:|---|"]
    for r in ratios(summaries):
        lines.append(f"| {r.label} | {fmt(r.ratio, '.2f')} | {_verdict(r)} |")
    lines += ["", "versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items())]
    lines += footer
    for result in results:
        if not result.ok:
            lines.append(f"FAILED {result.server} #{result.round}: {result.error}")
        for note in result.notes:
            lines.append(f"note {result.server} #{result.round}: {note}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.boot",
        description="One VM's network boot and install time: bootstrapperd vs dnsmasq + "
        "http.server, in the VM lab.",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="boots per server; median (3)"
    )
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
        "--servers",
        type=lambda text: names_arg(text, SERVER_NAMES),
        default=list(SERVER_NAMES),
        help="comma-separated: bootstrapperd,dnsmasq",
    )
    parser.add_argument(
        "--timeout", type=positive_int, default=300, help="seconds allowed per boot (300)"
    )
    parser.add_argument("--json", type=Path, help="also write every boot and the medians here")
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help="keep the scratch directory (bsroot, logs, serial consoles, configuration)",
    )
    return parser


def _progress(result: BootResult) -> str:
    head = f"[#{result.round}] {result.server}: "
    if result.ok:
        return (
            f"{head}config fetched {fmt(result.fetched_s, '.2f')} s, powered off "
            f"{fmt(result.off_s, '.2f')} s, server CPU {fmt(result.server_cpu_s, '.2f')} s "
            f"({result.accel})"
        )
    return f"{head}FAILED: {result.error}"


def run_all(
    args: argparse.Namespace,
    scratch: Path,
    description: Path,
    target: Target,
    results: list[BootResult],
) -> None:
    """Pack once, render the http.server directory once, then every round × server (alternating
    order), each boot in its own fresh lab; results are appended as they come."""
    packed = pack_bsroot(description, scratch / "pack")
    http_root = None
    if "dnsmasq" in args.servers:
        http_root = build_http_root(packed.bsroot, scratch / "http-root", target.mac)
    for round_ in range(1, args.rounds + 1):
        for server in server_order(args.servers, round_):
            run_dir = scratch / f"round{round_}-{server}"
            run_dir.mkdir()
            if server == "bootstrapperd":
                result = run_bootstrapperd(round_, run_dir, packed, target, args.timeout)
            else:
                assert http_root is not None
                result = run_dnsmasq(
                    round_, run_dir, packed, target, http_root, args.timeout, args.ra
                )
            print(_progress(result), file=sys.stderr, flush=True)
            results.append(result)


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


def missing_tools() -> list[str]:
    missing = vm_missing_tools()
    missing += [tool for tool in ("dnsmasq", "ss", "curl") if shutil.which(tool) is None]
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reason = unavailable_reason()
    if reason is None and (missing := missing_tools()):
        reason = f"not installed: {', '.join(missing)}"
    if reason is not None:
        print(f"bench.boot: cannot build the lab: {reason}", file=sys.stderr)
        return 1
    results: list[BootResult] = []
    status = 0
    loadavg_before = os.getloadavg()
    try:
        with scratch_dir("bench-boot-", keep=args.keep_scratch) as scratch:
            description = scratch / "cluster-desc.yml"
            description.write_text(description_text(EXAMPLE.read_text()))
            target = target_of(load_cluster_file(description), args.mac)
            run_all(args, scratch, description, target, results)
    except ConfigError as exc:
        print(f"bench.boot: the cluster description is refused:\n{exc.report()}")
        return 1
    except LabError as exc:
        print(f"bench.boot: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("bench.boot: interrupted; the labs are torn down", file=sys.stderr)
        status = 130
    if not results:
        return status or 1
    summaries = summarise(results)
    versions = tool_versions(sorted({r.accel for r in results if r.accel}))
    done = max(r.round for r in results)
    loadavg_after = os.getloadavg()
    footer = [f"load average (1 min) before/after: {loadavg_before[0]:.2f}/{loadavg_after[0]:.2f}"]
    print(render_table(summaries, results, target, done, versions, footer))
    if args.json is not None:
        report = {
            "benchmark": "boot",
            "machine": machine_facts(),
            "target": asdict(target),
            "rounds": args.rounds,
            "router_advertisements": args.ra,
            "versions": versions,
            "loadavg_before": loadavg_before,
            "loadavg_after": loadavg_after,
            "summary": [asdict(s) for s in summaries],
            "ratios": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in ratios(summaries)],
            "boots": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return status or (0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    sys.exit(main())
