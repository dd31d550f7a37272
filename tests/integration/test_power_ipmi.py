"""Power control over IPMI against a real emulated BMC: OpenIPMI's ipmi_sim, in a namespace of
its own, powering a real QEMU VM (see tests/power_lab.py); the control code runs in another
namespace and reaches it over a veth, as the bootstrapper reaches a rack's BMCs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.power_lab import DEAD_ADDRESS, IpmiLab, ipmi_bmc, ipmi_lab

pytestmark = pytest.mark.netns


@pytest.fixture
def bmc_lab(netlab: NetLab, tmp_path: Path) -> Iterator[IpmiLab]:
    need_tools("ipmi_sim", "qemu-system-x86_64", "ss")
    with ipmi_lab(netlab, tmp_path / "ipmi") as lab:
        yield lab


def until(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not seen within {limit} s: {what}"
        time.sleep(0.1)


def one(lab: IpmiLab, action: str, **bmc: str) -> dict[str, object]:
    result: dict[str, object] = lab.control({"n": ipmi_bmc(**bmc)}, action)["results"]["n"]
    return result


def test_on_status_off_start_and_stop_the_vm(bmc_lab: IpmiLab) -> None:
    assert one(bmc_lab, "status") == {
        "ok": True,
        "state": "off",
        "message": "BMC 10.98.0.2:623 (ipmi): power is off",
        "failure": None,
    }
    assert bmc_lab.qemu() is None
    on = one(bmc_lab, "on")
    assert on["ok"], on
    vm = bmc_lab.qemu()
    assert vm is not None
    assert "ipmi-bmc-extern" in vm
    assert one(bmc_lab, "status")["state"] == "on"
    off = one(bmc_lab, "off")
    assert off["ok"], off
    assert bmc_lab.qemu() is None
    assert one(bmc_lab, "status")["state"] == "off"
    assert "set power 1" in bmc_lab.events()
    assert "set power 0" in bmc_lab.events()


def test_pxe_once_makes_the_next_boot_and_only_that_one_from_the_network(
    bmc_lab: IpmiLab,
) -> None:
    assert one(bmc_lab, "on")["ok"]
    first = bmc_lab.qemu()
    assert first is not None
    assert "once=n" not in first
    pxe = one(bmc_lab, "pxe_once")
    assert pxe == {
        "ok": True,
        "state": "on",
        "message": "BMC 10.98.0.2:623 (ipmi): next boot from the network, once",
        "failure": None,
    }
    assert "set boot pxe" in bmc_lab.events()
    cycled = one(bmc_lab, "cycle")
    assert cycled["ok"], cycled
    assert "power cycle requested" in str(cycled["message"])
    until(lambda: "once=n" in (bmc_lab.qemu() or ""), "the VM started with -boot once=n")
    # The flags were good for one boot: the next cycle boots as configured.
    assert one(bmc_lab, "cycle")["ok"]
    until(
        lambda: (vm := bmc_lab.qemu()) is not None and "once=n" not in vm,
        "the VM started again without the network-boot override",
    )


def test_cycle_of_a_machine_that_is_off_powers_it_on_and_says_so(bmc_lab: IpmiLab) -> None:
    result = one(bmc_lab, "cycle")
    assert result["ok"], result
    assert result["state"] == "on"
    assert "was off, so powered on instead of cycled" in str(result["message"])
    assert bmc_lab.qemu() is not None


def test_a_wrong_password_is_named_as_such(bmc_lab: IpmiLab) -> None:
    result = one(bmc_lab, "on", password="not-the-password")
    assert result == {
        "ok": False,
        "state": "unknown",
        "message": "BMC 10.98.0.2:623 (ipmi) rejected user 'admin' (Incorrect password "
        "provided): check the node's bmc username and its password_file",
        "failure": "credentials",
    }
    assert bmc_lab.qemu() is None


def test_a_dead_bmc_fails_within_its_timeout_and_blocks_no_other(bmc_lab: IpmiLab) -> None:
    answer = bmc_lab.control(
        {"dead": ipmi_bmc(address=DEAD_ADDRESS), "good": ipmi_bmc()},
        "on",
        timeout=6.0,
        concurrency=2,
    )
    good, dead = answer["results"]["good"], answer["results"]["dead"]
    assert good["ok"], good
    assert bmc_lab.qemu() is not None
    # Whichever gives up first, pyghmi's login retries or the 6 s timeout, says the same.
    assert (dead["ok"], dead["state"], dead["failure"]) == (False, "unknown", "unreachable")
    assert str(dead["message"]).startswith("BMC 10.98.0.3:623 (ipmi) did not answer"), dead
    assert "check its address" in str(dead["message"])
    # The good machine was done while the dead one was still being waited for.
    steps = answer["progress"]
    assert steps.index(["good", "done"]) < steps.index(["dead", "done"])
    assert steps[:2] == [["dead", "start"], ["good", "start"]]
