"""The boot lab: a bsroot packed from a local mirror of the stand-in OS, the network, the daemon
and the machines.

Network: namespace ``bs`` (the bootstrapper: veth ``bs0`` holding the description's
``bootstrapper`` address) joined to namespace ``vm`` (veth ``up0`` in bridge ``br0``, which
has a fixed MAC, plus one tap per machine). Nothing touches the host's interfaces; the
:class:`~bootstrapperd.lab.netlab.NetLab` it is built on stops every process by PID and deletes the
namespaces (and so the veths, bridge and taps) at the end, even after a failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ...model import ClusterModel, Role, load_cluster_file
from ..netlab import LabError, Namespace, NetLab, wait_for_http
from .initramfs import MARK, build_initramfs, write_disk
from .kernel import ensure_kernel
from .qemu import MachineSpec, choose_accel, ovmf, qemu_argv
from .release import ReleaseKey, StandInRelease, disk_image, stand_in_binary, write_mirror

LAB_VERSION = "9999.0.0"  # the stand-in release's version when the description asks for current
BRIDGE_MAC = "02:00:00:77:00:02"


def console_script(name: str, module: str) -> list[str]:
    """The installed console script beside this interpreter, as a user would run it."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


@dataclass(frozen=True)
class Packed:
    bsroot: Path
    model: ClusterModel
    release: StandInRelease
    pack_output: str


def pack_bsroot(
    description: Path,
    workdir: Path,
    pack_options: Sequence[str] = ("--no-bootstrapper",),
    env: Mapping[str, str] | None = None,
) -> Packed:
    """Build the stand-in release, publish it in a signed local mirror and run
    ``bootstrapperd-pack`` on ``description`` against it (``workdir/bsroot``), with
    ``pack_options`` (by default without the bootstrapper's own install, which needs a package
    index or a wheelhouse: the site install test gives one through ``env``)."""
    model = load_cluster_file(description)
    kernel = ensure_kernel()
    masters = [node.fqdn for node in model.nodes if Role.MASTER in node.roles]
    version = LAB_VERSION if model.os.version == "current" else model.os.version
    release = StandInRelease(
        version=version,
        kernel=kernel.vmlinuz.read_bytes(),
        initramfs=build_initramfs(kernel, resolve=masters),
        image=disk_image(version),
    )
    binaries = {
        name: stand_in_binary(name, model.kubernetes_version) for name in ("kubelet", "kubectl")
    }
    with ReleaseKey.create(workdir / "signer", "bootstrapperd lab release signer") as key:
        mirror = write_mirror(
            workdir / "mirror",
            key,
            release,
            model.os.channel,
            {model.kubernetes_version: binaries},
            os_name=str(model.os.name),
        )
    bsroot = workdir / "bsroot"
    argv = [
        *console_script("bootstrapperd-pack", "bootstrapperd.pack"),
        *(str(description), "-o", str(bsroot), "--plain", "--no-images"),
        *("--mirror", f"file://{mirror}/{{channel}}"),
        *("--kubernetes-mirror", f"file://{mirror}/kubernetes"),
        *("--signing-key", str(mirror / "signing-key.asc")),
        *("--signing-key-fingerprint", key.fingerprint),
        *pack_options,
    ]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, env=None if env is None else dict(env)
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise LabError(f"bootstrapperd-pack failed ({result.returncode}):\n{output}")
    return Packed(
        bsroot, load_cluster_file(bsroot / "config" / "cluster-desc.yml"), release, output
    )


