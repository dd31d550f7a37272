"""IPMI 2.0 over LAN (RMCP+) through pyghmi, OpenStack's IPMI library.

pyghmi is synchronous, so each action runs in a thread of its own, and the caller waits on the
event loop, never in it: ``control``'s timeout ends the wait whatever the thread does. A thread
that outlives its timeout finishes by pyghmi's own retry limits (a few seconds) and then logs
out; meanwhile it holds one of ``MAX_THREADS`` slots, so BMCs that hang cannot grow the number
of threads without bound: with every slot held, an action fails at once, saying so.

The commands are the standard chassis ones, sent raw (no vendor extensions): Get Chassis Status
(power state), Chassis Control (up, down, power cycle), Set System Boot Options parameter 5
(boot flags: valid, next boot only, device PXE) for ``pxe_once``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from pyghmi import exceptions as pyghmi_exceptions  # type: ignore[import-untyped]
from pyghmi.ipmi import command as pyghmi_command  # type: ignore[import-untyped]
from pyghmi.ipmi.private import session as pyghmi_session  # type: ignore[import-untyped]

from .base import BMC, Action, Attempt, Failure, PowerError, PowerResult, PowerState

__all__ = ["MAX_THREADS", "drive"]

log = logging.getLogger("bootstrapperd.power")

MAX_THREADS = 64  # IPMI actions in flight (or hung past their timeout) at once

_slots = threading.BoundedSemaphore(MAX_THREADS)

# Chassis Control (IPMI 2.0, 28.3)
_POWER_DOWN, _POWER_UP, _POWER_CYCLE, _HARD_RESET = 0, 1, 2, 3
# Set System Boot Options (28.12): parameter 3 keeps the flags past the BMC's 60 s watchdog;
# parameter 5: 0x80 = flags valid, this boot only (bit 6 clear), legacy BIOS (bit 5 clear);
# 0x04 = device selector 0001b, force PXE.
_BOOT_VALID_BIT_CLEARING = (3, 0x08)
_BOOT_FLAGS_PXE_ONCE = (5, 0x80, 0x04, 0x00, 0x00, 0x00)
# Completion codes that mean "this BMC does not do that parameter" (not a failure for param 3).
_NOT_SUPPORTED = {0x80, 0xC1, 0xCC}
# pyghmi's login errors that mean the user or password is wrong.
_CREDENTIAL_ERRORS = ("password", "unauthorized name", "invalid username", "unauthorized role")


async def drive(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
    """Carry out ``action`` in a thread; the wait ends with the caller's timeout."""
    return await _in_thread(lambda: _act(bmc, action, attempt), name=f"ipmi {bmc.address}")


async def _in_thread(work: Callable[[], PowerResult], name: str) -> PowerResult:
    if not _slots.acquire(blocking=False):
        raise PowerError(
            Failure.ERROR,
            f"{MAX_THREADS} IPMI actions are still waiting for BMCs that do not answer; "
            "try again once they have timed out",
        )
    loop = asyncio.get_running_loop()
    future: asyncio.Future[PowerResult] = loop.create_future()

    def deliver(result: PowerResult | None, error: BaseException | None) -> None:
        if future.done():  # the caller gave up (timeout, cancelled)
            return
        if result is not None:
            future.set_result(result)
        else:
            future.set_exception(error or RuntimeError("the IPMI thread returned nothing"))

    def run() -> None:
        result: PowerResult | None = None
        error: BaseException | None = None
        try:
            result = work()
        except Exception as exc:
            error = exc
        finally:
            _slots.release()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


