"""A file response that says when it has been sent (aiohttp sends a file after the middleware
has returned): the log line and the boot timeline get the bytes really sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

__all__ = ["ObservedFile"]


class ObservedFile(web.FileResponse):
    def __init__(self, path: Path) -> None:
        # Large reads when sendfile is unavailable; sendfile itself sends in one call.
        super().__init__(path, chunk_size=1 << 20)
        self.on_sent: Callable[[ObservedFile], None] | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        finally:
            if self.on_sent is not None:
                self.on_sent(self)
