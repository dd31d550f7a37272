"""End to end: real firmware PXE-boots virtual machines through ``bootstrapperd serve``.

The lab (bootstrapperd/vmlab): the stand-in OS (Debian's kernel and a busybox initramfs with a
stand-in ``flatcar-install``) is published as a signed release in a local mirror, and
``bootstrapperd-pack`` makes the bsroot from it, as a user would. ``bootstrapperd serve`` (the
console script) runs in one namespace; QEMU machines sit on a bridge in another. Three BIOS
machines boot at once from the NIC's iPXE ROM: the bundled example's master (static address),
its worker, and a MAC the model does not list. Each goes DHCP → its iPXE script over HTTP →
kernel and initrd over HTTP → the initramfs resolves names through our DNS, reports them, runs
our ``install.sh`` → the stand-in ``flatcar-install`` writes the install image and the
machine's config to its disk → power off. A UEFI machine (OVMF's own PXE client) goes through
TFTP for ``ipxe.efi`` first.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bootstrapperd.lab.netlab import NetLab
from bootstrapperd.lab.vm.initramfs import read_config
from bootstrapperd.lab.vm.lab import BootLab, Machine, Packed, pack_bsroot
from bootstrapperd.lab.vm.qemu import MachineSpec, ovmf
from bootstrapperd.model import ClusterModel
from tests.conftest import EXAMPLE, need, need_vm_lab
from tests.ignition import ignition_files

pytestmark = pytest.mark.netns

MASTER = MachineSpec("master1", "52:54:00:77:00:10")
WORKER = MachineSpec("worker1", "52:54:00:77:00:11")
STRANGER = MachineSpec("stranger", "52:54:00:77:00:99")  # not in the model: a worker by default
BIOS_MACHINES = (MASTER, WORKER, STRANGER)
BOOT_TIMEOUT = 420.0  # three machines under TCG on two cores take well under a minute
DOCKER_HOST = "unix:///nonexistent/bootstrapperd-e2e.sock"


@dataclass
class Boot:
    packed: Packed
    machines: dict[str, Machine]  # by MAC
    nodes: dict[str, dict[str, Any]]  # /api/v1/nodes/<mac>, by MAC
    daemon_log: Path

    @property
    def model(self) -> ClusterModel:
        return self.packed.model


def _describe(workdir: Path) -> Path:
    """The bundled example, with the registry off (nothing here pulls images)."""
    description = workdir / "cluster-desc.yml"
    description.write_text(EXAMPLE.read_text() + "\nregistry:\n  mode: off\n")
    return description


def _boot(workdir: Path, specs: tuple[MachineSpec, ...]) -> Boot:
    packed = pack_bsroot(_describe(workdir), workdir)
    daemon_log = workdir / "daemon.log"
    with NetLab() as netlab, daemon_log.open("wb") as output:
        lab = BootLab(netlab, packed.model, workdir)
        lab.start_daemon(packed.bsroot, output, env={**os.environ, "DOCKER_HOST": DOCKER_HOST})
        machines = [lab.add_machine(spec) for spec in specs]
        lab.power_on(machines)
        lab.wait(machines, BOOT_TIMEOUT)
        nodes = {m.mac: lab.api(f"/api/v1/nodes/{m.mac}") for m in machines}
    return Boot(packed, {m.mac: m for m in machines}, nodes, daemon_log)


def _explain(boot: Boot, machine: Machine) -> str:
    """What to look at when an assertion about ``machine`` fails."""
    serial = machine.serial.read_bytes().decode(errors="replace")[-3000:]
    timeline = [f"{e['source']}:{e['kind']}" for e in boot.nodes[machine.mac]["timeline"]]
    return f"\n--- {machine.name} serial (tail) ---\n{serial}\n--- timeline ---\n{timeline}"


@pytest.fixture(scope="module")
def bios(tmp_path_factory: pytest.TempPathFactory) -> Boot:
    need_vm_lab()
    return _boot(tmp_path_factory.mktemp("e2e-bios"), BIOS_MACHINES)


def _events(boot: Boot, mac: str, source: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in boot.nodes[mac]["timeline"]
        if e["source"] == source and (kind is None or e["kind"] == kind)
    ]


def _config(boot: Boot, machine: Machine) -> dict[str, Any]:
    found = read_config(machine.disk)
    assert found is not None, "no config on the disk" + _explain(boot, machine)
    kind, data = found
    assert kind == "ignition"
    config: dict[str, Any] = json.loads(data)
    return config


def _file(config: dict[str, Any], path: str) -> str | None:
    return ignition_files(config).get(path)


def _lease_address(machine: Machine) -> IPv4Address:
    line = next(m for m in machine.marks() if m.startswith("lease "))
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    return IPv4Address(fields["ip"])


@pytest.mark.parametrize("spec", BIOS_MACHINES, ids=lambda s: s.name)
def test_machine_installed(bios: Boot, spec: MachineSpec) -> None:
    machine = bios.machines[spec.mac]
    assert not machine.timed_out, f"{machine.name} did not power off" + _explain(bios, machine)
    assert machine.outcome() == "installed", _explain(bios, machine)
    node = bios.nodes[spec.mac]
    assert node["stage"] == "installed", _explain(bios, machine)
    assert not node["failed"], _explain(bios, machine)
    kinds = [f"{e['source']}:{e['kind']}" for e in node["timeline"]]
    order = ["dhcp:ack", "http:ipxe-script", "http:kernel", "http:initrd", "install:note"]
    order += ["http:install.sh", "install:installing", "http:ignition", "http:install-image"]
    order += ["install:installed"]
    positions = [kinds.index(step) for step in order if step in kinds]
    assert [kinds[p] for p in positions] == order, f"timeline out of order: {kinds}"
    assert positions == sorted(positions), f"timeline out of order: {kinds}"


@pytest.mark.parametrize("spec", BIOS_MACHINES, ids=lambda s: s.name)
def test_address(bios: Boot, spec: MachineSpec) -> None:
    machine = bios.machines[spec.mac]
    address = _lease_address(machine)
    node = bios.model.node(spec.mac)
    if node is not None and node.ip is not None:
        assert address == node.ip == IPv4Address("10.77.0.10")
    else:
        assert address in bios.model.pool
    assert bios.nodes[spec.mac]["ip"] == str(address)
    acks = _events(bios, spec.mac, "dhcp", "ack")
    assert acks
    assert all(IPv4Address(a["ip"]) == address for a in acks)


@pytest.mark.parametrize("spec", BIOS_MACHINES, ids=lambda s: s.name)
def test_boot_file_for_the_firmware(bios: Boot, spec: MachineSpec) -> None:
    """The NIC's ROM is iPXE: it gets its own script's URL, never a binary to chain-load."""
    boots = [a for a in _events(bios, spec.mac, "dhcp", "ack") if "boot_file" in a]
    assert boots, _explain(bios, bios.machines[spec.mac])
    assert {(a["firmware"], a["boot_file"]) for a in boots} == {
        ("ipxe", f"http://10.77.0.1/ipxe/{spec.mac}")
    }


@pytest.mark.parametrize("spec", BIOS_MACHINES, ids=lambda s: s.name)
def test_the_config_is_its_own(bios: Boot, spec: MachineSpec) -> None:
    machine = bios.machines[spec.mac]
    config = _config(bios, machine)
    hostname = bios.model.hostname_for_mac(spec.mac)
    assert _file(config, "/etc/hostname") == f"{hostname}\n"
    node = bios.model.node(spec.mac)
    master = node is not None and node.kube_master
    assert (_file(config, "/etc/kubernetes/manifests/kube-apiserver.yaml") is not None) is master
    assert (_file(config, "/etc/kubernetes/ssl/apiserver-key.pem") is not None) is master
    pem = _file(config, "/etc/kubernetes/ssl/worker.pem")
    assert pem is not None
    cert = x509.load_pem_x509_certificate(pem.encode())
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == hostname
    # The key was made on the machine and matches the certificate the bootstrapper signed.
    key = _file(config, "/etc/kubernetes/ssl/worker-key.pem")
    assert key is not None
    private = serialization.load_pem_private_key(key.encode(), password=None)
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    shared = _file(config, "/etc/kubernetes/ssl/service-account-key.pem")
    assert (shared is not None) is master  # given to masters only, against the install token
    roles = [str(role) for role in node.roles] if node is not None else ["worker"]
    assert bios.nodes[spec.mac]["roles"] == roles


def test_the_disk_holds_the_image(bios: Boot) -> None:
    image = bios.packed.release.image
    for machine in bios.machines.values():
        with machine.disk.open("rb") as disk:
            assert disk.read(len(image)) == image, f"{machine.name}: the disk lacks the image"


@pytest.mark.parametrize("spec", BIOS_MACHINES, ids=lambda s: s.name)
def test_names_resolved_through_our_dns(bios: Boot, spec: MachineSpec) -> None:
    machine = bios.machines[spec.mac]
    address = _lease_address(machine)
    notes = [e["message"] for e in _events(bios, spec.mac, "install", "note")]
    assert notes, _explain(bios, machine)
    assert notes[-1].startswith("resolved,"), _explain(bios, machine)
    resolved = dict(item.split(":", 1) for item in notes[-1].split(",")[1:])
    fqdn = f"{bios.model.hostname_for_mac(spec.mac)}.{bios.model.domain}"
    assert resolved[fqdn] == str(address)
    assert resolved["master1.cluster.example"] == "10.77.0.10"


def test_boot_times(bios: Boot, request: pytest.FixtureRequest) -> None:
    """QEMU start → config fetched, per machine (reported, never asserted on)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = []
    for machine in bios.machines.values():
        fetched = _events(bios, machine.mac, "http", "ignition")
        assert fetched, _explain(bios, machine)
        to_config = fetched[0]["at"] - machine.started
        assert machine.ended is not None
        lines.append(
            f"{machine.name} ({machine.accel}): QEMU start -> config fetched {to_config:.1f} s, "
            f"-> powered off {machine.ended - machine.started:.1f} s"
        )
    if reporter is not None:
        reporter.write_line("\nVM boot times (three machines at once): " + "; ".join(lines))


