"""aiohttp application factory. Routes are a declarative table; state comes in as arguments."""

from __future__ import annotations

import time

from aiohttp import web

from bootstrapperd import __version__, bootscripts
from bootstrapperd.bsroot import Bsroot
from bootstrapperd.model.fields import canonical_mac
from bootstrapperd.model.holder import ModelHolder

MODEL = web.AppKey("model", ModelHolder)
BSROOT = web.AppKey("bsroot", Bsroot)
STARTED_AT = web.AppKey("started_at", float)


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus which model is being served (generation and file digest)."""
    holder = request.app[MODEL]
    model = holder.model
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - request.app[STARTED_AT], 3),
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


async def boot_binary(request: web.Request) -> web.StreamResponse:
    """The iPXE binaries of ``tftpboot/`` over HTTP, for UEFI HTTP-boot firmware (the URL the
    DHCP server gives it). Only plain files directly in ``tftpboot/``."""
    name = request.match_info["name"]
    if "/" in name or name.startswith(".") or "\0" in name:
        raise web.HTTPNotFound()
    path = request.app[BSROOT].tftpboot / name
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)


def _server(request: web.Request) -> str:
    """The base URL the client reached us by: what its scripts should fetch from next."""
    return f"http://{request.host}"


async def ipxe_for_machine(request: web.Request) -> web.Response:
    """The per-machine iPXE script (the URL DHCP gives iPXE clients), any MAC spelling."""
    mac = canonical_mac(request.match_info["mac"].removesuffix(".ipxe"))
    if mac is None:
        raise web.HTTPNotFound(text="not a MAC address\n")
    server = _server(request)
    spec = bootscripts.boot_spec(request.app[MODEL].model, mac, server)
    if spec is None:
        raise web.HTTPNotFound(text="unknown machine\n")
    return web.Response(text=bootscripts.ipxe_script(spec, server), content_type="text/plain")


async def chain_ipxe(request: web.Request) -> web.Response:
    """``/boot.ipxe``: chains to ``/ipxe/${mac}`` of whichever machine runs it."""
    return web.Response(text=bootscripts.chain_script(_server(request)), content_type="text/plain")


ROUTES = [
    web.get("/healthz", healthz),
    web.get("/boot/{name}", boot_binary),
    web.get("/boot.ipxe", chain_ipxe),
    web.get("/ipxe/{mac}", ipxe_for_machine),
]


def create_app(holder: ModelHolder, bsroot: Bsroot) -> web.Application:
    app = web.Application()
    app[MODEL] = holder
    app[BSROOT] = bsroot
    app[STARTED_AT] = time.monotonic()
    app.add_routes(ROUTES)
    return app
