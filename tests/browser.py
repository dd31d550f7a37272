"""Headless Chromium for tests: Debian's ``chromium`` driven by Playwright's sync API.

Playwright never downloads a browser here; it drives the system's Chromium
(``/usr/bin/chromium``, or ``$BOOTSTRAPPERD_CHROMIUM``). Tests call :func:`need_chromium`
first: it skips when Chromium or Playwright is missing, and fails under
``BOOTSTRAPPERD_TEST_STRICT=1`` (the same rule as every other prerequisite, see conftest).

The sync API refuses to run inside a running asyncio loop, so browser tests are plain
(non-async) test functions; serve the page under test from a thread or a subprocess.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import need

if TYPE_CHECKING:
    import playwright.sync_api

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> Path:
    return Path(os.environ.get("BOOTSTRAPPERD_CHROMIUM") or DEFAULT_CHROMIUM)


def unavailable_reason() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the `playwright` Python package is not installed (pip install -e '.[dev]')"
    path = chromium_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        return f"no Chromium at {path} (apt-get install chromium, or set BOOTSTRAPPERD_CHROMIUM)"
    return None


def chromium_available() -> bool:
    return unavailable_reason() is None


def need_chromium() -> None:
    """Skip the calling test without Chromium; fail instead in strict mode."""
    reason = unavailable_reason()
    need(reason is None, reason or "")


@contextlib.contextmanager
def chromium_page() -> Iterator[playwright.sync_api.Page]:
    """A page in a fresh headless Chromium with its own throw-away profile; everything is
    closed (and the profile removed) on exit."""
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="bootstrapperd-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(chromium_path()),
            headless=True,
            args=list(CHROMIUM_ARGS),
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()