def _act(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
    """Log in, act, log out (in this thread)."""
    try:
        session = pyghmi_command.Command(
            bmc=bmc.address,
            userid=bmc.username,
            password=bmc.password,
            port=bmc.effective_port,
        )
    except pyghmi_exceptions.IpmiException as exc:
        raise _login_error(bmc, str(exc)) from None
    except OSError as exc:  # name resolution, no route
        raise PowerError(Failure.UNREACHABLE, f"{bmc}: cannot be reached: {exc}") from None
    attempt.answered = True
    try:
        return _command(session, bmc, action)
    finally:
        with contextlib.suppress(Exception):
            session.ipmi_session.logout()
        # pyghmi keeps a session registered for the next Command to the same BMC (with the same
        # credentials) to share; a logged-out one handed back that way crashes in raw_command
        # (its logout expiry is None) in a long-lived process such as the daemon. Forget it:
        # _mark_broken is the deregistration pyghmi itself uses.
        with contextlib.suppress(Exception):
            session.ipmi_session._mark_broken()
        # (It keys that registry by the arguments as given: a str password, not its bytes.)
        key = (bmc.address, bmc.username, bmc.password, bmc.effective_port, None)
        pyghmi_session.Session.initting_sessions.pop(key, None)


def _login_error(bmc: BMC, text: str) -> PowerError:
    lowered = text.lower()
    if any(word in lowered for word in _CREDENTIAL_ERRORS):
        return PowerError(
            Failure.CREDENTIALS,
            f"{bmc} rejected user {bmc.username!r} ({text}): check the node's bmc username "
            "and its password_file",
        )
    if not text or text == "None" or "timeout" in lowered or "no longer connected" in lowered:
        # pyghmi gave up on the login before our timeout (its retries end with no message)
        return PowerError(
            Failure.UNREACHABLE,
            f"{bmc} did not answer the IPMI login: check its address, that it is on the "
            "network and that IPMI over LAN is enabled",
        )
    return PowerError(Failure.REFUSED, f"{bmc} refused the IPMI login: {text}")


def _raw(session: Any, bmc: BMC, what: str, command: int, data: tuple[int, ...]) -> Any:
    response = session.raw_command(netfn=0, command=command, data=data)
    if "error" in response:
        code = response.get("code", 0)
        if code == 0xFFFF or response["error"] == "timeout":
            raise PowerError(Failure.TIMEOUT, f"{bmc} stopped answering during {what}")
        raise PowerError(
            Failure.REFUSED, f"{bmc} refused {what}: {response['error']} (0x{code:02x})"
        )
    return response


def _refusal_code(session: Any, command: int, data: tuple[int, ...]) -> int | None:
    """Send a command whose refusal is tolerated: None when accepted, else its code."""
    response = session.raw_command(netfn=0, command=command, data=data)
    return int(response.get("code", 0)) if "error" in response else None


def _power_state(session: Any, bmc: BMC) -> PowerState:
    response = _raw(session, bmc, "get chassis status", 0x01, ())
    data = response.get("data") or b""
    if len(data) < 1:
        raise PowerError(Failure.ERROR, f"{bmc} sent an empty chassis status")
    return PowerState.ON if data[0] & 1 else PowerState.OFF


def _command(session: Any, bmc: BMC, action: Action) -> PowerResult:
    state = _power_state(session, bmc)
    if action is Action.STATUS:
        return PowerResult(True, state, f"{bmc}: power is {state}")
    if action is Action.PXE_ONCE:
        code = _refusal_code(session, 0x08, _BOOT_VALID_BIT_CLEARING)
        if code is not None and code not in _NOT_SUPPORTED:
            raise PowerError(
                Failure.REFUSED, f"{bmc} refused set boot options (0x{code:02x})", state
            )
        _raw(session, bmc, "set boot device PXE (next boot only)", 0x08, _BOOT_FLAGS_PXE_ONCE)
        return PowerResult(True, state, f"{bmc}: next boot from the network, once")
    if action is Action.ON:
        if state is PowerState.ON:
            return PowerResult(True, state, f"{bmc}: already on")
        _raw(session, bmc, "power on", 0x02, (_POWER_UP,))
        return _after(session, bmc, "power on requested")
    if action is Action.OFF:
        if state is PowerState.OFF:
            return PowerResult(True, state, f"{bmc}: already off")
        _raw(session, bmc, "power off", 0x02, (_POWER_DOWN,))
        return _after(session, bmc, "power off requested")
    if action is Action.CYCLE:
        if state is PowerState.OFF:
            _raw(session, bmc, "power on", 0x02, (_POWER_UP,))
            return _after(session, bmc, "was off, so powered on instead of cycled")
        code = _refusal_code(session, 0x02, (_POWER_CYCLE,))
        if code is None:
            return _after(session, bmc, "power cycle requested")
        if code not in _NOT_SUPPORTED:
            raise PowerError(Failure.REFUSED, f"{bmc} refused power cycle (0x{code:02x})", state)
        _raw(session, bmc, "hard reset", 0x02, (_HARD_RESET,))
        return _after(session, bmc, "power cycle not supported, hard reset requested")
    raise PowerError(Failure.ERROR, f"unknown action {action!r}")


def _after(session: Any, bmc: BMC, done: str) -> PowerResult:
    state = _power_state(session, bmc)
    return PowerResult(True, state, f"{bmc}: {done}; it reports power {state}")
