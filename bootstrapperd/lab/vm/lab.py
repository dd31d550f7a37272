"""The boot lab: a bsroot packed from a local mirror of the stand-in OS, the network, the daemon
and the machines.

Network: namespace ``bs`` (the bootstrapper: veth ``bs0`` holding the description's
``bootstrapper`` address) joined to namespace ``vm`` (veth ``up0`` in bridge ``br0``, which
has a fixed MAC, plus one tap per machine). Nothing touches the host's interfaces; the
:class:`~bootstrapperd.lab.netlab.NetLab` it is built on stops every process by PID and deletes the
namespaces (and so the veths, bridge and taps) at the end, even after a failure.

Machines with a BMC: OpenIPMI's ``ipmi_sim`` per machine, in namespace ``vm`` beside the machine's
QEMU (they talk over that namespace's loopback), at its own address on a management network
(:data:`MANAGEMENT`: veth ``mgmt0`` in ``bs``, ``mgmt1`` in ``vm``), so the daemon reaches it as it
would a server's BMC. ipmi_sim hands power and boot flags to a ``chassis_control`` program
(:data:`CHASSIS`), which owns the machine's QEMU: it starts it (``-daemonize``), stops it, and
starts it with ``-boot once=n`` after "PXE next boot", once. The lab's own power-on goes through
that program too, so the BMC always knows the machine's power.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
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
TICK = 0.5  # how often the waits look at the machines

# BMCs (see the module's docstring): the management network, the bootstrapper's end of it, and
# machine i's BMC at .10+i, its ipmi_sim listening for its QEMU on port 9000+i of vm's loopback.
MANAGEMENT = IPv4Interface("10.98.0.1/24")
BMC_FIRST_HOST = 10
BMC_VM_PORT = 9000
BMC_USER = "admin"

BMC_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""

BMC_LAN_CONF = """\
name "{name}"
set_working_mc 0x20
  startlan 1
    addr {address} 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 {vm_port} codec VM
  chassis_control "{chassis}"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

# ipmi_sim runs it as `chassis get power boot` or `chassis set power 1` (through popen); the lab
# runs `chassis set power 1` itself to power the machine on. Every call goes to events.log,
# every QEMU start's wall-clock time to starts.
CHASSIS = """\
#!/bin/sh
D={directory}
echo "$*" >> "$D/events.log"
running() {{ [ -s "$D/qemu.pid" ] && kill -0 "$(cat "$D/qemu.pid")" 2>/dev/null \\
  && ! grep -q '^State:.Z' "/proc/$(cat "$D/qemu.pid")/status" 2>/dev/null; }}
stop() {{
  running || return 0
  pid=$(cat "$D/qemu.pid"); kill "$pid"
  i=0; while running && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  rm -f "$D/qemu.pid"
}}
start() {{
  running && return 0
  once=""
  if [ "$(cat "$D/boot" 2>/dev/null)" = pxe ]; then once="-boot once=n"; rm -f "$D/boot"; fi
  date +%s.%N >> "$D/starts"
  {qemu} $once -daemonize -pidfile "$D/qemu.pid" >>"$D/qemu.out" 2>&1
}}
op=$1; shift
if [ "$op" = get ]; then
  for name in "$@"; do
    case $name in
      power) if running; then echo power:1; else echo power:0; fi ;;
      boot) echo "boot:$(cat "$D/boot" 2>/dev/null || echo none)" ;;
    esac
  done
  exit 0
fi
while [ $# -ge 2 ]; do
  name=$1; value=$2; shift 2
  case $name in
    power) if [ "$value" = 1 ]; then start; else stop; fi ;;
    reset) stop; start ;;
    boot) echo "$value" > "$D/boot" ;;
  esac
done
"""


def _pid_alive(pidfile: Path) -> bool:
    """Whether the process named in ``pidfile`` runs (a zombie does not)."""
    try:
        pid = int(pidfile.read_text().strip())
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return False
    return "\nState:\tZ" not in status


