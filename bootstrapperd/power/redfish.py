"""Redfish through its REST API, with aiohttp (already the daemon's HTTP library): it is
asynchronous, so a slow BMC holds neither the event loop nor a thread, and the timeout simply
cancels the request. (sushy, OpenStack's Redfish library, is synchronous and would need the
thread treatment of the IPMI driver for a handful of requests.)

TLS is verified against the system's CAs by default; ``BMC.ca_file`` names the CA that signed
the BMC's certificate instead, and ``BMC.insecure`` turns verification off, explicitly, for BMCs
with self-signed certificates. Authentication is HTTP Basic on every request (no session to
leak when a request is cut short).

Actions: ``status`` reads ``PowerState``; ``on``/``off``/``cycle`` post
``ComputerSystem.Reset`` with ``On``/``ForceOff``/``ForceRestart`` (``cycle`` of a machine
that is off posts ``On``); ``pxe_once`` patches ``Boot`` with ``BootSourceOverrideTarget: Pxe``
and ``BootSourceOverrideEnabled: Once`` (with the ETag as If-Match when the BMC sends one).
"""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import aiohttp

from .base import BMC, Action, Attempt, Failure, PowerError, PowerResult, PowerState

__all__ = ["drive"]

_STATES = {"On": PowerState.ON, "Off": PowerState.OFF}
_RESET = {Action.ON: "On", Action.OFF: "ForceOff", Action.CYCLE: "ForceRestart"}


def _tls(bmc: BMC) -> ssl.SSLContext | bool:
    if bmc.insecure:
        return False
    if bmc.ca_file is not None:
        return ssl.create_default_context(cafile=bmc.ca_file)
    return True


async def drive(bmc: BMC, action: Action, attempt: Attempt) -> PowerResult:
    try:
        tls = _tls(bmc)
    except (OSError, ssl.SSLError) as exc:
        raise PowerError(Failure.TLS, f"{bmc}: cannot read ca_file {bmc.ca_file}: {exc}") from None
    host = f"[{bmc.address}]" if ":" in bmc.address else bmc.address
    client = _Client(f"https://{host}:{bmc.effective_port}", bmc, attempt)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=attempt.timeout)
    async with aiohttp.ClientSession(
        headers={"Authorization": _basic(bmc)},
        timeout=timeout,
        connector=aiohttp.TCPConnector(ssl=tls),
    ) as http:
        client.http = http
        return await client.act(action)


