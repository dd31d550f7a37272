"""The status page in headless Chromium against the real HTTP app (not a fake API): with more
machines than one page of ``/api/v1/nodes`` holds, the page follows the pages and shows every
machine exactly once. The app runs on its own event loop in a thread, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from bootstrapperd.http import create_app
from bootstrapperd.http.nodes import DEFAULT_PAGE
from bootstrapperd.machines.events import EventKind, Source
from bootstrapperd.pack import init_bsroot
from tests.browser import chromium_page, need_chromium
from tests.conftest import EXAMPLE
from tests.httpapp import make_context

MODEL = ("52:54:00:77:00:10", "52:54:00:77:00:11", "52:54:00:77:00:12")
STRANGERS = 2 * DEFAULT_PAGE + 34  # three pages
TIMEOUT_MS = 20_000


def stranger(n: int) -> str:
    return "06:00:" + ":".join(f"{b:02x}" for b in n.to_bytes(4, "big"))


@dataclass
class RealApp:
    origin: str
    stop: threading.Event


@pytest.fixture
def real_app(tmp_path: Path) -> Iterator[RealApp]:
    """The real app over a bsroot of the bundled example, with STRANGERS machines seen."""
    root = init_bsroot(EXAMPLE, tmp_path / "bsroot")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        context, db = make_context(root)
        for n in range(STRANGERS):
            context.timeline.record(
                stranger(n), float(n), Source.DHCP, EventKind.ACK, boot_file="undionly.kpxe"
            )
        runner = web.AppRunner(create_app(context))
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            ready.set()
            await asyncio.to_thread(stop.wait)
        finally:
            await runner.cleanup()
            db.close()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="status-paging-app")
    thread.start()
    try:
        ready.wait()
        assert not failure, failure
        host, port = sock.getsockname()[:2]
        yield RealApp(f"http://{host}:{port}", stop)
    finally:
        stop.set()
        thread.join()
        sock.close()
    assert not failure, failure


def test_the_status_page_follows_every_page(real_app: RealApp) -> None:
    need_chromium()
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    requests: list[str] = []
    errors: list[str] = []
    with chromium_page() as page:
        page.set_default_timeout(TIMEOUT_MS)
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        page.goto(real_app.origin + "/")
        rows = page.locator("tr[data-mac]")
        expect(rows).to_have_count(len(MODEL) + STRANGERS)
        macs: list[Any] = rows.evaluate_all("rows => rows.map(r => r.dataset.mac)")
        assert macs == [*MODEL, *sorted(stranger(n) for n in range(STRANGERS))]
        expect(page.locator("#connection")).to_be_hidden()
    cursors = [
        parse_qs(urlsplit(url).query).get("after", [None])[0]
        for url in requests
        if urlsplit(url).path == "/api/v1/nodes"
    ]
    assert cursors[:3] == [None, stranger(DEFAULT_PAGE - 4), stranger(2 * DEFAULT_PAGE - 4)]
    assert errors == []
