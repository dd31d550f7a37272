"""The admin channel: the operator's commands that change the fleet (reinstall, approve, power
through the machines' BMCs), and the machine table they act on.

They answer only on a Unix socket in the state directory (``state/admin.sock``, mode 0600,
owned by the daemon's user: only it and root can connect); ``bootstrapperd machines``,
``reinstall`` and ``approve`` talk to it. The cluster-facing listener answers every admin
route with 403 and a log line: an address or a MAC on the cluster segment is not a credential.
The status page served over the socket (``ssh -L 8080:/srv/bsroot/state/admin.sock``) finds
the admin table answering and shows the actions; served to the cluster, it does not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from .. import routes
from ..machines.events import EventKind, Source
from ..machines.lifecycle import LifecycleError
from ..model.fields import canonical_mac
from ..model.types import Node
from ..power import (
    BMC,
    Action,
    Failure,
    PowerResult,
    PowerState,
    Progress,
    Protocol,
    control_many,
)
from .context import CONTEXT, HTTPContext
from .nodes import listing, node_view

__all__ = ["ADMIN_HANDLERS", "machines_table", "refuse"]

log = logging.getLogger("bootstrapperd.http")


async def refuse(request: web.Request) -> web.Response:
    """Any admin route reached through the cluster-facing listener."""
    log.warning(
        "admin route refused: it answers only on the admin socket",
        extra={"fields": {"peer": request.remote, "method": request.method, "path": request.path}},
    )
    raise web.HTTPForbidden(
        text="this changes the fleet: it answers only on the bootstrapper's admin socket "
        "(bootstrapperd machines|reinstall|approve, run as root on the bootstrapper)\n"
    )


def machines_table(context: HTTPContext) -> list[dict[str, Any]]:
    """Every machine the daemon knows of (the description's, then the ones seen): the API's
    view plus what the operator's table shows (the OS it installs, the age of its last event)."""
    model = context.holder.model
    now = time.time()
    rows = []
    for mac in listing(context, model).all():
        view = node_view(context, mac)
        last = view["last_seen"]
        view["os"] = f"{model.os.name} {model.os.channel} {model.os.version}"
        view["age"] = round(now - last, 1) if isinstance(last, float) else None
        rows.append(view)
    return rows


async def machines(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    return web.json_response({"generated_at": time.time(), "machines": machines_table(context)})


def _mac(request: web.Request) -> str:
    mac = canonical_mac(request.match_info["mac"])
    if mac is None:
        raise web.HTTPBadRequest(text=f"{request.match_info['mac']!r} is not a MAC address\n")
    return mac


async def _change(request: web.Request, what: str) -> web.Response:
    context = request.app[CONTEXT]
    if context.lifecycle is None:
        raise web.HTTPServiceUnavailable(text="machine states are not kept by this server\n")
    mac = _mac(request)
    change = context.lifecycle.reinstall if what == "reinstall" else context.lifecycle.approve
    try:
        entry = change(mac, "admin")
    except LifecycleError as exc:
        raise web.HTTPConflict(text=f"{exc}\n") from None
    log.info("admin: %s", what, extra={"fields": {"mac": mac, "state": entry.state.value}})
    return web.json_response({"mac": mac, "state": entry.state.value, "why": entry.why})


async def reinstall(request: web.Request) -> web.Response:
    return await _change(request, "reinstall")


async def approve(request: web.Request) -> web.Response:
    return await _change(request, "approve")


MAX_POWER_TARGETS = 4096  # machines in one power request
MAX_CONCURRENCY = 64


def _bmc_of(node: Node | None) -> BMC | str:
    """The node's BMC with its password read now, or why there is none."""
    if node is None:
        return "not in the description: no BMC to ask"
    config = node.bmc
    if config is None:
        return "no bmc in the description (nodes[].bmc)"
    try:
        password = config.password_file.read_text().splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "empty or not text"
        return f"cannot read its password_file {config.password_file}: {reason}"
    return BMC(
        address=config.address,
        protocol=Protocol(config.protocol),
        username=config.username,
        password=password,
        port=config.port,
        ca_file=str(config.ca_file) if config.ca_file else None,
        insecure=config.insecure,
    )


async def _power_request(request: web.Request) -> tuple[Action, list[str], float, int]:
    name = request.match_info["action"].replace("-", "_")
    try:
        action = Action(name)
    except ValueError:
        actions = ", ".join(a.value.replace("_", "-") for a in Action)
        raise web.HTTPBadRequest(text=f"{name!r} is not an action ({actions})\n") from None
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON\n") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body is not a JSON object\n")
    model = request.app[CONTEXT].holder.model
    if body.get("all") is True:
        macs = [node.mac for node in model.nodes if node.bmc is not None]
    else:
        given = body.get("macs")
        if not isinstance(given, list) or not given:
            raise web.HTTPBadRequest(text="name the machines (macs) or all\n")
        macs = []
        for text in given:
            mac = canonical_mac(text) if isinstance(text, str) else None
            if mac is None:
                raise web.HTTPBadRequest(text=f"{text!r} is not a MAC address\n")
            macs.append(mac)
    if len(macs) > MAX_POWER_TARGETS:
        raise web.HTTPBadRequest(text=f"at most {MAX_POWER_TARGETS} machines at once\n")
    stagger = body.get("stagger", 0)
    concurrency = body.get("concurrency", 8)
    if not isinstance(stagger, int | float) or not 0 <= stagger <= 600:
        raise web.HTTPBadRequest(text="stagger: seconds from 0 to 600\n")
    if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise web.HTTPBadRequest(text=f"concurrency: 1 to {MAX_CONCURRENCY}\n")
    return action, list(dict.fromkeys(macs)), float(stagger), concurrency


async def power(request: web.Request) -> web.StreamResponse:
    """``action`` on each machine's BMC: bounded, staggered for power-on; one JSON line per
    start and per result as they happen, each result in the machine's timeline too. A
    machine whose BMC cannot be asked gets its result at once; none blocks the others."""
    context = request.app[CONTEXT]
    action, macs, stagger, concurrency = await _power_request(request)
    model = context.holder.model
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def record(mac: str, result: PowerResult) -> None:
        context.timeline.record(
            mac, time.time(), Source.ADMIN, EventKind.POWER, action=action.value, ok=result.ok,
            state=result.state.value, message=result.message,
            failure=result.failure.value if result.failure else None,
        )  # fmt: skip
        log.log(
            logging.INFO if result.ok else logging.WARNING,
            "power %s: %s", action.value, result.message,
            extra={"fields": {"mac": mac, "ok": result.ok}},
        )  # fmt: skip
        lines.put_nowait(
            {"mac": mac, "done": True, "ok": result.ok, "state": result.state.value,
             "message": result.message, "failure": result.failure.value if result.failure
             else None}
        )  # fmt: skip

    targets: dict[str, BMC] = {}
    for mac in macs:
        found = _bmc_of(model.node(mac))
        if isinstance(found, str):
            record(mac, PowerResult(False, PowerState.UNKNOWN, found, Failure.ERROR))
        else:
            targets[mac] = found

    def progress(step: Progress[str]) -> None:
        if step.result is None:
            lines.put_nowait({"mac": step.key, "started": True, "of": step.total})
        else:
            record(step.key, step.result)

    async def run() -> None:
        try:
            await control_many(
                targets, action, concurrency=concurrency, stagger=stagger, progress=progress
            )
        finally:
            lines.put_nowait(None)

    task = asyncio.create_task(run())
    while (line := await lines.get()) is not None:
        await response.write(json.dumps(line).encode() + b"\n")
    await task
    await response.write_eof()
    return response


ADMIN_HANDLERS = {
    routes.ADMIN_MACHINES: machines,
    routes.ADMIN_REINSTALL: reinstall,
    routes.ADMIN_APPROVE: approve,
    routes.ADMIN_POWER: power,
}
