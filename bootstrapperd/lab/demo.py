"""``bootstrapperd demo``: the bundled example cluster installing itself onto virtual machines.

It checks the example, packs a bsroot from a local mirror of the lab's stand-in OS (see
:mod:`bootstrapperd.lab.vm`), builds a private network lab (the bootstrapper's namespace, and a
bridge with one tap per machine in another; nothing touches the host's interfaces), starts
``bootstrapperd serve`` there, and PXE-boots three QEMU machines at once: the example's master
(static address), a worker, and a MAC the example does not list. The master boots from the
network first with its disk kept, as a server would: after its install it boots again, the daemon
sends it to its own disk (``local-boot``), and the installed OS there reports itself (about
20 s more under TCG, while the others finish). The machines' timelines (the
daemon's events, what each console says, QEMU's start and exit) are printed merged in time
order, on one clock shared with the result lines (seconds from the demo's start); the status
page is reachable on this machine's loopback until the daemon stops. Everything is removed at
the end, or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import ConfigError, load_cluster_file
from ..model.summary import render_summary
from ..runtime.resources import example_cluster
from .netlab import LabError, NetLab, unavailable_reason
from .vm.initramfs import INSTALLED_MARK
from .vm.kernel import KernelError
from .vm.lab import BootLab, Machine, Packed, pack_bsroot
from .vm.qemu import MachineSpec, accel_verdict, missing_tools

BOOT_TIMEOUT = 420.0
STRANGER_MAC = "52:54:00:77:00:99"  # a machine the example does not list
DOCKER_HOST = "unix:///nonexistent/bootstrapperd-demo.sock"  # never this machine's own Docker
CLONE_NEWNET = 0x40000000
PACK_HEAD = 3  # pack's first lines shown (what it wrote first and copied)
PACK_TAIL = 2  # and its last (the last fetch and the manifest)
# What a boot script that does not install tells the machine (the daemon's timeline kinds).
BOOT_ACTIONS = {
    "local-boot": "installed: its boot script boots its own disk",
    "waiting": "its boot script waits for approval and asks again",
}


def say(text: str = "") -> None:
    print(text, flush=True)


class LoopbackForward:
    """``127.0.0.1:<port>`` on this machine → the daemon's HTTP port inside the lab, so the
    status page opens in a browser here. Each connection is made from a thread that has
    entered the lab namespace (setns affects only the calling thread)."""

    def __init__(self, namespace: str, target: tuple[str, int]) -> None:
        self._netns = f"/run/netns/{namespace}"
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with client, open(self._netns) as netns:
            if libc.setns(netns.fileno(), CLONE_NEWNET) != 0:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                return
            with upstream:
                upstream.settimeout(None)
                back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
                back.start()
                _pump(client, upstream)
                back.join()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


class Clock:
    """The demo's one clock, for the timeline and the result lines alike: wall-clock seconds
    (the daemon's timeline and the lab's QEMU start and stop times are ``time.time()``), shown
    as ``+12.3 s`` from the demo's start."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.time() if origin is None else origin

    def now(self) -> float:
        return time.time()

    def show(self, at: float) -> str:
        return f"+{at - self.origin:.1f} s"


@dataclass(order=True)
class _Entry:
    at: float
    order: int  # arrival order: ties keep it (a console line before the QEMU exit it preceded)
    machine: str = field(compare=False)
    text: str = field(compare=False)


