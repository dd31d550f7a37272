"""The operator's view: ``/api/v1/nodes`` (JSON: model facts, lease, boot progress, timeline),
the status page at ``/``, and the install report a machine posts when it is done."""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..machines.events import REPORTS, EventKind, Source
from ..machines.stages import STAGES
from ..model import ClusterModel
from ..model.fields import canonical_mac
from .context import ADMIN, CONTEXT, HTTPContext

log = logging.getLogger("bootstrapperd.http")

STATUS_PAGE = Path(__file__).with_name("status.html")
NOT_SEEN = "not-seen"


DEFAULT_PAGE = 500  # machines in one page of /api/v1/nodes when the request names no limit
MAX_PAGE = 1_000  # the most a request may ask for (?limit=): one answer's work stays bounded


@dataclass(frozen=True, slots=True)
class Listing:
    """Every machine the API lists, in its order: the description's nodes in the
    description's order, then every other machine with a timeline, by MAC."""

    known: tuple[str, ...]
    others: tuple[str, ...]  # sorted

    def __len__(self) -> int:
        return len(self.known) + len(self.others)

    def start_after(self, mac: str | None) -> int:
        """The position of the first machine after ``mac`` (a machine since gone keeps its
        place: the next page starts where it would be)."""
        if mac is None:
            return 0
        if mac in self.known:
            return self.known.index(mac) + 1
        return len(self.known) + bisect.bisect_right(self.others, mac)

    def page(self, start: int, limit: int) -> list[str]:
        """Up to ``limit`` machines from position ``start``."""
        end = start + limit
        page = list(self.known[start:end])
        if end > len(self.known):
            first = max(0, start - len(self.known))
            page.extend(self.others[first : end - len(self.known)])
        return page

    def all(self) -> tuple[str, ...]:
        return self.known + self.others


def listing(context: HTTPContext, model: ClusterModel) -> Listing:
    """The machines to list now: the model's, then every other one with a timeline."""
    known = tuple(dict.fromkeys(n.mac for n in model.nodes))
    members = set(known)
    others = sorted(m for m in context.timeline.machines() if m not in members)
    return Listing(known, tuple(others))


def _page_query(request: web.Request) -> tuple[int, str | None]:
    """``?limit=`` (1 to MAX_PAGE, DEFAULT_PAGE when absent) and ``?after=`` (a MAC)."""
    text = request.query.get("limit")
    limit = DEFAULT_PAGE
    if text is not None:
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text[:8]) <= MAX_PAGE:
            raise web.HTTPBadRequest(text=f"limit must be a number from 1 to {MAX_PAGE}\n")
        limit = int(text)
    after = request.query.get("after")
    if after is None:
        return limit, None
    mac = canonical_mac(after[:64])
    if mac is None:
        raise web.HTTPBadRequest(text="after must be a MAC address\n")
    return limit, mac


ALARMS_SHOWN = 50  # the latest token alarms in /api/v1/nodes (all are counted in /metrics)


def node_view(context: HTTPContext, mac: str, alarms: Counter[str] | None = None) -> dict[str, Any]:
    """One machine for the API; ``alarms``: token alarms per MAC (counted once per page)."""
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
        "state": view.state.value if view.state is not None else None,
        "state_since": _since(context, mac),
        "stage": progress.name,
        "stage_index": progress.stage,
        "failed": progress.failed,
        "last_seen": progress.last.at if progress.last is not None else None,
        "last_event": progress.last.as_dict() if progress.last is not None else None,
        "alarms": (alarms or _alarm_counts(context))[mac],
    }


def _since(context: HTTPContext, mac: str) -> float | None:
    """When the machine's state was last set (None: its default, never set)."""
    entry = context.lifecycle.entry(mac) if context.lifecycle is not None else None
    return entry.since if entry is not None and entry.since else None


def _alarm_counts(context: HTTPContext) -> Counter[str]:
    return Counter(alarm.mac for alarm in context.tokens.alarms())


async def list_nodes(request: web.Request) -> web.Response:
    """One page of machines (``?limit=``, ``?after=<the last MAC of the previous page>``),
    with the counts per stage over every machine and the cursor of the next page."""
    context = request.app[CONTEXT]
    model = context.holder.model
    limit, after = _page_query(request)
    machines = listing(context, model)
    counts = dict.fromkeys((NOT_SEEN, *STAGES), 0)
    for mac in machines.all():
        counts[context.timeline.progress(mac).name or NOT_SEEN] += 1
    start = machines.start_after(after)
    page = machines.page(start, limit)
    next_after = page[-1] if page and start + len(page) < len(machines) else None
    alarm_counts = _alarm_counts(context)
    next_url = None
    if next_after is not None:
        next_url = str(request.rel_url.with_query({"limit": limit, "after": next_after}))
    return web.json_response(
        {
            "generated_at": time.time(),
            "admin": request.app.get(ADMIN, False),  # the admin socket: actions are offered
            "cluster": {
                "domain": model.domain,
                "bootstrapper": str(model.bootstrapper),
                "model_generation": context.holder.generation,
            },
            "stages": list(STAGES),
            "counts": counts,
            "total": len(machines),
            "page": {"limit": limit, "after": after, "next_after": next_after, "next": next_url},
            "alarms": [alarm.as_dict() for alarm in context.tokens.alarms()[-ALARMS_SHOWN:]],
            "nodes": [node_view(context, mac, alarm_counts) for mac in page],
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
    if model.node(mac) is None and not context.timeline.seen(mac):
        raise web.HTTPNotFound(text=f"{mac}: not in the cluster and never seen\n")
    view = node_view(context, mac)
    view["timeline"] = [event.as_dict() for event in context.timeline.of(mac)]
    view["alarm_log"] = [alarm.as_dict() for alarm in context.tokens.alarms_of(mac)]
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
    if kind is EventKind.INSTALLED:
        context.tokens.end(mac, time.time())  # its install token dies
    return web.json_response({"recorded": kind})


async def status_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATUS_PAGE, headers={"Cache-Control": "no-cache"})