@dataclass
class Machine:
    spec: MachineSpec
    tap: str
    disk: Path
    serial: Path
    uefi_vars: Path | None = None
    accel: str = ""
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # wall clock, comparable with the daemon's timeline
    ended: float | None = None
    timed_out: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mac(self) -> str:
        return self.spec.mac

    def marks(self) -> list[str]:
        """The stand-in OS's progress lines on the serial console (without the mark)."""
        if not self.serial.exists():
            return []
        text = self.serial.read_bytes().decode(errors="replace").replace("\r", "")
        prefix = MARK + " "
        return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]

    def outcome(self) -> str | None:
        """How the stand-in OS ended (``installed``, ``install-failed``, …), None if it did not."""
        for line in self.marks():
            if line.startswith("end "):
                return line.split()[1]
        return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class BootLab:
    netlab: NetLab
    model: ClusterModel
    workdir: Path
    bs: Namespace = field(init=False)
    vm: Namespace = field(init=False)
    machines: list[Machine] = field(default_factory=list)
    daemon: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.bs = self.netlab.namespace("bs")
        self.vm = self.netlab.namespace("vm")
        address = f"{self.model.bootstrapper}/{self.model.network.prefixlen}"
        self.netlab.veth(self.bs, "bs0", self.vm, "up0", address, None)
        self.netlab.bridge(self.vm, "br0", BRIDGE_MAC, ports=["up0"])

    @property
    def base_url(self) -> str:
        port = self.model.http_port
        return f"http://{self.model.bootstrapper}" + ("" if port == 80 else f":{port}")

    def start_daemon(
        self, bsroot: Path, output: IO[Any] | int, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``bootstrapperd serve`` (the console script) in the bootstrapper namespace; returns
        once it answers /healthz."""
        argv = [*console_script("bootstrapperd", "bootstrapperd"), "serve", "--bsroot", str(bsroot)]
        self.daemon = self.bs.spawn(argv, stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_http(self.bs, f"{self.base_url}/healthz", timeout=60)
        except LabError:
            if self.daemon.poll() is not None:
                raise LabError(f"bootstrapperd serve exited {self.daemon.returncode}") from None
            raise
        return self.daemon

    def api(self, path: str) -> Any:
        """A JSON answer of the daemon's HTTP API, fetched from the bootstrapper namespace."""
        result = self.bs.run(["curl", "-sS", "--fail", "--max-time", "5", self.base_url + path])
        if result.returncode != 0:
            raise LabError(f"GET {path}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def add_machine(self, spec: MachineSpec) -> Machine:
        index = len(self.machines)
        tap = f"tap{index}"
        self.netlab.tap(self.vm, tap, bridge="br0")
        directory = self.workdir / "machines" / spec.name
        directory.mkdir(parents=True, exist_ok=True)
        uefi_vars = None
        if spec.firmware == "uefi":
            firmware = ovmf()
            if firmware is None:
                raise LabError("UEFI machines need OVMF (Debian package ovmf)")
            uefi_vars = directory / "OVMF_VARS.fd"
            shutil.copyfile(firmware[1], uefi_vars)
        machine = Machine(spec, tap, write_disk(directory / "disk.raw"), directory / "serial.log")
        machine.uefi_vars = uefi_vars
        self.machines.append(machine)
        return machine

    def power_on(self, machines: Sequence[Machine]) -> None:
        """Start the machines' QEMUs, one right after the other."""
        accel = choose_accel(self.vm, self.workdir)
        for machine in machines:
            machine.accel = accel
            argv = qemu_argv(
                machine.spec, machine.tap, machine.disk, machine.serial, accel, machine.uefi_vars
            )
            log = (machine.serial.parent / "qemu.out").open("wb")
            machine.started = time.time()
            machine.proc = self.vm.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    def wait(
        self,
        machines: Sequence[Machine],
        timeout: float,
        tick: Callable[[], None] | None = None,
    ) -> None:
        """Until every machine has powered off (or ``timeout``: the rest are stopped and marked
        ``timed_out``). ``tick`` is called about twice a second meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            for machine in machines:
                if machine.ended is None and machine.proc is not None and not machine.running():
                    machine.ended = time.time()
            if tick is not None:
                tick()
            if all(m.ended is not None for m in machines) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for machine in machines:
            if machine.ended is None and machine.proc is not None:
                machine.timed_out = True
                self.netlab.stop(machine.proc)
                machine.ended = time.time()