class Narrator:
    """Prints every machine's timeline in time order: the daemon's events (their own times),
    the console's lines (between the demo's reads of the console that bracket them, placed by
    the guest's uptime; once QEMU has exited, no later than that) and QEMU's start and exit.

    Lines are held back until nothing earlier can still arrive: each :meth:`tick` first notes
    the time, then fetches every machine's timeline, so every daemon event up to that time
    (recorded synchronously with its time) is in hand, and prints what is older, sorted. A
    tick whose fetch failed prints nothing. Printed times never go backwards (a wall-clock
    step back would show the last time again)."""

    def __init__(self, lab: BootLab, machines: list[Machine], clock: Clock) -> None:
        self.lab = lab
        self.machines = machines
        self.clock = clock
        self.seen_events = {m.mac: 0 for m in machines}
        self.seen_marks = {m.mac: 0 for m in machines}
        self.announced: set[tuple[str, str]] = set()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.width = max(len(m.name) for m in machines)
        self.pending: list[_Entry] = []
        self.arrivals = itertools.count()
        self.printed = clock.origin
        self.last_read: dict[str, float] = {}  # each machine's last read of its console
        self.booted: dict[str, float] = {}  # when each guest's kernel started, at the latest
        self.boots: dict[str, int] = {}  # boots seen on each console

    def add(self, at: float, machine: Machine, text: str) -> None:
        self.pending.append(_Entry(at, next(self.arrivals), machine.name, text))

    def tick(self) -> None:
        horizon = self.clock.now()
        complete = True
        for machine in self.machines:
            try:
                self.nodes[machine.mac] = self.lab.api(f"/api/v1/nodes/{machine.mac}")
            except (LabError, ValueError):
                complete = False
            events = self.nodes.get(machine.mac, {}).get("timeline", [])
            for event in events[self.seen_events[machine.mac] :]:
                self.add(event["at"], machine, _describe_event(event))
            self.seen_events[machine.mac] = len(events)
            starts = machine.starts() or ([machine.started] if machine.started else [])
            for number, at in enumerate(starts):
                if (machine.mac, f"start {number}") not in self.announced:
                    self.announced.add((machine.mac, f"start {number}"))
                    self.add(at, machine, f"QEMU started ({machine.accel.upper()})")
            for number, at in enumerate(machine.stops[: len(starts) - 1]):
                if (machine.mac, f"stop {number}") not in self.announced:  # and started again
                    self.announced.add((machine.mac, f"stop {number}"))
                    self.add(at, machine, "QEMU exited (powered off); the lab powers it on again")
            ended = machine.ended
            before = self.clock.now()
            marks = machine.marks()
            read = self.clock.now() if ended is None else min(self.clock.now(), ended)
            self.console(machine, marks[self.seen_marks[machine.mac] :], read)
            self.last_read[machine.mac] = min(before, read)  # what the next lines follow
            self.seen_marks[machine.mac] = len(marks)
            if ended is not None and (machine.mac, "end") not in self.announced:
                self.announced.add((machine.mac, "end"))
                how = "stopped: timed out" if machine.timed_out else "QEMU exited (powered off)"
                self.add(ended, machine, how)
        if complete:
            self.flush(horizon)

    def console(self, machine: Machine, marks: list[str], read: float) -> None:
        """Console lines first seen by the read that ended at ``read``: each was written after
        the previous read began and before this one ended, in the console's order. Within
        that, the guest's uptime places a line (the guest booted no later than any line's read
        time minus its uptime; a boot's first line starts the count again); a line without one
        (flatcar-install's) is placed with the next line that has one."""
        after = self.last_read.get(machine.mac, machine.started)
        lines: list[tuple[str, float, int, int]] = []  # text, uptime, batch's boot, boot
        boots = [self.booted.get(machine.mac, math.inf)]
        for mark in marks:
            text, _, uptime = mark.rpartition(" uptime=")
            try:
                up = float(uptime)
            except ValueError:
                text, up = mark, math.nan
            if _boot_starts(text):
                if self.boots.get(machine.mac, 0) > 0:
                    boots.append(math.inf)  # a new boot: its uptime counts from 0 again
                self.boots[machine.mac] = self.boots.get(machine.mac, 0) + 1
            if math.isfinite(up):
                boots[-1] = min(boots[-1], read - up)
            number = max(self.boots.get(machine.mac, 0) - 1, 0)  # of the console's boots
            lines.append((text, up, len(boots) - 1, number))
        self.booted[machine.mac] = boots[-1]
        times: list[float] = []
        later = read  # backwards: the place of the next line with an uptime
        for _, up, boot, number in reversed(lines):
            at = boots[boot] + up
            latest = min(read, self._stopped(machine, number))
            later = min(max(at, after), latest) if math.isfinite(at) else min(later, latest)
            times.append(later)
        at = after
        for (text, *_), placed in zip(lines, reversed(times), strict=True):
            at = max(at, placed)  # in the console's order
            self.add(at, machine, f"console: {_unrepeat(text)}")

    def _stopped(self, machine: Machine, boot: int) -> float:
        """When the console's ``boot`` (from 0) ended at the latest: the QEMU exit after it,
        when every boot had a QEMU start of its own (the lab powered the machine on again);
        else (a reboot inside QEMU, or still running) no limit."""
        starts = machine.starts()
        if boot < len(machine.stops) and self.boots.get(machine.mac, 0) <= len(starts):
            return machine.stops[boot]
        return math.inf

    def finish(self) -> None:
        """The last tick, after every machine has ended: print everything still held."""
        self.tick()
        self.flush(math.inf)

    def flush(self, horizon: float) -> None:
        ready = sorted(e for e in self.pending if e.at < horizon)
        self.pending = [e for e in self.pending if e.at >= horizon]
        for entry in ready:
            self.printed = max(self.printed, entry.at)
            say(
                f"  {self.clock.show(self.printed):>8}  {entry.machine:<{self.width}}  {entry.text}"
            )


