"""``bootstrapperd demo``: the bundled example cluster installing itself onto virtual machines.

It checks the example, packs a bsroot from a local mirror of the lab's stand-in OS (see
:mod:`bootstrapperd.lab.vm`), builds a private network lab (the bootstrapper's namespace, and a
bridge with one tap per machine in another; nothing touches the host's interfaces), starts
``bootstrapperd serve`` there, and PXE-boots three QEMU machines at once: the example's master
(static address), a worker, and a MAC the example does not list. Each machine's timeline is
printed as the daemon records it, with what the machine's console says, and the status page is
reachable on this machine's loopback while the demo runs. Everything is removed at the end, or
on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..model import ConfigError, load_cluster_file
from ..model.summary import render_summary
from ..runtime.resources import example_cluster
from .netlab import LabError, NetLab, unavailable_reason
from .vm.kernel import KernelError
from .vm.lab import BootLab, Machine, pack_bsroot
from .vm.qemu import MachineSpec, missing_tools

BOOT_TIMEOUT = 420.0
STRANGER_MAC = "52:54:00:77:00:99"  # a machine the example does not list
DOCKER_HOST = "unix:///nonexistent/bootstrapperd-demo.sock"  # never this machine's own Docker
CLONE_NEWNET = 0x40000000


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


class Narrator:
    """Prints every machine's new timeline events and console lines as they appear."""

    def __init__(self, lab: BootLab, machines: list[Machine], start: float) -> None:
        self.lab = lab
        self.machines = machines
        self.start = start
        self.seen_events = {m.mac: 0 for m in machines}
        self.seen_marks = {m.mac: 0 for m in machines}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.width = max(len(m.name) for m in machines)

    def line(self, at: float, machine: Machine, text: str) -> None:
        say(f"  {at - self.start:6.1f} s  {machine.name:<{self.width}}  {text}")

    def tick(self) -> None:
        for machine in self.machines:
            with contextlib.suppress(LabError, ValueError):
                self.nodes[machine.mac] = self.lab.api(f"/api/v1/nodes/{machine.mac}")
            events = self.nodes.get(machine.mac, {}).get("timeline", [])
            for event in events[self.seen_events[machine.mac] :]:
                self.line(event["at"], machine, _describe_event(event))
            self.seen_events[machine.mac] = len(events)
            marks = machine.marks()
            for mark in marks[self.seen_marks[machine.mac] :]:
                self.line(time.time(), machine, f"console: {mark.rsplit(' uptime=', 1)[0]}")
            self.seen_marks[machine.mac] = len(marks)


def _describe_event(event: dict[str, Any]) -> str:
    source, kind = event["source"], event["kind"]
    if source == "dhcp":
        text = f"DHCP {kind.upper()} {event.get('ip', '')}"
        if "boot_file" in event:
            text += f", {event.get('firmware', '?')} firmware gets {event['boot_file']}"
        return text
    if source == "tftp":
        return f"TFTP {kind} {event.get('file', '')} ({event.get('size', '?')} bytes)"
    if source == "http":
        return f"HTTP {kind} {event.get('path', '')} -> {event.get('status', '')}"
    return f"{source} {kind}: {event.get('message', '')}".rstrip(": ")


def _specs(example: Path) -> list[MachineSpec]:
    model = load_cluster_file(example)
    specs = []
    masters = [n for n in model.nodes if n.kube_master]
    workers = [n for n in model.nodes if not n.kube_master]
    for node in (masters[:1] + workers[:1]) or model.nodes[:2]:
        specs.append(MachineSpec(node.hostname, node.mac))
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
        return _run(source, workdir, hold)
    except KeyboardInterrupt:
        say("\ninterrupted: the lab is torn down (VMs, daemon, namespaces, scratch files)")
        return 130
    except (LabError, KernelError, OSError) as exc:
        say(f"bootstrapperd demo failed: {exc}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(source: Path, workdir: Path, hold: bool) -> int:
    say("\n== the stand-in OS: Debian's kernel + a busybox initramfs, as a signed release in a")
    say("   local mirror; bootstrapperd-pack makes the bsroot from it")
    packed = pack_bsroot(source, workdir)
    for line in packed.pack_output.splitlines()[-6:]:
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
            say(f"== status page: http://127.0.0.1:{forward.port}/  (API: /api/v1/nodes)")
            machines = [lab.add_machine(spec) for spec in specs]
            start = time.time()
            lab.power_on(machines)
            listing = ", ".join(f"{m.name} {m.mac}" for m in machines)
            say(f"== power on ({machines[0].accel.upper()}): {listing}\n")
            narrator = Narrator(lab, machines, start)
            lab.wait(machines, BOOT_TIMEOUT, tick=narrator.tick)
            narrator.tick()
            ok = _summary(packed.release.image, machines, narrator.nodes)
            if hold:
                say(f"\nserving; status page http://127.0.0.1:{forward.port}/ — Ctrl-C to stop")
                signal.pause()
        finally:
            forward.close()
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=15)
        say(f"== SIGTERM: the daemon exited {code} after {time.monotonic() - started:.2f} s")
    if not ok or code != 0:
        say(f"-- daemon log (tail) --\n{daemon_log.read_text(errors='replace')[-4000:]}")
    say("== done: VMs, daemon, namespaces, bridge, taps and the scratch bsroot are gone")
    return 0 if ok and code == 0 else 1


def _summary(image: bytes, machines: list[Machine], nodes: dict[str, dict[str, Any]]) -> bool:
    say("\n== result")
    ok = True
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
        to_config = f"{fetched[0] - machine.started:.1f} s" if fetched else "never"
        total = f"{machine.ended - machine.started:.1f} s" if machine.ended else "-"
        say(
            f"   {machine.name:<10} {node.get('ip') or '-':<12} stage {node.get('stage')}, "
            f"disk {'holds the image' if has_image else 'WITHOUT the image'}; QEMU start -> "
            f"config fetched {to_config}, -> powered off {total}"
            + (" (timed out)" if machine.timed_out else "")
        )
    return ok
