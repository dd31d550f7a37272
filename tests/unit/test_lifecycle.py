"""Machine states (machines/lifecycle.py) and what a network boot gets because of them: the
install, the machine's own disk (iPXE sanboot on BIOS, exit on UEFI; pxelinux LOCALBOOT), or a
wait for the operator's approval. States survive a restart; unknown ones are bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.bsroot.pki import ClusterPKI
from bootstrapperd.machines.boot import BootAction
from bootstrapperd.machines.events import EventKind, Source
from bootstrapperd.machines.lifecycle import Lifecycle, LifecycleError, MachineState
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.machines.timeline import Timeline
from bootstrapperd.model import ClusterModel, InstallPolicy, load_cluster_text
from bootstrapperd.pack import init_bsroot
from bootstrapperd.render import Renderer
from tests.conftest import EXAMPLE

WORKER = "52:54:00:77:00:11"  # listed in the example
STRANGER = "52:54:00:aa:bb:cc"


def model_with(**replace: str) -> ClusterModel:
    text = EXAMPLE.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return load_cluster_text(text)


APPROVE = {"unknown_machines: allow": "unknown_machines: approve"}
IGNORE = {"unknown_machines: allow": "unknown_machines: ignore"}


class Box:
    """A model that a test can swap (a reload)."""

    def __init__(self, model: ClusterModel) -> None:
        self.model = model

    def __call__(self) -> ClusterModel:
        return self.model


def lifecycle(tmp_path: Path, model: ClusterModel, **kw: Any) -> tuple[Lifecycle, StateDB]:
    db = StateDB(tmp_path / "state" / "bootstrapperd.db")
    return Lifecycle(db, Box(model), **kw), db


def test_defaults_follow_the_description_and_the_unknown_machine_policy(tmp_path: Path) -> None:
    states, _ = lifecycle(tmp_path, model_with())
    assert states.state(WORKER) is MachineState.READY
    assert states.state(STRANGER) is MachineState.READY  # allow
    assert states.boot_action(WORKER) is BootAction.INSTALL
    approve, _ = lifecycle(tmp_path / "a", model_with(**APPROVE))
    assert approve.state(STRANGER) is MachineState.DISCOVERED
    assert approve.boot_action(STRANGER) is BootAction.WAIT
    assert approve.state(WORKER) is MachineState.READY  # listed machines need no approval
    ignore, _ = lifecycle(tmp_path / "i", model_with(**IGNORE))
    assert ignore.state(STRANGER) is None
    assert ignore.boot_action(STRANGER) is None


def test_reports_move_a_machine_to_installed_then_it_boots_its_disk(tmp_path: Path) -> None:
    states, _ = lifecycle(tmp_path, model_with())
    states.observe(WORKER, EventKind.INSTALLING)
    assert states.state(WORKER) is MachineState.INSTALLING
    assert states.boot_action(WORKER) is BootAction.INSTALL  # a reboot mid-install: again
    states.observe(WORKER, EventKind.INSTALLED)
    assert states.state(WORKER) is MachineState.INSTALLED
    assert states.boot_action(WORKER) is BootAction.LOCAL
    states.observe(WORKER, EventKind.NOTE)  # not a report that moves it
    assert states.state(WORKER) is MachineState.INSTALLED


def test_install_policy_always_installs_every_boot(tmp_path: Path) -> None:
    model = model_with(
        **{"ingress_hostnetwork: true": "ingress_hostnetwork: true\ninstall_policy: always"}
    )
    assert model.install_policy is InstallPolicy.ALWAYS
    states, _ = lifecycle(tmp_path, model)
    states.observe(WORKER, EventKind.INSTALLED)
    assert states.state(WORKER) is MachineState.INSTALLED
    assert states.boot_action(WORKER) is BootAction.INSTALL


def test_a_failed_install_tries_again_and_reinstall_sends_installed_back_to_ready(
    tmp_path: Path,
) -> None:
    recorded: list[tuple[Any, ...]] = []
    states, _ = lifecycle(tmp_path, model_with(), record=lambda *a, **kw: recorded.append((*a, kw)))
    states.observe(WORKER, EventKind.INSTALL_FAILED)
    assert states.state(WORKER) is MachineState.FAILED
    assert states.boot_action(WORKER) is BootAction.INSTALL
    states.observe(WORKER, EventKind.INSTALLED)
    entry = states.reinstall(WORKER, by="admin")
    assert entry.state is MachineState.READY
    assert entry.why == "reinstall by admin"
    assert states.boot_action(WORKER) is BootAction.INSTALL
    (event,) = [r for r in recorded if r[3] is EventKind.STATE]
    assert event[0] == WORKER
    assert event[2] is Source.ADMIN
    assert event[4] == {"state": "ready", "was": "installed", "why": "reinstall by admin"}


def test_approve_is_the_only_way_out_of_discovered(tmp_path: Path) -> None:
    states, _ = lifecycle(tmp_path, model_with(**APPROVE))
    states.observe(STRANGER, EventKind.INSTALLED)  # a report cannot approve a machine
    assert states.state(STRANGER) is MachineState.DISCOVERED
    with pytest.raises(LifecycleError, match="approve it first"):
        states.reinstall(STRANGER, by="admin")
    states.approve(STRANGER, by="admin")
    assert states.state(STRANGER) is MachineState.READY
    assert states.boot_action(STRANGER) is BootAction.INSTALL
    with pytest.raises(LifecycleError, match="is ready, not discovered"):
        states.approve(STRANGER, by="admin")
    with pytest.raises(LifecycleError, match="not served"):
        lifecycle(tmp_path / "i", model_with(**IGNORE))[0].approve(STRANGER, by="admin")


def test_states_survive_a_restart(tmp_path: Path) -> None:
    states, db = lifecycle(tmp_path, model_with())
    states.observe(WORKER, EventKind.INSTALLED)
    db.close()
    again, _ = lifecycle(tmp_path, model_with())
    assert again.state(WORKER) is MachineState.INSTALLED
    assert again.entry(WORKER) is not None
    assert again.entry(WORKER).why == "report installed"  # type: ignore[union-attr]


def test_a_reload_that_stops_serving_a_machine_hides_its_state(tmp_path: Path) -> None:
    box = Box(model_with())
    states = Lifecycle(StateDB(tmp_path / "db"), box)
    states.observe(STRANGER, EventKind.INSTALLED)
    assert states.state(STRANGER) is MachineState.INSTALLED
    box.model = model_with(**IGNORE)
    assert states.state(STRANGER) is None
    assert states.boot_action(STRANGER) is None


def test_unknown_machines_kept_are_bounded(tmp_path: Path) -> None:
    states, db = lifecycle(tmp_path, model_with(), max_unknown=3)
    strangers = [f"52:54:00:aa:00:{i:02x}" for i in range(5)]
    for mac in strangers:
        states.observe(mac, EventKind.INSTALLED)
    states.observe(WORKER, EventKind.INSTALLED)  # listed: never forgotten
    assert [states.state(m) for m in strangers] == [MachineState.READY] * 2 + [
        MachineState.INSTALLED
    ] * 3
    assert states.state(WORKER) is MachineState.INSTALLED
    assert states.counters["unknown_forgotten"] == 2
    db.close()
    assert len(lifecycle(tmp_path, model_with())[0].recorded()) == 4


def test_booting_records_a_local_boot_and_a_wait_in_the_timeline(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "db")
    box = Box(model_with(**APPROVE))
    timeline = Timeline(db)
    states = Lifecycle(db, box, record=timeline.record)
    timeline.on_event = states.observe
    timeline.record(WORKER, 1.0, Source.INSTALL, EventKind.INSTALLED)
    assert states.state(WORKER) is MachineState.INSTALLED  # through the timeline's hook
    assert states.booting(WORKER, Source.HTTP) is BootAction.LOCAL
    assert states.booting(STRANGER, Source.TFTP) is BootAction.WAIT
    assert timeline.of(WORKER)[-1].kind == EventKind.LOCAL_BOOT
    assert timeline.progress(WORKER).name == "installed"  # a local boot stays installed
    assert timeline.of(STRANGER)[-1].kind == EventKind.WAITING


# ---- the scripts --------------------------------------------------------------------------


@pytest.fixture
def renderer(tmp_path: Path) -> tuple[Renderer, ClusterModel]:
    root = init_bsroot(EXAMPLE, tmp_path / "bsroot")
    return Renderer(Bsroot(root.root), ClusterPKI(root.tls)), model_with()


SERVER = "http://10.77.0.1"


def test_an_installed_machine_gets_a_script_that_boots_its_own_disk(
    renderer: tuple[Renderer, ClusterModel],
) -> None:
    r, model = renderer
    script = r.ipxe(model, WORKER, SERVER, None, BootAction.LOCAL)
    assert script is not None
    lines = script.splitlines()
    assert lines[0] == "#!ipxe"
    assert "iseq ${platform} efi && exit 0 ||" in lines  # UEFI: on to the next boot entry
    assert "sanboot --no-describe --drive 0x80 || exit 0" in lines  # BIOS: the first disk
    assert not any(line.startswith(("kernel", "initrd", "boot")) for line in lines)
    assert "token" not in script
    pxelinux = r.pxelinux(model, WORKER, SERVER, None, BootAction.LOCAL)
    assert pxelinux is not None
    assert "LOCALBOOT 0" in pxelinux
    assert "KERNEL" not in pxelinux


def test_a_discovered_machine_waits_and_asks_again(renderer: tuple[Renderer, ClusterModel]) -> None:
    r, model = renderer
    script = r.ipxe(model, STRANGER, SERVER, None, BootAction.WAIT)
    assert script is not None
    assert "sleep 15" in script
    assert f"chain --replace --autofree {SERVER}/ipxe/{STRANGER.replace(':', '-')}" in script
    assert "kernel" not in script
    install = r.ipxe(model, WORKER, SERVER, "tok", BootAction.INSTALL)
    assert install is not None
    assert "bootstrapperd.token=tok" in install
    assert "sanboot" not in install