class _Client:
    def __init__(self, base: str, bmc: BMC, attempt: Attempt) -> None:
        self.base = base
        self.bmc = bmc
        self.attempt = attempt
        self.http: aiohttp.ClientSession | None = None

    async def request(
        self, method: str, path: str, what: str, json: Any = None, headers: Any = None
    ) -> tuple[Any, str | None]:
        """(the JSON body or None, the ETag) of a 2xx answer; PowerError for anything else."""
        assert self.http is not None  # noqa: S101 - set by drive() before any request
        bmc = self.bmc
        try:
            async with self.http.request(
                method, self.base + path, json=json, headers=headers
            ) as response:
                self.attempt.answered = True
                body = await response.read()
                if response.status == 401:
                    raise PowerError(
                        Failure.CREDENTIALS,
                        f"{bmc} rejected user {bmc.username!r} (HTTP 401): check the node's "
                        "bmc username and its password_file",
                    )
                if response.status >= 400:
                    raise PowerError(
                        Failure.REFUSED,
                        f"{bmc} refused {what} (HTTP {response.status}): {_why(body)}",
                    )
                parsed = None
                if body:
                    try:
                        parsed = await response.json(content_type=None)
                    except ValueError:
                        raise PowerError(
                            Failure.ERROR, f"{bmc} answered {what} with something not JSON"
                        ) from None
                return parsed, response.headers.get("ETag")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PowerError(
                Failure.TLS,
                f"{bmc}: its TLS certificate is not trusted ({exc.certificate_error}): give "
                "the CA that signed it (bmc ca_file), or set insecure if it is self-signed",
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise PowerError(Failure.TLS, f"{bmc}: TLS failed: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise PowerError(
                Failure.UNREACHABLE,
                f"{bmc} cannot be reached ({exc.os_error.strerror or exc.os_error}): check "
                "its address and that it is on the network",
            ) from None
        except aiohttp.ConnectionTimeoutError:
            raise PowerError(
                Failure.UNREACHABLE,
                f"{bmc} did not accept a connection within {self.attempt.timeout:g} s: check "
                "its address and that it is on the network",
            ) from None
        except aiohttp.ClientError as exc:
            raise PowerError(Failure.ERROR, f"{bmc}: {what} failed: {exc}") from None

    async def system(self) -> tuple[str, dict[str, Any], str | None]:
        """The path, body and ETag of the computer system this BMC controls."""
        bmc = self.bmc
        listing, _ = await self.request("GET", "/redfish/v1/Systems", "list systems")
        members = [m.get("@odata.id") for m in _dict(listing).get("Members", [])]
        members = [m for m in members if isinstance(m, str)]
        if bmc.system is not None:
            chosen = [m for m in members if m.rstrip("/").rsplit("/", 1)[-1] == bmc.system]
            if not chosen:
                raise PowerError(
                    Failure.ERROR, f"{bmc} has no system {bmc.system!r} (it has {len(members)})"
                )
        elif len(members) != 1:
            raise PowerError(
                Failure.ERROR,
                f"{bmc} manages {len(members)} systems: name one as the node's bmc system",
            )
        else:
            chosen = members
        body, etag = await self.request("GET", chosen[0], "read the system")
        return chosen[0], _dict(body), etag

    async def act(self, action: Action) -> PowerResult:
        bmc = self.bmc
        path, system, etag = await self.system()
        raw_state = system.get("PowerState")
        state = (
            _STATES.get(raw_state, PowerState.UNKNOWN)
            if isinstance(raw_state, str)
            else (PowerState.UNKNOWN)
        )
        if action is Action.STATUS:
            return PowerResult(True, state, f"{bmc}: power is {raw_state or 'not reported'}")
        if action is Action.PXE_ONCE:
            boot = {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}
            headers = {"If-Match": etag} if etag else None
            await self.request(
                "PATCH", path, "set the next boot to PXE", json={"Boot": boot}, headers=headers
            )
            return PowerResult(True, state, f"{bmc}: next boot from the network, once")
        if action is Action.ON and state is PowerState.ON:
            return PowerResult(True, state, f"{bmc}: already on")
        if action is Action.OFF and state is PowerState.OFF:
            return PowerResult(True, state, f"{bmc}: already off")
        reset = _RESET[action]
        done = f"{reset} requested"
        if action is Action.CYCLE and state is PowerState.OFF:
            reset, done = "On", "was off, so powered on instead of cycled"
        target = (
            _dict(_dict(system.get("Actions")).get("#ComputerSystem.Reset")).get("target")
            or f"{path.rstrip('/')}/Actions/ComputerSystem.Reset"
        )
        await self.request("POST", str(target), f"reset {reset}", json={"ResetType": reset})
        return PowerResult(True, state, f"{bmc}: {done} (power was {state})")


def _basic(bmc: BMC) -> str:
    """HTTP Basic credentials (built here: aiohttp's BasicAuth is deprecated from 3.14)."""
    token = base64.b64encode(f"{bmc.username}:{bmc.password}".encode()).decode("ascii")
    return f"Basic {token}"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _why(body: bytes) -> str:
    """The BMC's own words from a Redfish error body, on one line."""
    try:
        error = _dict(_dict(json.loads(body)).get("error"))
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return " ".join(text.split())[:200] or "no reason given"
    infos = error.get("@Message.ExtendedInfo")
    if isinstance(infos, list) and infos and isinstance(infos[0], dict):
        message = infos[0].get("Message")
        if isinstance(message, str):
            return " ".join(message.split())[:200]
    message = error.get("message")
    return " ".join(str(message).split())[:200] if message else "no reason given"
