"""QEMU machines for the lab: BIOS machines boot the NIC's built-in iPXE ROM (package ipxe-qemu);
UEFI machines run OVMF (package ovmf) with the NIC's ROM removed, so OVMF's own PXE client
fetches ``ipxe.efi`` over TFTP first, as UEFI servers do.

Acceleration: KVM when ``/dev/kvm`` really works, else TCG. On nested-virtualisation machines
``/dev/kvm`` can exist while iPXE triple-faults under it, so the choice is made by a probe: the
iPXE ROM is started under KVM with QEMU's own isolated user network (``restrict=on``: nothing
leaves the QEMU process) and must get as far as configuring its NIC.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..netlab import Namespace

QEMU = "qemu-system-x86_64"
MEMORY_MIB = 256
OVMF_PAIRS = (
    (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
    (Path("/usr/share/OVMF/OVMF_CODE.fd"), Path("/usr/share/OVMF/OVMF_VARS.fd")),
)
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")  # QEMU's default ROM for virtio-net-pci

ACCEL_ENV = "BOOTSTRAPPERD_LAB_ACCEL"
PROBE_MARK = b"Configuring (net0"  # iPXE got as far as configuring its NIC under KVM
PROBE_TIMEOUT = 30.0


def missing_tools() -> list[str]:
    """What the lab's machines need and this machine lacks (Debian package names)."""
    missing = []
    if shutil.which(QEMU) is None:
        missing.append("qemu-system-x86")
    if not IPXE_ROM.is_file():
        missing.append("ipxe-qemu")
    return missing


def ovmf() -> tuple[Path, Path] | None:
    """OVMF's code and variable-store images, or None when the ovmf package is not installed."""
    for code, variables in OVMF_PAIRS:
        if code.is_file() and variables.is_file():
            return code, variables
    return None


@dataclass(frozen=True)
class Accel:
    """The machines' acceleration and why (one line, for the operator)."""

    name: str  # kvm | tcg
    why: str


_verdict: Accel | None = None


def probe_kvm(ns: Namespace, workdir: Path, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when iPXE runs under KVM here (see the module's docstring), else why not: one line."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist here"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm exists but this user cannot open it (read and write)"
    serial = workdir / "kvm-probe.serial"
    argv = [
        *(QEMU, "-accel", "kvm", "-m", "128", "-nographic", "-no-reboot", "-boot", "n"),
        *("-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"),
        *("-serial", f"file:{serial}", "-monitor", "none", "-display", "none"),
    ]
    started = time.monotonic()
    probe = ns.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            text = serial.read_bytes() if serial.exists() else b""
            if PROBE_MARK in text:
                return None
            if probe.poll() is not None:  # a triple fault resets the VM; -no-reboot ends QEMU
                return (
                    f"/dev/kvm exists, but QEMU under KVM stopped after "
                    f"{time.monotonic() - started:.1f} s, before iPXE reached "
                    f'"{PROBE_MARK.decode()}"'
                )
            time.sleep(0.1)
        return (
            f'/dev/kvm exists, but iPXE did not reach "{PROBE_MARK.decode()}" under KVM '
            f"within {timeout:.0f} s"
        )
    finally:
        ns.lab.stop(probe)
        ns.lab.processes.remove(probe)


def kvm_works(ns: Namespace, workdir: Path, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether iPXE runs under KVM here (see the module's docstring)."""
    return probe_kvm(ns, workdir, timeout) is None


def accel_verdict(ns: Namespace, workdir: Path) -> Accel:
    """``kvm`` or ``tcg`` and why: ``$BOOTSTRAPPERD_LAB_ACCEL`` when set, else the probe's
    verdict (made once per process: the probe can take many seconds)."""
    global _verdict
    configured = os.environ.get(ACCEL_ENV)
    if configured in ("kvm", "tcg"):
        return Accel(configured, f"{ACCEL_ENV}={configured} is set (no probe)")
    if _verdict is None:
        started = time.monotonic()
        why_not = probe_kvm(ns, workdir)
        if why_not is None:
            took = time.monotonic() - started
            _verdict = Accel(
                "kvm", f'iPXE reached "{PROBE_MARK.decode()}" under KVM in {took:.1f} s'
            )
        elif not os.path.exists("/dev/kvm"):
            _verdict = Accel("tcg", why_not)
        else:
            _verdict = Accel(
                "tcg", f"{why_not}; {ACCEL_ENV}=kvm forces KVM, {ACCEL_ENV}=tcg skips the probe"
            )
    return _verdict


def choose_accel(ns: Namespace, workdir: Path) -> str:
    """``kvm`` or ``tcg`` (see :func:`accel_verdict`)."""
    return accel_verdict(ns, workdir).name


@dataclass(frozen=True)
class MachineSpec:
    """A lab machine. ``reboots``: the machine stays up across a reboot, and its boot order is
    the NIC, then its disk, as a server set to boot from the network first: an installed
    machine network-boots again, and bootstrapperd sends it to its disk. Without it a reboot
    ends QEMU (``-no-reboot``) and the disk is not in the boot order: one install, then off."""

    name: str
    mac: str
    firmware: str = "bios"  # bios | uefi
    reboots: bool = False


# The VM's end of an emulated BMC (ipmi_sim, see lab.py): QEMU connects to ipmi_sim's "serial"
# port on the loopback of the machine's namespace; ipmi_sim then sees the guest's KCS interface.
IPMI_DEVICES = (
    "-chardev", "socket,id=ipmi0,host=127.0.0.1,port={port},reconnect=1",
    "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
    "-device", "isa-ipmi-kcs,bmc=bmc0",
)  # fmt: skip


def qemu_argv(
    spec: MachineSpec,
    tap: str,
    disk: Path,
    serial: Path,
    accel: str,
    uefi_vars: Path | None,
    bmc_port: int | None = None,
) -> list[str]:
    """QEMU's command line for ``spec``. The console is appended to ``serial``, so that it
    holds every boot of the machine. ``bmc_port``: the machine has an IPMI BMC (ipmi_sim's VM
    port), which starts it with ``-daemonize``: no ``-nographic`` then."""
    nic = f"virtio-net-pci,netdev=n0,mac={spec.mac},bootindex=0"
    blk = "virtio-blk-pci,drive=d0" + (",bootindex=1" if spec.reboots else "")
    argv = [
        *(QEMU, "-name", spec.name, "-accel", accel, "-m", str(MEMORY_MIB), "-smp", "1"),
        *(() if bmc_port is not None else ("-nographic",)),
        *(() if spec.reboots else ("-no-reboot",)),
        *("-monitor", "none", "-display", "none"),
        *("-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"),
        *("-drive", f"file={disk},format=raw,if=none,id=d0", "-device", blk),
        *("-chardev", f"file,id=console0,path={serial},append=on", "-serial", "chardev:console0"),
    ]
    if bmc_port is not None:
        argv += [arg.format(port=bmc_port) for arg in IPMI_DEVICES]
    if spec.firmware == "uefi":
        firmware = ovmf()
        if firmware is None or uefi_vars is None:
            raise FileNotFoundError("UEFI machines need OVMF (Debian package ovmf)")
        code, _ = firmware
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={code}"]
        argv += ["-drive", f"if=pflash,format=raw,file={uefi_vars}"]
        nic += ",romfile="  # OVMF's own PXE client: DHCP, then ipxe.efi over TFTP
    elif not spec.reboots:
        argv += ["-boot", "n"]  # a machine that reboots: the bootindex order, NIC then disk
    return [*argv, "-device", nic]
