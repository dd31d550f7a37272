"""The stand-in install image really boots: a QEMU machine whose disk holds it (as the stand-in
``flatcar-install`` leaves it: the image, then the machine's config past it) boots from that disk
(BIOS, SeaBIOS → syslinux's MBR → syslinux → the lab's kernel and the installed system's
initramfs), gets a lease from ``bootstrapperd serve``, says so on its serial console and reports
itself to the daemon, which records the report in the machine's timeline.

The machine cannot network-boot (its NIC has no option ROM and the boot order is strict), so
reaching the installed system proves the disk booted. ``BootLab`` starts machines from the network
only; :func:`_power_on_from_disk` is the disk-first start this test needs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from bootstrapperd.lab.netlab import NetLab, wait_for_http
from bootstrapperd.lab.vm import disk
from bootstrapperd.lab.vm.initramfs import INSTALLED_MARK, write_config
from bootstrapperd.lab.vm.kernel import ensure_kernel
from bootstrapperd.lab.vm.lab import BootLab, Machine
from bootstrapperd.lab.vm.qemu import MachineSpec, choose_accel, qemu_argv
from bootstrapperd.lab.vm.release import disk_image
from bootstrapperd.model import load_cluster_file
from bootstrapperd.pack import init_bsroot
from tests.conftest import EXAMPLE, need, need_vm_lab
from tests.daemon_proc import DaemonProcess

pytestmark = pytest.mark.netns

VERSION = "4242.1.0"
WORKER = MachineSpec("worker1", "52:54:00:77:00:11")  # the example's worker
BOOT_TIMEOUT = 300.0  # one machine under TCG reports within a minute
DOCKER_HOST = "unix:///nonexistent/bootstrapperd-disk-boot.sock"


def _replace(argv: list[str], old: str, new: str) -> list[str]:
    """``argv`` with the one argument ``old`` made ``new`` (fails when qemu_argv changed)."""
    hits = [index for index, arg in enumerate(argv) if arg == old]
    assert len(hits) == 1, f"qemu_argv changed: {old!r} is not in {argv}"
    return [new if index == hits[0] else arg for index, arg in enumerate(argv)]


def _power_on_from_disk(lab: BootLab, machine: Machine) -> None:
    """Start ``machine`` from its disk only: the disk first and alone in a strict boot order,
    the NIC without its iPXE ROM (what lab.py's power_on would do with a disk boot order)."""
    accel = choose_accel(lab.vm, lab.workdir)
    argv = qemu_argv(machine.spec, machine.tap, machine.disk, machine.serial, accel, None)
    argv = _replace(argv, "n", "order=c,strict=on")
    argv = _replace(argv, "virtio-blk-pci,drive=d0", "virtio-blk-pci,drive=d0,bootindex=0")
    nic = f"virtio-net-pci,netdev=n0,mac={machine.mac},bootindex=0"
    argv = _replace(argv, nic, f"virtio-net-pci,netdev=n0,mac={machine.mac},romfile=")
    machine.accel = accel
    with (machine.serial.parent / "qemu.out").open("wb") as log:
        machine.started = time.time()
        machine.proc = lab.vm.spawn(argv, stdout=log, stderr=log)


def _install(machine: Machine, image: bytes, config: bytes) -> None:
    """The machine's disk as the stand-in flatcar-install leaves it."""
    with machine.disk.open("r+b") as handle:
        handle.write(image)
    write_config(machine.disk, "ignition", config)


def _explain(machine: Machine, node: dict[str, Any] | None) -> str:
    serial = machine.serial.read_bytes().decode(errors="replace")[-3000:]
    timeline = [] if node is None else [f"{e['source']}:{e['kind']}" for e in node["timeline"]]
    return f"\n--- {machine.name} serial (tail) ---\n{serial}\n--- timeline ---\n{timeline}"


def test_the_installed_disk_boots_and_reports_itself(tmp_path: Path) -> None:
    need_vm_lab()
    missing = disk.missing_packages()
    need(not missing, f"missing Debian packages: {', '.join(missing)}")
    description = tmp_path / "cluster-desc.yml"
    description.write_text(EXAMPLE.read_text() + "\nregistry:\n  mode: off\n")
    bsroot = init_bsroot(description, tmp_path / "bsroot").root
    model = load_cluster_file(bsroot / "config" / "cluster-desc.yml")
    image = disk_image(VERSION, ensure_kernel())
    node: dict[str, Any] | None = None
    with NetLab() as netlab:
        lab = BootLab(netlab, model, tmp_path)
        daemon = DaemonProcess(
            lab.bs, bsroot, env={**os.environ, "DOCKER_HOST": DOCKER_HOST}, log=tmp_path / "d.log"
        )
        wait_for_http(lab.bs, f"{lab.base_url}/healthz", timeout=60)
        machine = lab.add_machine(WORKER)
        _install(machine, image, b'{"ignition": {"version": "3.3.0"}}')
        _power_on_from_disk(lab, machine)
        lab.wait([machine], BOOT_TIMEOUT)
        node = lab.api(f"/api/v1/nodes/{WORKER.mac}")
        assert daemon.proc.poll() is None, daemon.output
    explain = _explain(machine, node)
    assert not machine.timed_out, f"{machine.name} did not power off" + explain
    marks = machine.marks()
    assert f"{INSTALLED_MARK} version={VERSION}" in [m.rsplit(" uptime=", 1)[0] for m in marks]
    assert "config ignition" in [m.rsplit(" uptime=", 1)[0] for m in marks], explain
    assert machine.outcome() == "installed-os", explain
    notes = [e for e in node["timeline"] if (e["source"], e["kind"]) == ("install", "note")]
    assert [e["message"] for e in notes] == [
        f"{INSTALLED_MARK} version={VERSION} config=ignition"
    ], explain
    lease = next(m for m in marks if m.startswith("lease "))
    assert f"ip={node['ip']} " in lease, explain  # the daemon's lease, and the report came
    assert notes[0]["ip"] == node["ip"], explain  # from the machine's own address
    # It booted from the disk: it fetched nothing a network boot fetches.
    fetched = {e["kind"] for e in node["timeline"] if e["source"] in ("http", "tftp")}
    assert not fetched & {"ipxe-script", "kernel", "initrd", "transfer"}, explain
