"""The operator's view: ``/api/v1/nodes`` (JSON: model facts, lease, boot progress, timeline),
the status page at ``/``, and the install report a machine posts when it is done."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..machines.stages import STAGES
from ..model import ClusterModel
from ..model.fields import canonical_mac
from .context import CONTEXT, HTTPContext

log = logging.getLogger("bootstrapperd.http")

STATUS_PAGE = Path(__file__).with_name("status.html")
# "note": a remark from the machine (a check it made), kept in its timeline; no stage.
REPORTS = ("installing", "installed", "install-failed", "note")
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


def node_view(context: HTTPContext, model: ClusterModel, mac: str) -> dict[str, Any]:
    node = model.node(mac)
    lease = context.leases.of(mac)
    lease_view = None
    if lease is not None:
        lease_view = {"ip": str(lease.ip), "state": str(lease.state), "expires": lease.expires}
    static = str(node.ip) if node is not None and node.ip is not None else None
    ip = static
    if ip is None and lease is not None and lease.holds(time.time()):
        ip = str(lease.ip)
    progress = context.timeline.progress(mac)
    hostname = model.hostname_for_mac(mac)
    return {
        "mac": mac,
        "hostname": hostname,
        "fqdn": node.fqdn if node is not None else f"{hostname}.{model.domain}",
        "known": node is not None,
        "roles": [str(r) for r in node.roles] if node is not None else ["worker"],
        "ip": ip,
        "static_ip": static,
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
    nodes = [node_view(context, model, mac) for mac in _macs(context, model)]
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
    view = node_view(context, model, mac)
    view["timeline"] = [event.as_dict() for event in context.timeline.of(mac)]
    return web.json_response(view)


async def report(request: web.Request) -> web.Response:
    """``POST /api/v1/nodes/<mac>/report`` (form: ``event``, ``message``), from ``install.sh``:
    accepted from the machine's own address only."""
    context = request.app[CONTEXT]
    mac = _mac_of(request)
    client = request.remote or ""
    if not context.machines.owns(mac, client):
        log.warning(
            "install report refused: the client is not this machine",
            extra={"fields": {"client": client, "mac": mac}},
        )
        raise web.HTTPForbidden(text=f"only {mac}, from its own address, may report on itself\n")
    form = await request.post()
    event = str(form.get("event", ""))
    if event not in REPORTS:
        raise web.HTTPBadRequest(text=f"event must be one of {', '.join(REPORTS)}\n")
    message = str(form.get("message", ""))[:500]
    level = logging.WARNING if event == "install-failed" else logging.INFO
    log.log(level, "install: %s", event, extra={"fields": {"mac": mac, "message": message}})
    context.timeline.record(mac, time.time(), "install", event, message=message, ip=client)
    return web.json_response({"recorded": event})


async def status_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATUS_PAGE, headers={"Cache-Control": "no-cache"})
