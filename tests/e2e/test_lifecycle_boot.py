"""End to end: a machine's life through ``bootstrapperd serve``, on real firmware.

One BIOS machine (the example's master) is set to boot from the network first, its disk kept
across reboots, with an IPMI BMC (ipmi_sim) on a management network that its node's ``bmc:``
names. It installs over PXE; after the install it boots again from the network, is sent to its
own disk (``local-boot``), and the installed OS on that disk reports itself; then
``bootstrapperd reinstall --power-cycle`` makes it install again through its BMC. Meanwhile a
machine the description does not list, under ``dhcp.unknown_machines: approve``, waits
(``discovered``, its iPXE script sleeping and asking again, no kernel fetched) until
``bootstrapperd approve``, and then installs. Both machines boot at once; the tests run in
order on the one lab.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootstrapperd.lab.netlab import NetLab
from bootstrapperd.lab.vm import disk
from bootstrapperd.lab.vm.initramfs import INSTALLED_MARK
from bootstrapperd.lab.vm.lab import (
    BMC_FIRST_HOST,
    BMC_USER,
    MANAGEMENT,
    BootLab,
    Machine,
    Packed,
    pack_bsroot,
)
from bootstrapperd.lab.vm.qemu import MachineSpec
from tests.conftest import EXAMPLE, need, need_tools, need_vm_lab
from tests.daemon_proc import bootstrapperd_command

pytestmark = pytest.mark.netns

MASTER = MachineSpec("master1", "52:54:00:77:00:10", reboots=True)
STRANGER = MachineSpec("stranger", "52:54:00:77:00:99")  # not in the description
BMC_PASSWORD = "lab-bmc-pw"
INSTALL_TIMEOUT = 300.0  # one install under TCG takes about 40 s, two machines share the CPUs
DOCKER_HOST = "unix:///nonexistent/bootstrapperd-e2e-lifecycle.sock"


@dataclass
class Story:
    lab: BootLab
    packed: Packed
    master: Machine
    stranger: Machine

    @property
    def bsroot(self) -> Path:
        return self.packed.bsroot

    def node(self, machine: Machine) -> dict[str, Any]:
        node: dict[str, Any] = self.lab.api(f"/api/v1/nodes/{machine.mac}")
        return node

    def explain(self, machine: Machine) -> str:
        """What to look at when an assertion about ``machine`` fails."""
        timeline = [
            f"{e['source']}:{e['kind']}" + (f"({e['message']})" if "message" in e else "")
            for e in self.node(machine)["timeline"]
        ]
        bmc = "" if machine.bmc is None else f"\n--- BMC chassis calls ---\n{machine.bmc.events()}"
        return (
            f"\n--- {machine.name} serial (tail) ---\n{machine.console_tail()}"
            f"\n--- timeline ---\n{timeline}{bmc}"
        )


def _describe(workdir: Path) -> Path:
    """The bundled example: registry off, unknown machines wait for approval, and the master's
    BMC (the lab's first, its password in a 0600 file)."""
    password_file = workdir / "master1-bmc.password"
    password_file.write_text(BMC_PASSWORD + "\n")
    password_file.chmod(0o600)
    text = EXAMPLE.read_text()
    static = "    ip: 10.77.0.10               # static reservation\n"
    assert static in text, "the bundled example changed"
    assert "unknown_machines: allow" in text, "the bundled example changed"
    bmc = (
        f"    bmc:\n      address: {MANAGEMENT.network[BMC_FIRST_HOST]}\n"
        f"      protocol: ipmi\n      username: {BMC_USER}\n"
        f"      password_file: {password_file}\n"
    )
    text = text.replace(static, static + bmc)
    text = text.replace("unknown_machines: allow", "unknown_machines: approve")
    description = workdir / "cluster-desc.yml"
    description.write_text(text + "\nregistry:\n  mode: off\n")
    return description


def admin(bsroot: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator's command on the bootstrapper, over the daemon's admin socket."""
    return subprocess.run(
        [*bootstrapperd_command(), *args, "--bsroot", str(bsroot)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    need_vm_lab()
    missing = disk.missing_packages()
    need(not missing, f"missing Debian packages: {', '.join(missing)}")
    need_tools("ipmi_sim")
    workdir = tmp_path_factory.mktemp("e2e-lifecycle")
    packed = pack_bsroot(_describe(workdir), workdir)
    with NetLab() as netlab, (workdir / "daemon.log").open("wb") as output:
        lab = BootLab(netlab, packed.model, workdir)
        lab.start_daemon(packed.bsroot, output, env={**os.environ, "DOCKER_HOST": DOCKER_HOST})
        master = lab.add_machine(MASTER, bmc_password=BMC_PASSWORD)
        stranger = lab.add_machine(STRANGER)
        lab.power_on([master, stranger])
        yield Story(lab, packed, master, stranger)


def _kinds(node: dict[str, Any]) -> list[str]:
    return [f"{e['source']}:{e['kind']}" for e in node["timeline"]]


def _notes(node: dict[str, Any]) -> list[str]:
    return [
        e["message"] for e in node["timeline"] if (e["source"], e["kind"]) == ("install", "note")
    ]


def _marks(machine: Machine) -> list[str]:
    return [mark.rsplit(" uptime=", 1)[0] for mark in machine.marks()]


def test_installs_then_boots_its_own_disk_from_the_network(story: Story) -> None:
    master, lab = story.master, story.lab
    lab.wait_for_mark(master, INSTALLED_MARK, INSTALL_TIMEOUT * 2)
    lab.wait_for_mark(master, "end installed-os", 120)
    lab.wait_until_off(master, 60)
    node = story.node(master)
    explain = story.explain(master)
    kinds = _kinds(node)
    # Installed over the network, then (after the reboot) sent to its disk by the next boot.
    installed = kinds.index("install:installed")
    assert kinds.index("http:kernel") < installed, explain
    local = [i for i, kind in enumerate(kinds) if kind == "http:local-boot"]
    assert local, explain
    assert local[0] > installed, explain
    assert kinds.count("install:installed") == 1, explain
    assert "http:kernel" not in kinds[installed:], explain  # the disk, not the live OS again
    # The installed OS booted from that disk and reported itself to the daemon, after that.
    reports = [
        i
        for i, e in enumerate(node["timeline"])
        if (e["source"], e["kind"]) == ("install", "note")
        and e["message"].startswith(INSTALLED_MARK)
    ]
    assert len(reports) == 1, explain
    assert reports[0] > local[0], explain
    version = story.packed.release.version
    assert _notes(node)[-1] == f"{INSTALLED_MARK} version={version} config=ignition", explain
    # The console: the live OS's install, then the installed OS, in one machine's life.
    marks = _marks(master)
    assert master.outcomes() == ["installed", "installed-os"], explain
    assert marks.index("end installed") < marks.index(f"{INSTALLED_MARK} version={version}")
    assert "config ignition" in marks, explain  # the config install.sh put on the disk
    assert node["state"] == "installed", explain
    assert node["stage"] == "installed", explain
    assert not node["failed"], explain


def test_reinstall_power_cycles_it_through_its_bmc(story: Story) -> None:
    master, lab = story.master, story.lab
    assert master.bmc is not None
    before = len(story.node(master)["timeline"])
    result = admin(story.bsroot, "reinstall", "--power-cycle", master.mac)
    explain = f"\n--- reinstall ---\n{result.stdout}{result.stderr}" + story.explain(master)
    assert result.returncode == 0, explain
    assert f"{master.mac}: ready (reinstall by admin)" in result.stdout, explain
    # The BMC got "next boot from the network" and a power change, and started the machine.
    events = master.bmc.events()
    assert "set boot pxe" in events, explain
    after = events[events.index("set boot pxe") :]
    assert "set power 1" in after or "set reset 1" in after, explain
    lab.wait_for_mark(master, "end installed", INSTALL_TIMEOUT, count=2)
    lab.wait_for(
        master,
        "the second installed report",
        lambda: _kinds(story.node(master)).count("install:installed") == 2,
        30,
    )
    node = story.node(master)
    explain = story.explain(master)
    again = _kinds(node)[before:]
    assert "admin:state" in again, explain
    assert again.index("http:kernel") < again.index("install:installed"), explain
    assert node["state"] == "installed", explain
    assert not node["failed"], explain
    assert len(master.starts()) >= 2, explain  # the lab's power-on, then the BMC's (the
    # reboot after each install is the guest's own: QEMU goes on running)


def test_an_unknown_machine_waits_until_approved(story: Story) -> None:
    stranger, lab = story.stranger, story.lab
    lab.wait_for(
        stranger,
        "two waiting events",
        lambda: _kinds(story.node(stranger)).count("http:waiting") >= 2,
        120,
    )
    node = story.node(stranger)
    explain = story.explain(stranger)
    kinds = _kinds(node)
    assert node["state"] == "discovered", explain
    assert "http:kernel" not in kinds, explain
    assert "http:initrd" not in kinds, explain
    assert "install:installed" not in kinds, explain
    assert stranger.running(), explain  # it waits, asking again, powered on

    approved = admin(story.bsroot, "approve", stranger.mac)
    assert approved.returncode == 0, approved.stderr
    lab.wait_for_mark(stranger, "end installed", INSTALL_TIMEOUT)
    node = story.node(stranger)
    explain = story.explain(stranger)
    kinds = _kinds(node)
    approval = kinds.index("admin:state")
    assert kinds.index("http:kernel") > approval, explain
    assert kinds.index("install:installed") > approval, explain
    assert node["state"] == "installed", explain
    assert stranger.outcomes() == ["installed"], explain
