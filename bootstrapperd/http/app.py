"""aiohttp application factory. Routes are a declarative table; state comes in as one context."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import __version__, routes
from ..machines.events import Source
from ..registry.service import absent_status
from ..render import TemplateError
from . import admin, machine, nodes
from .context import ADMIN, CONTEXT, EVENT, HTTPContext
from .files import ObservedFile
from .metrics import metrics
from .server import HANDLER_ARGS, ConnectionGuard, request_done

log = logging.getLogger("bootstrapperd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Requests an operator's tools repeat all day: logged at debug, not info.
_QUIET_ROUTES = {
    r.name for r in (routes.STATUS, routes.API, routes.API_REGISTRY, routes.METRICS, routes.HEALTHZ)
}


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus which model is being served (generation and file digest)."""
    context = request.app[CONTEXT]
    holder = context.holder
    model = holder.model
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - context.started_at, 3),
            "model": {
                "file": str(holder.path),
                "sha256": holder.digest,
                "generation": holder.generation,
                "loaded_at": holder.loaded_at,
                "nodes": len(model.nodes),
                "warnings": len(model.warnings),
            },
        }
    )


async def registry_status(request: web.Request) -> web.Response:
    """The registry: backend, state, and the push state of every archive and image in it."""
    registry = request.app[CONTEXT].registry
    return web.json_response(registry.status() if registry is not None else absent_status())


# The route table, from the shared vocabulary (bootstrapperd.routes): the URLs machines are
# given and the routes that answer them are spelled in one place.
HANDLERS: dict[routes.Route, Handler] = {
    routes.STATUS: nodes.status_page,
    routes.HEALTHZ: healthz,
    routes.METRICS: metrics,
    routes.API: nodes.list_nodes,
    routes.API_NODE: nodes.one_node,
    routes.API_REGISTRY: registry_status,
    routes.REPORT: nodes.report,
    routes.CSR: machine.sign_request,
    routes.BOOT_FILE: machine.boot_binary,
    routes.CHAIN: machine.chain_ipxe,
    routes.IPXE_SCRIPT: machine.ipxe_script,
    routes.INSTALL_SH: machine.install_sh,
    routes.CLOUD_CONFIG: machine.cloud_config,
    routes.CLOUD_CONFIGS: machine.cloud_config,
    routes.IGNITION: machine.ignition,
    routes.CA: machine.ca_pem,
    routes.TLS: machine.node_tls,
    routes.STATIC: machine.mirror,
}
ROUTES = [
    web.route(route.method, route.pattern, HANDLERS[route], name=route.name)
    for route in routes.ROUTES
] + [  # the cluster-facing listener refuses every admin route
    web.route(route.method, route.pattern, admin.refuse, name=route.name)
    for route in routes.ADMIN_ROUTES
]
# The admin socket: the operator's read-only routes and the admin commands; nothing a
# machine fetches (machines never reach it).
_OPERATOR = (
    routes.STATUS,
    routes.HEALTHZ,
    routes.METRICS,
    routes.API,
    routes.API_NODE,
    routes.API_REGISTRY,
)
ADMIN_ROUTES = [
    web.route(route.method, route.pattern, HANDLERS[route], name=route.name) for route in _OPERATOR
] + [
    web.route(route.method, route.pattern, admin.ADMIN_HANDLERS[route], name=route.name)
    for route in routes.ADMIN_ROUTES
]


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One log line per request, the HTTP counters, and the machine's timeline event."""
    started = time.monotonic()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _observed(request, exc.status, None, time.monotonic() - started)
        raise
    except TemplateError as exc:
        # A site's template is broken: say which and why, to the log and to the client.
        log.error("cannot render: %s", exc, extra={"fields": {"path": request.path}})
        response = web.Response(status=500, text=f"bootstrapperd: {exc}\n")
    except BaseException:
        _observed(request, 500, None, time.monotonic() - started)
        raise
    if isinstance(response, ObservedFile):
        # Observed once sent: the log line and the timeline get its real size and duration.
        response.on_sent = lambda sent: _observed(
            request, sent.status, sent, time.monotonic() - started
        )
    else:
        _observed(request, response.status, response, time.monotonic() - started)
    return response


def _observed(
    request: web.Request, status: int, response: web.StreamResponse | None, duration: float
) -> None:
    context = request.app[CONTEXT]
    route = request.match_info.route.name or "none"
    route = routes.API.name if route == routes.API_NODE.name else route
    context.counters[(route, str(status))] += 1
    sent = 0
    if isinstance(response, web.FileResponse):
        sent = response.body_length
    elif isinstance(response, web.Response):
        sent = response.content_length or 0
    context.sent_bytes[route] += sent
    client = request.remote or ""
    event = request.get(EVENT)
    mac = None
    if event is not None:
        kind, mac, detail = event
        if mac is None:
            machine = context.resolver.at(client)
            mac = machine.mac if machine is not None else None
        if mac is not None:
            context.timeline.record(
                mac,
                time.time(),
                Source.HTTP,
                kind,
                path=request.path,
                method=request.method,
                status=status,
                bytes=sent,
                ip=client,
                **detail,
            )
    fields: dict[str, object] = {
        "client": client,
        "method": request.method,
        "path": request.path,
        "status": status,
        "bytes": sent,
        "ms": round(duration * 1000, 1),
    }
    if mac is not None:
        fields["mac"] = mac
    level = logging.DEBUG if route in _QUIET_ROUTES else logging.INFO
    if status >= 500:
        level = logging.ERROR
    if log.isEnabledFor(level):
        log.log(level, "%s %s %d", request.method, request.path, status, extra={"fields": fields})


def create_app(context: HTTPContext, guard: ConnectionGuard | None = None) -> web.Application:
    """The application: the route table, its middlewares, and aiohttp's limits on a request's
    head and on idle keep-alive connections (``server.HANDLER_ARGS``); with the listener's
    ``guard``, requests aiohttp's parser refuses are counted there, not logged one by one."""
    handler_args = dict(HANDLER_ARGS)
    if guard is not None:
        handler_args["logger"] = guard.request_log
    app = web.Application(middlewares=[request_done, observe], handler_args=handler_args)
    app[CONTEXT] = context
    app.add_routes(ROUTES)
    return app


def create_admin_app(context: HTTPContext) -> web.Application:
    """The admin channel's application (served on the admin Unix socket only)."""
    app = web.Application(middlewares=[observe], handler_args=dict(HANDLER_ARGS))
    app[CONTEXT] = context
    app[ADMIN] = True
    app.add_routes(ADMIN_ROUTES)
    return app
