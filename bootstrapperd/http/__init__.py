"""The HTTP service: an aiohttp application built by ``create_app``."""

from .app import MODEL, create_app

__all__ = ["MODEL", "create_app"]