@dataclass
class LabBMC:
    """A machine's emulated BMC: IPMI over LAN at ``address`` (UDP 623), on the management
    network."""

    address: str
    username: str
    password: str
    vm_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def chassis(self) -> Path:
        return self.directory / "chassis"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    def events(self) -> list[str]:
        """The calls the chassis program got (``set power 1``, ``set boot pxe``, ...)."""
        path = self.directory / "events.log"
        return path.read_text().splitlines() if path.exists() else []

    def starts(self) -> list[float]:
        """When the chassis program started the machine's QEMU (wall clock)."""
        path = self.directory / "starts"
        return [float(line) for line in path.read_text().split()] if path.exists() else []

    def description(self, password_file: Path) -> dict[str, Any]:
        """The node's ``bmc:`` block in a cluster description (the password in
        ``password_file``)."""
        return {
            "address": self.address,
            "protocol": "ipmi",
            "username": self.username,
            "password_file": str(password_file),
        }


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
    bmc: LabBMC | None = None
    stops: list[float] = field(default_factory=list)  # when the lab saw QEMU gone (wall clock)
    lab_starts: list[float] = field(default_factory=list)  # QEMU starts of a machine without BMC

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

    def outcomes(self) -> list[str]:
        """How each boot of the stand-in OS so far ended (``installed``, ``installed-os``, …):
        the console holds every boot."""
        return [line.split()[1] for line in self.marks() if line.startswith("end ")]

    def count(self, prefix: str) -> int:
        """How many console marks so far start with the words ``prefix`` (whole words:
        ``end installed`` does not count ``end installed-os``; the guest's uptime is not part
        of the match)."""
        return sum(
            1
            for line in self.marks()
            if (line.rsplit(" uptime=", 1)[0] + " ").startswith(prefix + " ")
        )

    def console_tail(self, size: int = 3000) -> str:
        return (
            self.serial.read_bytes().decode(errors="replace")[-size:]
            if self.serial.exists()
            else ""
        )

    def starts(self) -> list[float]:
        """When the machine's QEMU was started, each time (wall clock)."""
        return self.bmc.starts() if self.bmc is not None else list(self.lab_starts)

    def running(self) -> bool:
        if self.bmc is not None:
            return _pid_alive(self.bmc.pidfile)
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
    bmcs: int = 0  # how many machines have a BMC (and so whether the management network exists)

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

    def add_machine(self, spec: MachineSpec, bmc_password: str | None = None) -> Machine:
        """A machine on the bridge, with a blank disk; with ``bmc_password``, an IPMI BMC too
        (see the module's docstring; the user is :data:`BMC_USER`)."""
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
        if bmc_password is not None:
            machine.bmc = self._add_bmc(machine, directory / "bmc", bmc_password)
        self.machines.append(machine)
        return machine

    def _add_bmc(self, machine: Machine, directory: Path, password: str) -> LabBMC:
        if shutil.which("ipmi_sim") is None:
            raise LabError("machines with a BMC need ipmi_sim (Debian package openipmi)")
        if self.bmcs == 0:
            self.netlab.veth(self.bs, "mgmt0", self.vm, "mgmt1", str(MANAGEMENT), None)
        address = str(MANAGEMENT.network[BMC_FIRST_HOST + self.bmcs])
        self.vm.ip("addr", "add", f"{address}/{MANAGEMENT.network.prefixlen}", "dev", "mgmt1")
        bmc = LabBMC(address, BMC_USER, password, BMC_VM_PORT + self.bmcs, directory)
        self.bmcs += 1
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "state").mkdir(exist_ok=True)
        (directory / "sim.emu").write_text(BMC_EMU)
        (directory / "lan.conf").write_text(
            BMC_LAN_CONF.format(
                name=machine.name,
                address=address,
                vm_port=bmc.vm_port,
                chassis=bmc.chassis,
                user=bmc.username,
                password=password,
            )
        )
        with (directory / "ipmi_sim.log").open("wb") as log:
            bmc.proc = self.vm.spawn(
                ["ipmi_sim", "-n", "-c", str(directory / "lan.conf"),
                 "-f", str(directory / "sim.emu"), "-s", str(directory / "state")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.vm.run(["ss", "-Hlun", f"src {address}:623"]).stdout.strip():
            if bmc.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(
                    f"ipmi_sim for {machine.name} did not listen on {address}:623 "
                    f"(see {directory / 'ipmi_sim.log'})"
                )
            time.sleep(0.1)
        return bmc

    def _argv(self, machine: Machine) -> list[str]:
        return qemu_argv(
            machine.spec,
            machine.tap,
            machine.disk,
            machine.serial,
            machine.accel,
            machine.uefi_vars,
            bmc_port=None if machine.bmc is None else machine.bmc.vm_port,
        )

    def _start(self, machine: Machine) -> None:
        """Start the machine's QEMU: through its BMC's chassis program if it has one (the
        program is written here, once the acceleration is known)."""
        if machine.bmc is None:
            with (machine.serial.parent / "qemu.out").open("ab") as log:
                machine.lab_starts.append(time.time())
                machine.proc = self.vm.spawn(
                    self._argv(machine), stdout=log, stderr=subprocess.STDOUT
                )
            return
        bmc = machine.bmc
        if not bmc.chassis.exists():
            bmc.chassis.write_text(
                CHASSIS.format(directory=bmc.directory, qemu=shlex.join(self._argv(machine)))
            )
            bmc.chassis.chmod(0o755)
        result = self.vm.run([str(bmc.chassis), "set", "power", "1"], timeout=60)
        if result.returncode != 0 or not machine.running():
            out = (bmc.directory / "qemu.out").read_text(errors="replace").strip()
            raise LabError(f"{machine.name}'s QEMU did not start: {out or result.stderr.strip()}")

    def power_on(self, machines: Sequence[Machine]) -> None:
        """Start the machines' QEMUs, one right after the other."""
        accel = choose_accel(self.vm, self.workdir)
        for machine in machines:
            machine.accel = accel
            machine.started = time.time()
            self._start(machine)

    def poll(self, machines: Sequence[Machine]) -> None:
        """Note the machines that went off."""
        for machine in machines:
            if not machine.started or machine.running():
                continue
            if len(machine.stops) < len(machine.starts()):
                machine.stops.append(time.time())

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
            self.poll(machines)
            for machine in machines:
                if machine.ended is None and machine.started and not machine.running():
                    machine.ended = time.time()
            if tick is not None:
                tick()
            if all(m.ended is not None for m in machines) or time.monotonic() > deadline:
                break
            time.sleep(TICK)
        for machine in machines:
            if machine.ended is None and machine.started:
                machine.timed_out = True
                self.power_off(machine)
                machine.ended = time.time()

    def power_off(self, machine: Machine) -> None:
        """Stop the machine's QEMU at once (through its chassis program if it has a BMC)."""
        if machine.bmc is not None:
            self.vm.run([str(machine.bmc.chassis), "set", "power", "0"], timeout=30)
        elif machine.proc is not None:
            self.netlab.stop(machine.proc)

    def wait_for(
        self,
        machine: Machine,
        what: str,
        done: Callable[[], bool],
        timeout: float,
        tick: Callable[[], None] | None = None,
    ) -> None:
        """Until ``done()`` (looked at about twice a second, the machines polled meanwhile);
        after ``timeout``, a LabError saying ``what`` did not happen, with the console's end."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll(self.machines)
            if tick is not None:
                tick()
            if done():
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"{machine.name}: {what} did not happen within {timeout:.0f} s; "
                    f"its console ends:\n{machine.console_tail()}"
                )
            time.sleep(TICK)

    def wait_for_mark(self, machine: Machine, prefix: str, timeout: float, count: int = 1) -> None:
        """Until the machine's console shows ``count`` marks starting with ``prefix`` (every
        boot's, so far)."""
        what = f'console mark "{prefix}"' + (f" (#{count})" if count > 1 else "")
        self.wait_for(machine, what, lambda: machine.count(prefix) >= count, timeout)

    def wait_until_off(self, machine: Machine, timeout: float) -> None:
        """Until the machine has powered off (and the lab did not restart it)."""
        self.wait_for(machine, "power off", lambda: not machine.running(), timeout)