def _unrepeat(text: str) -> str:
    """``text`` without repeated fields: a ``key=`` seen before in the line, a field (a word
    with a digit, ``.``, ``:`` or ``/``: an address, a MAC, a name, a path) seen before, or an
    item seen before in a comma-separated list (the master, resolving its own name and the
    master's, reports the same name twice). Plain words may repeat."""
    words: list[str] = []
    keys: set[str] = set()
    for word in text.split(" "):
        if "," in word:
            word = ",".join(dict.fromkeys(word.split(",")))
        key, equals, _ = word.partition("=")
        if (equals and key in keys) or (is_field(word) and word in words):
            continue
        if equals:
            keys.add(key)
        words.append(word)
    return " ".join(words)


def _boot_starts(text: str) -> bool:
    """A boot's first console line: the live OS's, or the installed OS's."""
    return text == "initramfs" or text.startswith(INSTALLED_MARK)


def is_field(word: str) -> bool:
    return any(c.isdigit() or c in ".:/=" for c in word)


def _describe_event(event: dict[str, Any]) -> str:
    source, kind = event["source"], event["kind"]
    if source == "dhcp":
        text = f"DHCP {kind.upper()} {event.get('ip', '')}"
        if "boot_file" in event:
            text += f", {event.get('firmware', '?')} firmware gets {event['boot_file']}"
        return text
    if source == "tftp":
        return f"TFTP {kind} {event.get('file', '')} ({event.get('size', '?')} bytes)"
    if kind in BOOT_ACTIONS:
        return f"{source.upper()} {kind}: {BOOT_ACTIONS[kind]}"
    if source == "http":
        return f"HTTP {kind} {event.get('path', '')} -> {event.get('status', '')}"
    message = _unrepeat(str(event.get("message", "")))
    return f"{source} {kind}: {message}".rstrip(": ")


