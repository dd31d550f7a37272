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

_accel: str | None = None


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


def kvm_works(ns: Namespace, workdir: Path, timeout: float = 30.0) -> bool:
    """Whether iPXE runs under KVM here (see the module's docstring)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    serial = workdir / "kvm-probe.serial"
    argv = [
        *(QEMU, "-accel", "kvm", "-m", "128", "-nographic", "-no-reboot", "-boot", "n"),
        *("-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"),
        *("-serial", f"file:{serial}", "-monitor", "none", "-display", "none"),
    ]
    probe = ns.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            text = serial.read_bytes() if serial.exists() else b""
            if b"Configuring (net0" in text:
                return True
            if probe.poll() is not None:  # a triple fault resets the VM; -no-reboot ends QEMU
                return False
            time.sleep(0.1)
        return False
    finally:
        ns.lab.stop(probe)
        ns.lab.processes.remove(probe)


def choose_accel(ns: Namespace, workdir: Path) -> str:
    """``kvm`` or ``tcg``: ``$BOOTSTRAPPERD_LAB_ACCEL`` when set, else the probe's verdict (made
    once per process)."""
    global _accel
    configured = os.environ.get("BOOTSTRAPPERD_LAB_ACCEL")
    if configured in ("kvm", "tcg"):
        return configured
    if _accel is None:
        _accel = "kvm" if kvm_works(ns, workdir) else "tcg"
    return _accel


@dataclass(frozen=True)
class MachineSpec:
    name: str
    mac: str
    firmware: str = "bios"  # bios | uefi


def qemu_argv(
    spec: MachineSpec, tap: str, disk: Path, serial: Path, accel: str, uefi_vars: Path | None
) -> list[str]:
    nic = f"virtio-net-pci,netdev=n0,mac={spec.mac},bootindex=0"
    argv = [
        *(QEMU, "-name", spec.name, "-accel", accel, "-m", str(MEMORY_MIB), "-smp", "1"),
        *("-nographic", "-no-reboot", "-monitor", "none", "-display", "none"),
        *("-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"),
        *("-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"),
        *("-serial", f"file:{serial}"),
    ]
    if spec.firmware == "uefi":
        firmware = ovmf()
        if firmware is None or uefi_vars is None:
            raise FileNotFoundError("UEFI machines need OVMF (Debian package ovmf)")
        code, _ = firmware
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={code}"]
        argv += ["-drive", f"if=pflash,format=raw,file={uefi_vars}"]
        nic += ",romfile="  # OVMF's own PXE client: DHCP, then ipxe.efi over TFTP
    else:
        argv += ["-boot", "n"]
    return [*argv, "-device", nic]
