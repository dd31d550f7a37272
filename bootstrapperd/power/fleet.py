"""One action on one machine (``control``) and on many (``control_many``).

``control`` never raises for a BMC's problems: each ends as a ``PowerResult`` with a one-line
message and its kind, and the timeout is a hard one (the IPMI driver's thread is left behind,
bounded, see ``ipmi.py``). ``control_many`` bounds how many BMCs are worked at once, staggers
the starts of actions that draw power (``on``, ``cycle``) so a rack does not boot at once, and
gives each machine its own timeout, so one dead BMC delays no other machine beyond holding one
of the ``concurrency`` places.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import ipmi, redfish
from .base import (
    BMC,
    Action,
    Attempt,
    Driver,
    Failure,
    PowerError,
    PowerResult,
    PowerState,
    Protocol,
)

__all__ = ["DEFAULT_TIMEOUT", "Progress", "control", "control_many"]

log = logging.getLogger("bootstrapperd.power")

DEFAULT_TIMEOUT = 20.0  # seconds for one action on one BMC
DRIVERS: dict[Protocol, Driver] = {Protocol.IPMI: ipmi.drive, Protocol.REDFISH: redfish.drive}
POWER_DRAWING = frozenset({Action.ON, Action.CYCLE})

K = TypeVar("K", bound=Hashable)


async def control(
    bmc: BMC,
    action: Action,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (each BMC's own hard limit, by design)
    driver: Driver | None = None,
) -> PowerResult:
    """Carry out ``action`` on ``bmc`` within ``timeout`` seconds. Never raises for the BMC's
    problems (unreachable, bad credentials, refused, timeout); ``driver`` replaces the
    protocol's driver (tests)."""
    drive = driver if driver is not None else DRIVERS[Protocol(bmc.protocol)]
    attempt = Attempt(timeout)
    try:
        async with asyncio.timeout(timeout):
            return await drive(bmc, Action(action), attempt)
    except PowerError as exc:
        return PowerResult(False, exc.state, exc.message, exc.failure)
    except TimeoutError:
        if attempt.answered:
            return PowerResult(
                False,
                PowerState.UNKNOWN,
                f"{bmc} answered but did not finish {action} within {timeout:g} s; try again, "
                "or reset the BMC if it keeps hanging",
                Failure.TIMEOUT,
            )
        return PowerResult(
            False,
            PowerState.UNKNOWN,
            f"{bmc} did not answer within {timeout:g} s: check its address, that it is on the "
            "network and that it is powered",
            Failure.UNREACHABLE,
        )
    except Exception as exc:  # a library's surprise must not end the caller's loop
        log.warning("power %s on %s failed unexpectedly", action, bmc, exc_info=True)
        return PowerResult(
            False,
            PowerState.UNKNOWN,
            f"{bmc}: {action} failed unexpectedly: {type(exc).__name__}: {exc}",
            Failure.ERROR,
        )


@dataclass(frozen=True)
class Progress(Generic[K]):
    """One step of ``control_many``: ``result`` is None when the machine's action starts and
    its outcome when it is done; ``done`` of ``total`` machines are finished."""

    key: K
    result: PowerResult | None
    done: int
    total: int


async def control_many(
    targets: Mapping[K, BMC],
    action: Action,
    *,
    concurrency: int = 8,
    stagger: float = 0.0,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (per machine, not for the whole run)
    progress: Callable[[Progress[K]], None] | None = None,
    driver: Driver | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> dict[K, PowerResult]:
    """``action`` on every target, at most ``concurrency`` at once, in the mapping's order.
    For ``on`` and ``cycle`` each start waits ``stagger`` seconds after the one before (a
    failed start does not stretch that: it frees its place at once). Returns every target's
    result; ``progress`` is called for each start and each outcome."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    action = Action(action)
    places = asyncio.Semaphore(concurrency)
    results: dict[K, PowerResult] = {}
    total = len(targets)

    def report(key: K, result: PowerResult | None) -> None:
        if progress is None:
            return
        try:
            progress(Progress(key, result, len(results), total))
        except Exception:  # the caller's display must not stop the rack
            log.warning("power progress callback failed", exc_info=True)

    async def one(key: K, bmc: BMC) -> None:
        try:
            result = await control(bmc, action, timeout=timeout, driver=driver)
        finally:
            places.release()
        results[key] = result
        report(key, result)

    async with asyncio.TaskGroup() as group:
        for index, (key, bmc) in enumerate(targets.items()):
            if index and stagger > 0 and action in POWER_DRAWING:
                await sleep(stagger)
            await places.acquire()
            report(key, None)
            group.create_task(one(key, bmc), name=f"power {action} {key}")
    return {key: results[key] for key in targets}
