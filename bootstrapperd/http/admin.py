"""The admin channel: the operator's commands that change the fleet (reinstall, approve), and
the machine table they act on.

They answer only on a Unix socket in the state directory (``state/admin.sock``, mode 0600,
owned by the daemon's user: only it and root can connect); ``bootstrapperd machines``,
``reinstall`` and ``approve`` talk to it. The cluster-facing listener answers every admin
route with 403 and a log line: an address or a MAC on the cluster segment is not a credential.
The status page served over the socket (``ssh -L 8080:/srv/bsroot/state/admin.sock``) finds
the admin table answering and shows the actions; served to the cluster, it does not.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from .. import routes
from ..machines.lifecycle import LifecycleError
from ..model.fields import canonical_mac
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


ADMIN_HANDLERS = {
    routes.ADMIN_MACHINES: machines,
    routes.ADMIN_REINSTALL: reinstall,
    routes.ADMIN_APPROVE: approve,
}
