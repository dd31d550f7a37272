"""Power through the daemon, as the operator uses it: ``nodes[].bmc`` in the description (the
password in a 0600 file), ``bootstrapperd power`` and ``reinstall --power-cycle`` over the admin
socket, the daemon asking a real emulated BMC (ipmi_sim powering a QEMU VM, tests/power_lab.py)
and a dead one, each machine's result on its own line and in its timeline, neither blocking
the other."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.daemon_proc import DaemonProcess, bootstrapperd_command
from tests.integration.dhcp_lab import wait_until
from tests.power_lab import BMC_ADDRESS, DEAD_ADDRESS, PASSWORD, USER, IpmiLab, ipmi_lab

MASTER = "52:54:00:77:00:10"  # master1
WORKER = "52:54:00:77:00:11"  # worker1
NO_BMC = "52:54:00:77:00:12"


def with_bmcs(bsroot: Path, password_file: Path) -> None:
    """master1's BMC is the emulated one; worker1's answers nowhere."""
    desc = bsroot / "config" / "cluster-desc.yml"
    text = desc.read_text()
    for mac, address in ((MASTER, BMC_ADDRESS), ("52-54-00-77-00-11", DEAD_ADDRESS)):
        entry = f'  - mac: "{mac}"'
        assert entry in text, entry
        bmc = (
            f"{entry}\n    bmc:\n      address: {address}\n      username: {USER}\n"
            f"      password_file: {password_file}\n"
        )
        text = text.replace(entry, bmc.rstrip("\n"), 1)
    desc.write_text(text)


def until(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not seen within {limit} s: {what}"
        time.sleep(0.1)


@pytest.fixture
def rack(netlab: NetLab, bsroot: Path, tmp_path: Path) -> Iterator[tuple[IpmiLab, Path]]:
    need_tools("ipmi_sim", "qemu-system-x86_64", "ss")
    password = tmp_path / "bmc.password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    with_bmcs(bsroot, password)
    with ipmi_lab(netlab, tmp_path / "ipmi") as lab:
        # The bootstrapper: its cluster address on a veth of its own (no machine on it here),
        # the BMC network on the lab's veth.
        lab.admin.ip("link", "add", "bs0", "type", "veth", "peer", "name", "bs1")
        lab.admin.ip("addr", "add", "10.77.0.1/24", "dev", "bs0")
        lab.admin.ip("link", "set", "bs0", "up")
        lab.admin.ip("link", "set", "bs1", "up")
        daemon = DaemonProcess(lab.admin, bsroot)
        wait_until(
            lambda: "admin channel" in daemon.output or daemon.proc.poll() is not None,
            what="the admin channel",
        )
        assert daemon.proc.poll() is None, daemon.output
        yield lab, bsroot


def operator(bsroot: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*bootstrapperd_command(), *args[:1], "--bsroot", str(bsroot), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )


def timeline(lab: IpmiLab, bsroot: Path, mac: str) -> list[dict[str, object]]:
    listed = json.loads(operator(bsroot, "machines", "--json").stdout)
    assert any(m["mac"] == mac for m in listed)
    result = lab.admin.run(["curl", "-fsS", f"http://10.77.0.1/api/v1/nodes/{mac}"], check=True)
    events: list[dict[str, object]] = json.loads(result.stdout)["timeline"]
    return [e for e in events if e["kind"] == "power"]


def test_power_through_the_bmcs_one_line_each_and_none_blocks_another(
    rack: tuple[IpmiLab, Path],
) -> None:
    lab, bsroot = rack
    status = operator(bsroot, "power", MASTER, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout == (
        f"{MASTER}: power status: ok: BMC {BMC_ADDRESS}:623 (ipmi): power is off\n"
    )

    every = operator(bsroot, "power", "--all", "--stagger", "0", "on")
    assert every.returncode == 1  # worker1's BMC answers nowhere
    lines = dict(line.split(": ", 1) for line in every.stdout.splitlines())
    assert lines[MASTER].startswith("power on: ok:"), every.stdout
    assert lines[WORKER].startswith("power on: FAILED (unreachable):"), every.stdout
    assert lab.qemu() is not None  # the emulated BMC started its VM
    status_event, master_event = timeline(lab, bsroot, MASTER)
    assert (status_event["action"], status_event["state"]) == ("status", "off")
    assert master_event["source"] == "admin"
    assert (master_event["action"], master_event["ok"], master_event["failure"]) == (
        "on",
        True,
        None,
    )
    (worker_event,) = timeline(lab, bsroot, WORKER)
    assert (worker_event["ok"], worker_event["failure"]) == (False, "unreachable")
    assert str(worker_event["message"]).startswith(f"BMC {DEAD_ADDRESS}:623 (ipmi) did not answer")

    no_bmc = operator(bsroot, "power", NO_BMC, "on")
    assert no_bmc.returncode == 1
    assert no_bmc.stdout.strip() == (
        f"{NO_BMC}: power on: FAILED (error): no bmc in the description (nodes[].bmc)"
    )

    # Reinstall with a power cycle: ready, next boot from the network once, cycled.
    again = operator(bsroot, "reinstall", "--power-cycle", MASTER)
    assert again.returncode == 0, again.stdout + again.stderr
    out = again.stdout.splitlines()
    assert out[0] == f"{MASTER}: ready (reinstall by admin)"
    assert out[1].startswith(f"{MASTER}: power pxe-once: ok:")
    assert out[2].startswith(f"{MASTER}: power cycle: ok:")
    until(lambda: "once=n" in (lab.qemu() or ""), "the VM restarted to boot from the network")
    off = operator(bsroot, "power", MASTER, "off")
    assert off.returncode == 0, off.stderr
    until(lambda: lab.qemu() is None, "the VM stopped")


def test_bad_power_commands_are_one_line_and_exit_2(rack: tuple[IpmiLab, Path]) -> None:
    _, bsroot = rack
    for args, says in (
        (("power", MASTER, "reboot"), "'reboot' is not an action"),
        (("power", "on"), "name the machines or pass --all"),
        (("power", "zz", "on"), "'zz' is not a MAC address"),
        (("power", "--all", MASTER, "on"), "name the machines or pass --all (not both)"),
    ):
        result = operator(bsroot, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1
        assert says in result.stderr
