"""aiohttp application factory. Routes are a declarative table; state comes in as arguments."""

from __future__ import annotations

import time

from aiohttp import web

from bootstrapperd import __version__
from bootstrapperd.model.holder import ModelHolder

MODEL = web.AppKey("model", ModelHolder)
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


ROUTES = [
    web.get("/healthz", healthz),
]


def create_app(holder: ModelHolder) -> web.Application:
    app = web.Application()
    app[MODEL] = holder
    app[STARTED_AT] = time.monotonic()
    app.add_routes(ROUTES)
    return app
