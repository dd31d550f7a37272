"""The power library without BMCs: fake drivers for the bounds, the stagger and the failures of
``control_many``; the IPMI thread bound; the messages. Order and overlap are asserted through
events, never through durations."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bootstrapperd.power import (
    BMC,
    Action,
    Failure,
    PowerResult,
    PowerState,
    Progress,
    Protocol,
    control,
    control_many,
    ipmi,
    redfish,
)
from bootstrapperd.power.base import Attempt, PowerError


def target(address: str, protocol: Protocol = Protocol.IPMI) -> BMC:
    return BMC(address=address, protocol=protocol, username="admin", password="hunter2")


def ok(bmc: BMC) -> PowerResult:
    return PowerResult(True, PowerState.ON, f"{bmc}: done")


def test_the_password_stays_out_of_repr_and_the_name_says_where() -> None:
    bmc = target("10.0.0.5")
    assert "hunter2" not in repr(bmc)
    assert str(bmc) == "BMC 10.0.0.5:623 (ipmi)"
    assert str(target("fd00::5", Protocol.REDFISH)) == "BMC [fd00::5]:443 (redfish)"


async def test_control_turns_every_bmc_problem_into_a_result() -> None:
    async def refusing(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        raise PowerError(Failure.REFUSED, f"{bmc} refused {action}", PowerState.OFF)

    async def broken(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        raise KeyError("Members")

    refused = await control(target("a"), Action.ON, timeout=5, driver=refusing)
    assert refused == PowerResult(
        False, PowerState.OFF, "BMC a:623 (ipmi) refused on", Failure.REFUSED
    )
    surprise = await control(target("b"), Action.STATUS, timeout=5, driver=broken)
    assert (surprise.ok, surprise.failure) == (False, Failure.ERROR)
    assert surprise.message == "BMC b:623 (ipmi): status failed unexpectedly: KeyError: 'Members'"


async def test_a_timeout_says_whether_the_bmc_ever_answered() -> None:
    never = asyncio.Event()

    async def silent(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        await never.wait()
        raise AssertionError("unreachable")

    async def stuck(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        attempt.answered = True
        await never.wait()
        raise AssertionError("unreachable")

    quiet = await control(target("a"), Action.ON, timeout=0.05, driver=silent)
    assert (quiet.failure, quiet.state) == (Failure.UNREACHABLE, PowerState.UNKNOWN)
    assert quiet.message.startswith("BMC a:623 (ipmi) did not answer within 0.05 s")
    hung = await control(target("b"), Action.ON, timeout=0.05, driver=stuck)
    assert hung.failure == Failure.TIMEOUT
    assert hung.message.startswith("BMC b:623 (ipmi) answered but did not finish on within 0.05 s")


async def test_control_many_keeps_to_its_concurrency() -> None:
    running = 0
    most = 0
    release = asyncio.Event()
    three_waiting = asyncio.Event()

    async def fake(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == 3:
            three_waiting.set()
        await release.wait()
        running -= 1
        return ok(bmc)

    targets = {f"m{i}": target(f"10.0.0.{i}") for i in range(7)}
    task = asyncio.create_task(
        control_many(targets, Action.STATUS, concurrency=3, timeout=30, driver=fake)
    )
    await three_waiting.wait()
    await asyncio.sleep(0)  # give a fourth start every chance to happen, were it allowed
    assert running == 3
    release.set()
    results = await task
    assert most == 3
    assert list(results) == list(targets)
    assert all(r.ok for r in results.values())


async def test_a_hanging_bmc_blocks_no_other_machine() -> None:
    others_done = asyncio.Event()
    finished: list[str] = []

    async def fake(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        if bmc.address == "dead":
            await asyncio.Event().wait()  # forever: only its own timeout ends it
        finished.append(bmc.address)
        if len(finished) == 3:
            others_done.set()
        return ok(bmc)

    targets = {name: target(name) for name in ("dead", "a", "b", "c")}
    steps: list[Progress[str]] = []
    results = await control_many(
        targets,
        Action.ON,
        concurrency=2,
        timeout=0.5,
        driver=fake,
        progress=steps.append,
    )
    assert others_done.is_set()
    assert [k for k, r in results.items() if r.ok] == ["a", "b", "c"]
    assert results["dead"].failure == Failure.UNREACHABLE
    done_order = [s.key for s in steps if s.result is not None]
    assert done_order == ["a", "b", "c", "dead"]  # the others did not wait for the dead one
    assert [s.done for s in steps if s.result is not None] == [1, 2, 3, 4]
    assert {s.total for s in steps} == {4}


async def test_on_is_staggered_between_starts_and_status_is_not() -> None:
    log: list[str] = []

    async def fake(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        log.append(f"act {bmc.address}")
        return ok(bmc)

    async def sleep(seconds: float) -> None:
        log.append(f"sleep {seconds:g}")
        await asyncio.sleep(0)

    def seen(step: Progress[str]) -> None:
        if step.result is None:
            log.append(f"start {step.key}")

    targets = {name: target(name) for name in ("a", "b", "c")}
    await control_many(
        targets, Action.ON, stagger=2.5, concurrency=8, driver=fake, sleep=sleep, progress=seen
    )
    starts_and_sleeps = [entry for entry in log if not entry.startswith("act")]
    assert starts_and_sleeps == ["start a", "sleep 2.5", "start b", "sleep 2.5", "start c"]
    log.clear()
    await control_many(targets, Action.STATUS, stagger=2.5, driver=fake, sleep=sleep)
    assert not any(entry.startswith("sleep") for entry in log)


async def test_a_broken_progress_callback_does_not_stop_the_rack() -> None:
    async def fake(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        return ok(bmc)

    def broken(step: Progress[str]) -> None:
        raise RuntimeError("display gone")

    results = await control_many(
        {"a": target("a"), "b": target("b")}, Action.OFF, driver=fake, progress=broken
    )
    assert all(r.ok for r in results.values())


async def test_control_many_refuses_a_concurrency_below_one() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await control_many({"a": target("a")}, Action.ON, concurrency=0)


async def test_a_hung_ipmi_thread_holds_neither_the_loop_nor_more_than_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def hung(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
        entered.set()
        release.wait(30)
        return ok(bmc)

    monkeypatch.setattr(ipmi, "_act", hung)
    monkeypatch.setattr(ipmi, "_slots", threading.BoundedSemaphore(1))
    try:
        first = await control(target("a"), Action.ON, timeout=0.05)
        assert entered.is_set()
        assert first.failure == Failure.UNREACHABLE  # the loop went on past the hung thread
        second = await control(target("b"), Action.ON, timeout=5)
        assert (second.ok, second.failure) == (False, Failure.ERROR)
        assert "IPMI actions are still waiting for BMCs that do not answer" in second.message
    finally:
        release.set()
    for _ in range(500):  # the thread ends once the BMC answers, and gives its slot back
        if ipmi._slots.acquire(blocking=False):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the slot was not given back")


@pytest.mark.parametrize(
    ("text", "failure"),
    [
        ("Incorrect password provided", Failure.CREDENTIALS),
        ("Unauthorized name", Failure.CREDENTIALS),
        ("None", Failure.UNREACHABLE),
        ("", Failure.UNREACHABLE),
        ("timeout", Failure.UNREACHABLE),
        ("Insufficient resources to create new session", Failure.REFUSED),
    ],
)
def test_ipmi_login_errors_are_classified(text: str, failure: Failure) -> None:
    assert ipmi._login_error(target("a"), text).failure == failure


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            b'{"error": {"code": "Base.1.0.GeneralError", "message": "x", '
            b'"@Message.ExtendedInfo": [{"Message": "The request body\\n is invalid."}]}}',
            "The request body is invalid.",
        ),
        (b'{"error": {"message": "Not allowed"}}', "Not allowed"),
        (b"<html>Forbidden</html>", "<html>Forbidden</html>"),
        (b"", "no reason given"),
    ],
)
def test_redfish_errors_are_told_in_the_bmcs_own_words(body: bytes, why: str) -> None:
    assert redfish._why(body) == why