def test_uefi_machine(tmp_path_factory: pytest.TempPathFactory) -> None:
    """OVMF's own PXE client: DHCP → ipxe.efi over TFTP → iPXE → the same path as BIOS."""
    need_vm_lab()
    need(ovmf() is not None, "OVMF is not installed (Debian package ovmf)")
    spec = MachineSpec("uefi-worker", WORKER.mac, firmware="uefi")
    boot = _boot(tmp_path_factory.mktemp("e2e-uefi"), (spec,))
    machine = boot.machines[spec.mac]
    assert machine.outcome() == "installed", _explain(boot, machine)
    boots = [
        (a.get("firmware"), a["boot_file"])
        for a in _events(boot, spec.mac, "dhcp", "ack")
        if "boot_file" in a
    ]
    assert boots[0] == ("uefi-x64", "ipxe.efi"), boots
    assert ("ipxe", f"http://10.77.0.1/ipxe/{spec.mac}") in boots
    transfers = [e["file"] for e in _events(boot, spec.mac, "tftp", "transfer")]
    assert "ipxe.efi" in transfers
    image = boot.packed.release.image
    with machine.disk.open("rb") as disk:
        assert disk.read(len(image)) == image
    assert _file(_config(boot, machine), "/etc/hostname") == "worker1\n"
    assert boot.nodes[spec.mac]["stage"] == "installed"


def test_nothing_left_behind_after_a_failure(tmp_path: Path) -> None:
    """A failure in the middle of a boot still removes the VMs, the daemon, the namespaces."""
    need_vm_lab()
    packed = pack_bsroot(_describe(tmp_path), tmp_path)
    pids: list[int] = []
    names: list[str] = []
    # The block is a boot raising in its middle: what is checked is what the teardown left.
    with (  # noqa: PT012
        pytest.raises(RuntimeError, match="in the middle"),
        NetLab() as netlab,
        (tmp_path / "daemon.log").open("wb") as output,
    ):
        lab = BootLab(netlab, packed.model, tmp_path)
        names = [ns.name for ns in netlab.namespaces]
        env = {**os.environ, "DOCKER_HOST": DOCKER_HOST}
        daemon = lab.start_daemon(packed.bsroot, output, env)
        machine = lab.add_machine(WORKER)
        lab.power_on([machine])
        assert machine.proc is not None
        assert machine.running()
        pids = [daemon.pid, machine.proc.pid]
        raise RuntimeError("in the middle of the boot")
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert names
    assert not any(name in listing for name in names)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