def _specs(example: Path) -> list[MachineSpec]:
    model = load_cluster_file(example)
    specs = []
    masters = [n for n in model.nodes if n.kube_master]
    workers = [n for n in model.nodes if not n.kube_master]
    for number, node in enumerate((masters[:1] + workers[:1]) or model.nodes[:2]):
        # The first boots again after its install, from the network first, its disk kept.
        specs.append(MachineSpec(node.hostname, node.mac, reboots=number == 0))
    if model.node(STRANGER_MAC) is None:
        specs.append(MachineSpec("unlisted", STRANGER_MAC))
    return specs


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(example: Path | None = None, hold: bool = False) -> int:
    # Ctrl-C and SIGTERM both tear the lab down, even when started where SIGINT was ignored
    # (a background job of a script).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    clock = Clock()
    reason = unavailable_reason()
    missing = missing_tools()
    if reason is not None or missing:
        why = reason or f"missing Debian packages {', '.join(missing)} (run scripts/setup.sh)"
        say(f"bootstrapperd demo: cannot build the lab: {why}")
        return 1
    source = example or example_cluster()
    say(f"== bootstrapperd check {source}")
    try:
        model = load_cluster_file(source)
    except ConfigError as exc:
        say(str(exc))
        return 1
    say(render_summary(model))
    workdir = Path(tempfile.mkdtemp(prefix="bootstrapperd-demo-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (an executable script)
    try:
        return _run(source, workdir, hold, clock)
    except KeyboardInterrupt:
        say("\ninterrupted: the lab is torn down (VMs, daemon, namespaces, scratch files)")
        return 130
    except (LabError, KernelError, OSError) as exc:
        say(f"bootstrapperd demo failed: {exc}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def pack_excerpt(output: str, head: int = PACK_HEAD, tail: int = PACK_TAIL) -> list[str]:
    """Pack's first and last lines (what it started with and what it wrote), the middle
    counted: the reader sees what pack did without a flood."""
    lines = output.splitlines()
    if len(lines) <= head + tail + 1:
        return lines
    skipped = len(lines) - head - tail
    return [*lines[:head], f"... {skipped} more lines ...", *lines[-tail:]]


def _run(source: Path, workdir: Path, hold: bool, clock: Clock) -> int:
    say("\n== the stand-in OS: Debian's kernel + a busybox initramfs, as a signed release in a")
    say("   local mirror; bootstrapperd-pack makes the bsroot from it")
    packed = pack_bsroot(source, workdir)
    for line in pack_excerpt(packed.pack_output):
        say(f"   pack | {line}")
    specs = _specs(packed.bsroot / "config" / "cluster-desc.yml")
    daemon_log = workdir / "daemon.log"
    with NetLab() as netlab, daemon_log.open("wb") as output:
        lab = BootLab(netlab, packed.model, workdir)
        say(f"\n== lab: {lab.bs.name} (bs0 {packed.model.bootstrapper}) <-veth-> {lab.vm.name}")
        say(f"   (bridge br0, one tap per VM); {lab.bs.name}$ bootstrapperd serve --bsroot ...")
        env = {**os.environ, "DOCKER_HOST": DOCKER_HOST}
        daemon = lab.start_daemon(packed.bsroot, output, env)
        forward = LoopbackForward(
            lab.bs.name, (str(packed.model.bootstrapper), packed.model.http_port)
        )
        try:
            until = "you press Ctrl-C" if hold else 'the daemon stops, just before "== done"'
            say(
                f"== status page: http://127.0.0.1:{forward.port}/  (API: /api/v1/nodes); "
                f"it works until {until}"
            )
            ok = _boot(lab, specs, packed, clock)
            if hold:
                say(f"\nserving; status page http://127.0.0.1:{forward.port}/ - Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=15)
            say(
                f"== {clock.show(clock.now())}: SIGTERM: the daemon exited {code} after "
                f"{time.monotonic() - started:.2f} s; the status page is gone"
            )
        finally:
            forward.close()
    if not ok or code != 0:
        say(f"-- daemon log (tail) --\n{daemon_log.read_text(errors='replace')[-4000:]}")
    say("== done: VMs, daemon, namespaces, bridge, taps and the scratch bsroot are gone")
    return 0 if ok and code == 0 else 1


def _boot(lab: BootLab, specs: list[MachineSpec], packed: Packed, clock: Clock) -> bool:
    """Power the machines on, narrate their timelines, and print the result lines."""
    machines = [lab.add_machine(spec) for spec in specs]
    accel = accel_verdict(lab.vm, lab.workdir)
    say(f"== {clock.show(clock.now())}: acceleration {accel.name.upper()}: {accel.why}")
    lab.power_on(machines)
    listing = ", ".join(f"{m.name} {m.mac}" for m in machines)
    say(f"== power on ({accel.name.upper()}): {listing}; times are from the demo's start\n")
    narrator = Narrator(lab, machines, clock)
    lab.wait(machines, BOOT_TIMEOUT, tick=narrator.tick)
    narrator.finish()
    return _summary(packed.release.image, machines, narrator.nodes, clock)


def _summary(
    image: bytes, machines: list[Machine], nodes: dict[str, dict[str, Any]], clock: Clock
) -> bool:
    say("\n== result (times on the timeline's clock)")
    ok = True
    width = max(len(m.name) for m in machines)
    for machine in machines:
        node = nodes.get(machine.mac, {})
        fetched = [
            e["at"]
            for e in node.get("timeline", [])
            if e["source"] == "http" and e["kind"] in ("ignition", "cloud-config")
        ]
        with machine.disk.open("rb") as disk:
            has_image = disk.read(len(image)) == image
        installed = machine.outcome() == "installed" and node.get("stage") == "installed"
        ok = ok and installed and has_image
        config = clock.show(fetched[0]) if fetched else "never"
        off = "timed out" if machine.timed_out else "powered off"
        end = clock.show(machine.ended) if machine.ended else "-"
        say(
            f"   {machine.name:<{width}}  {node.get('ip') or '-':<12} stage {node.get('stage')}, "
            f"disk {'holds the image' if has_image else 'WITHOUT the image'}; QEMU started "
            f"{clock.show(machine.started)}, config fetched {config}, {off} {end}"
        )
        if machine.spec.reboots:
            ok = _second_boot(machine, node, width, clock) and ok
    return ok


def _second_boot(machine: Machine, node: dict[str, Any], width: int, clock: Clock) -> bool:
    """The result line of a machine that boots again after its install: sent to its disk,
    and the installed OS's report. True when both happened."""
    timeline = node.get("timeline", [])
    local = [e["at"] for e in timeline if e["kind"] == "local-boot"]
    reports = [
        e
        for e in timeline
        if e["kind"] == "note" and str(e.get("message", "")).startswith(INSTALLED_MARK)
    ]
    if not local or not reports or machine.outcomes()[-1:] != ["installed-os"]:
        say(f"   {'':<{width}}  next boot: its disk did NOT boot and report")
        return False
    say(
        f"   {'':<{width}}  next boot: local-boot {clock.show(local[0])}, the disk's OS "
        f"reported {clock.show(reports[-1]['at'])}: {reports[-1]['message']}"
    )
    return True
