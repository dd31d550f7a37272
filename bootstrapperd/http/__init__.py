"""The HTTP service: an aiohttp application built by ``create_app`` from an ``HTTPContext``."""

from .app import create_admin_app, create_app
from .context import CONTEXT, HTTPContext

__all__ = ["CONTEXT", "HTTPContext", "create_admin_app", "create_app"]
