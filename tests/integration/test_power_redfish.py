"""Power control over Redfish against sushy-tools' emulator (fake driver) on loopback, over TLS
with a CA made for the test: on/off/status/pxe_once, a wrong password, an untrusted
certificate, and the explicit ``insecure``. The fake driver applies a power change 1-11 s after
the request, as hardware does, so states are polled."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootstrapperd.power import BMC, Action, PowerState, Protocol, control
from tests.conftest import need
from tests.power_lab import PASSWORD, USER, RedfishLab, redfish_lab


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RedfishLab]:
    need(importlib.util.find_spec("sushy_tools") is not None, "sushy-tools is not installed")
    with redfish_lab(tmp_path / "redfish") as lab:
        yield lab


def bmc(lab: RedfishLab, **changes: object) -> BMC:
    values: dict[str, object] = {
        "address": "127.0.0.1",
        "port": lab.port,
        "protocol": Protocol.REDFISH,
        "username": USER,
        "password": PASSWORD,
        "ca_file": str(lab.ca_file),
    }
    values.update(changes)
    return BMC(**values)  # type: ignore[arg-type]


async def until_state(target: BMC, state: PowerState) -> None:
    for _ in range(150):  # the fake driver applies a change within 11 s
        result = await control(target, Action.STATUS, timeout=10)
        assert result.ok, result
        if result.state is state:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the system did not reach {state}")


async def test_status_on_off_and_pxe_once(emulator: RedfishLab) -> None:
    target = bmc(emulator)
    status = await control(target, Action.STATUS, timeout=10)
    assert (status.ok, status.state, status.message) == (
        True,
        PowerState.OFF,
        f"BMC 127.0.0.1:{emulator.port} (redfish): power is Off",
    )
    on = await control(target, Action.ON, timeout=10)
    assert on.ok, on
    assert "On requested" in on.message
    await until_state(target, PowerState.ON)
    pxe = await control(target, Action.PXE_ONCE, timeout=10)
    assert pxe.ok, pxe
    assert pxe.message.endswith("next boot from the network, once")
    off = await control(target, Action.OFF, timeout=10)
    assert off.ok, off
    assert "ForceOff requested" in off.message
    await until_state(target, PowerState.OFF)


async def test_pxe_once_sets_the_boot_override(emulator: RedfishLab) -> None:
    import json
    import ssl
    import urllib.request

    target = bmc(emulator)
    assert (await control(target, Action.PXE_ONCE, timeout=10)).ok
    request = urllib.request.Request(
        f"https://127.0.0.1:{emulator.port}/redfish/v1/Systems/{emulator.system}"
    )
    import base64

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=str(emulator.ca_file))

    def read() -> dict[str, Any]:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            answer: dict[str, Any] = json.load(response)
            return answer

    system = await asyncio.to_thread(read)
    assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe"


async def test_cycle_of_a_system_that_is_off_powers_it_on_and_says_so(
    emulator: RedfishLab,
) -> None:
    target = bmc(emulator)
    result = await control(target, Action.CYCLE, timeout=10)
    assert result.ok, result
    assert "was off, so powered on instead of cycled" in result.message
    await until_state(target, PowerState.ON)


async def test_a_wrong_password_is_named_as_such(emulator: RedfishLab) -> None:
    result = await control(bmc(emulator, password="wrong"), Action.ON, timeout=10)
    assert not result.ok
    assert result.failure == "credentials"
    assert result.message == (
        f"BMC 127.0.0.1:{emulator.port} (redfish) rejected user 'admin' (HTTP 401): check "
        "the node's bmc username and its password_file"
    )


async def test_an_untrusted_certificate_fails_unless_insecure_is_explicit(
    emulator: RedfishLab,
) -> None:
    untrusted = await control(bmc(emulator, ca_file=None), Action.STATUS, timeout=10)
    assert not untrusted.ok
    assert untrusted.failure == "tls"
    assert "certificate is not trusted" in untrusted.message
    assert "ca_file" in untrusted.message
    insecure = await control(bmc(emulator, ca_file=None, insecure=True), Action.STATUS, timeout=10)
    assert insecure.ok, insecure


async def test_nothing_listening_is_unreachable(emulator: RedfishLab) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago, and is closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await control(bmc(emulator, port=port), Action.STATUS, timeout=5)
    assert (result.ok, result.failure) == (False, "unreachable")
    assert result.message.startswith(f"BMC 127.0.0.1:{port} (redfish) cannot be reached")
