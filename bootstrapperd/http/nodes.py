"""The operator's view: ``/api/v1/nodes`` (JSON: model facts, lease, boot progress, timeline),
the status page at ``/``, and the install report a machine posts when it is done."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..machines.events import REPORTS, EventKind, Source
from ..machines.stages import STAGES
from ..model import ClusterModel
from ..model.fields import canonical_mac
from .context import CONTEXT, HTTPContext

log = logging.getLogger("bootstrapperd.http")

STATUS_PAGE = Path(__file__).with_name("status.html")
NOT_SEEN = "not-seen"


def _macs(context: HTTPContext, model: ClusterModel) -> list[str]:
    """The model's machines in its order, then every other machine seen on the network."""
    macs = [n.mac for n in model.nodes]
    known = set(macs)
    for mac in context.timeline.machines():
        if mac not in known and mac:
            known.add(mac)
            macs.append(mac)
    return macs


def node_view(context: HTTPContext, mac: str) -> dict[str, Any]:
    view = context.resolver.machine(mac)
    lease = view.lease
    lease_view = None
    if lease is not None:
        lease_view = {"ip": str(lease.ip), "state": str(lease.state), "expires": lease.expires}
    progress = context.timeline.progress(mac)
    return {
        "mac": mac,
        "hostname": view.hostname,
        "fqdn": view.fqdn,
        "known": view.known,
        "roles": [str(r) for r in view.roles],
        "ip": str(view.ip) if view.ip is not None else None,
        "address_source": str(view.address_source),
        "static_ip": str(view.static_ip) if view.static_ip is not None else None,
        "lease": lease_view,
        "stage": progress.name,
        "stage_index": progress.stage,
        "failed": progress.failed,
        "last_seen": progress.last.at if progress.last is not None else None,
        "last_event": progress.last.as_dict() if progress.last is not None else None,
    }


async def list_nodes(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    model = context.holder.model
    nodes = [node_view(context, mac) for mac in _macs(context, model)]
    counts = dict.fromkeys((NOT_SEEN, *STAGES), 0)
    for view in nodes:
        counts[view["stage"] or NOT_SEEN] += 1
    return web.json_response(
        {
            "generated_at": time.time(),
            "cluster": {
                "domain": model.domain,
                "bootstrapper": str(model.bootstrapper),
                "model_generation": context.holder.generation,
            },
            "stages": list(STAGES),
            "counts": counts,
            "nodes": nodes,
        }
    )


def _mac_of(request: web.Request) -> str:
    mac = canonical_mac(request.match_info["mac"])
    if mac is None:
        raise web.HTTPNotFound(text="not a MAC address\n")
    return mac


async def one_node(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    model = context.holder.model
    mac = _mac_of(request)
    if model.node(mac) is None and mac not in context.timeline.machines():
        raise web.HTTPNotFound(text=f"{mac}: not in the cluster and never seen\n")
    view = node_view(context, mac)
    view["timeline"] = [event.as_dict() for event in context.timeline.of(mac)]
    return web.json_response(view)


async def report(request: web.Request) -> web.Response:
    """``POST /api/v1/nodes/<mac>/report`` (form: ``event``, ``message``), from ``install.sh``:
    accepted from the machine's own address only."""
    context = request.app[CONTEXT]
    mac = _mac_of(request)
    client = request.remote or ""
    if not context.resolver.owns(mac, client):
        log.warning(
            "install report refused: the client is not this machine",
            extra={"fields": {"client": client, "mac": mac}},
        )
        raise web.HTTPForbidden(text=f"only {mac}, from its own address, may report on itself\n")
    form = await request.post()
    event = str(form.get("event", ""))
    if event not in REPORTS:
        raise web.HTTPBadRequest(text=f"event must be one of {', '.join(REPORTS)}\n")
    kind = EventKind(event)
    message = str(form.get("message", ""))[:500]
    level = logging.WARNING if kind is EventKind.INSTALL_FAILED else logging.INFO
    log.log(level, "install: %s", kind, extra={"fields": {"mac": mac, "message": message}})
    context.timeline.record(mac, time.time(), Source.INSTALL, kind, message=message, ip=client)
    return web.json_response({"recorded": kind})


async def status_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATUS_PAGE, headers={"Cache-Control": "no-cache"})
