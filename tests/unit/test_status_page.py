"""The operator's status page (``bootstrapperd/http/status.html``) in headless Chromium.

A fake API (``/api/v1/nodes`` and ``/api/v1/nodes/<mac>``) with canned JSON that a test changes
between polls is served, with the page itself at ``/``, by ``http.server`` in a thread. It
listens on 127.0.0.1 only: the one exception to "unit tests open no sockets", as a browser
needs a server. Every wait is event-based (Playwright's ``expect``), never a sleep.
Every test also checks that the page logged no console error and asked no other host for
anything (the site has no internet, so the page must be self-contained).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.browser import chromium_page, need_chromium

STATUS_HTML = Path(__file__).resolve().parents[2] / "bootstrapperd" / "http" / "status.html"
STAGES = ["dhcp", "boot-file", "ipxe-script", "kernel", "install.sh", "config", "installed"]
TIMEOUT_MS = 10_000
HOSTILE = "<img src=x onerror=alert(1)>"


def make_node(
    mac: str,
    hostname: str | None,
    stage: str | None,
    *,
    ip: str | None = None,
    known: bool = True,
    roles: tuple[str, ...] = ("worker",),
    failed: bool = False,
    kind: str | None = None,
    seen_ago: float = 5.0,
) -> dict[str, Any]:
    """One node as ``GET /api/v1/nodes`` describes it."""
    now = time.time()
    seen = stage is not None
    return {
        "mac": mac,
        "hostname": hostname,
        "fqdn": f"{hostname}.cluster.example" if hostname else None,
        "known": known,
        "roles": list(roles) if known else [],
        "ip": ip,
        "static_ip": ip if known else None,
        "lease": {"ip": ip, "state": "bound", "expires": now + 3600} if seen and ip else None,
        "stage": stage,
        "stage_index": STAGES.index(stage) if stage else -1,
        "failed": failed,
        "last_seen": now - seen_ago if seen else None,
        "last_event": (
            {"at": now - seen_ago, "source": "http", "kind": kind or stage, "status": 200}
            if seen
            else None
        ),
    }


def payload(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {"not-seen": sum(1 for n in nodes if n["stage"] is None)}
    counts.update({s: sum(1 for n in nodes if n["stage"] == s) for s in STAGES})
    return {
        "generated_at": time.time(),
        "cluster": {
            "domain": "cluster.example",
            "bootstrapper": "10.77.0.1",
            "model_generation": 1,
        },
        "stages": STAGES,
        "counts": counts,
        "nodes": nodes,
    }


MASTER = make_node(
    "52:54:00:77:00:10", "master1", "kernel", ip="10.77.0.10", roles=("master", "etcd")
)
WORKER = make_node("52:54:00:77:00:11", "worker1", "installed", ip="10.77.0.11")
SPARE = make_node("52:54:00:77:00:12", "worker2", None)


def registry_image(original: str, state: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "image": original,
        "reference": f"bootstrapper:5000/{original}",
        "state": state,
        "digest": None,
        "attempts": 1,
        "reason": reason,
        "note": None,
        "blobs": {"uploaded": 0, "present": 0, "mounted": 0},
        "bytes_uploaded": 0,
    }


def registry_payload(
    state: str, archives: list[tuple[str, str, str | None, list[dict[str, Any]]]], **extra: Any
) -> dict[str, Any]:
    """``GET /api/v1/registry``: archives as (name, state, reason, images)."""
    counts = dict.fromkeys(("pending", "pushing", "pushed", "present", "failed"), 0)
    for _, archive_state, _, images in archives:
        for image in images or [{"state": archive_state}]:
            counts[image["state"]] += 1
    return {
        "mode": "auto",
        "backend": "binary",
        "state": state,
        "up": state == "ready",
        "detail": None,
        "registry": "bootstrapper:5000",
        "endpoint": "https://10.77.0.1:5000",
        "instance": {"pid": 4242},
        "restarts": 0,
        "restart_pending": False,
        "push_done": False,
        "counts": counts,
        "blobs": {"uploaded": 0, "present": 0, "mounted": 0},
        "archives": [
            {"archive": name, "state": archive_state, "attempts": 1, "reason": reason,
             "retrying": False, "finished_at": None, "images": images}
            for name, archive_state, reason, images in archives
        ],
        **extra,
    }  # fmt: skip


PAUSE_PUSHED = registry_image("registry.k8s.io/pause:3.9", "pushed")
REGISTRY = registry_payload("ready", [("kube.tar", "pushed", None, [PAUSE_PUSHED])])


class FakeApi:
    """The canned answers; tests change them while the page polls."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self._nodes = copy.deepcopy(nodes)
        self._timelines: dict[str, list[dict[str, Any]]] = {}
        self._failing = False
        self._registry: dict[str, Any] = copy.deepcopy(REGISTRY)
        self._alarms: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def set_alarms(self, alarms: list[dict[str, Any]]) -> None:
        with self._lock:
            self._alarms = copy.deepcopy(alarms)

    def set_nodes(self, nodes: list[dict[str, Any]]) -> None:
        with self._lock:
            self._nodes = copy.deepcopy(nodes)

    def set_timeline(self, mac: str, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._timelines[mac] = copy.deepcopy(events)

    def set_failing(self, failing: bool) -> None:
        with self._lock:
            self._failing = failing

    def set_registry(self, registry: dict[str, Any]) -> None:
        with self._lock:
            self._registry = copy.deepcopy(registry)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        with self._lock:
            self.paths.append(path)
            if path in ("/", "/index.html"):
                return 200, "text/html; charset=utf-8", STATUS_HTML.read_bytes()
            if path == "/api/v1/registry":
                return 200, "application/json", json.dumps(self._registry).encode()
            if not path.startswith("/api/v1/nodes"):
                return 404, "text/plain", b"not found\n"
            if self._failing:
                return 503, "text/plain", b"down for the test\n"
            if path == "/api/v1/nodes":
                body = {**payload(self._nodes), "alarms": self._alarms}
                return 200, "application/json", json.dumps(body).encode()
            mac = unquote(path.removeprefix("/api/v1/nodes/"))
            for node in self._nodes:
                if node["mac"] == mac:
                    body = {**node, "timeline": self._timelines.get(mac, [])}
                    return 200, "application/json", json.dumps(body).encode()
            return 404, "application/json", b'{"error": "unknown machine"}'


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: FakeApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        status, content_type, body = self.server.api.answer(urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class StatusPage:
    page: Any  # playwright.sync_api.Page
    api: FakeApi
    origin: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self) -> None:
        self.page.goto(self.origin + "/")

    def row(self, mac: str) -> Any:
        return self.page.locator(f'tr[data-mac="{mac}"]')

    def cell(self, mac: str, name: str) -> Any:
        return self.row(mac).locator(f'[data-field="{name}"]')

    def assert_quiet(self, *, failed_loads_allowed: bool = False) -> None:
        """No console error (but Chromium's own "Failed to load resource" line for the API
        answers a test made fail), no dialog, no request to any other host."""
        errors = [
            e
            for e in self.console_errors
            if not (failed_loads_allowed and e.startswith("Failed to load resource"))
        ]
        assert errors == []
        assert self.dialogs == []
        foreign = [
            url
            for url in self.requests
            if not url.startswith(self.origin + "/") and not url.startswith("data:")
        ]
        assert foreign == []


@pytest.fixture
def status() -> Iterator[StatusPage]:
    need_chromium()
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    api = FakeApi([MASTER, WORKER, SPARE])
    server = _Server(api)
    thread = threading.Thread(target=server.serve_forever, name="status-page-server")
    thread.start()
    try:
        host, port = server.server_address[:2]
        with chromium_page() as page:
            page.set_default_timeout(TIMEOUT_MS)
            session = StatusPage(page, api, f"http://{host!s}:{port}")
            page.on(
                "console",
                lambda m: session.console_errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: session.console_errors.append(f"uncaught: {e}"))
            page.on("request", lambda r: session.requests.append(r.url))

            def on_dialog(dialog: Any) -> None:
                session.dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            yield session
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_rows_show_every_machine(status: StatusPage) -> None:
    from playwright.sync_api import expect

    status.open()
    page = status.page
    expect(page.locator("tr[data-mac]")).to_have_count(3)
    macs = page.locator("tr[data-mac]").evaluate_all("rows => rows.map(r => r.dataset.mac)")
    assert macs == [MASTER["mac"], WORKER["mac"], SPARE["mac"]]

    expect(status.cell(MASTER["mac"], "hostname")).to_have_text("master1")
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("kernel/initrd")
    expect(status.cell(MASTER["mac"], "ip")).to_have_text("10.77.0.10")
    expect(status.cell(MASTER["mac"], "mac")).to_have_text(MASTER["mac"])
    expect(status.cell(MASTER["mac"], "roles")).to_have_text(re.compile(r"master\s*etcd"))
    expect(status.cell(MASTER["mac"], "last-seen")).to_have_text(re.compile(r"^\d+ (s|min) ago$"))
    expect(status.cell(WORKER["mac"], "stage")).to_have_text("installed")
    expect(status.cell(WORKER["mac"], "ip")).to_have_text("10.77.0.11")
    expect(status.cell(SPARE["mac"], "stage")).to_have_text("not seen")
    expect(status.cell(SPARE["mac"], "last-seen")).to_have_text("never")

    # The progress steps: three done and the current one for a machine at "kernel".
    steps = status.cell(MASTER["mac"], "progress").locator(".step")
    expect(steps).to_have_count(len(STAGES))
    classes = steps.evaluate_all("steps => steps.map(s => s.className)")
    assert classes == ["step done"] * 3 + ["step current"] + ["step pending"] * 3

    expect(page.locator("#summary")).to_have_text(
        "3 machines: 1 installed, 1 in progress, 1 not seen"
    )
    expect(page.locator("header")).to_contain_text("cluster.example")
    expect(page.locator("header")).to_contain_text("10.77.0.1")
    expect(page.locator("#connection")).to_be_hidden()
    status.assert_quiet()


def test_next_poll_shows_a_new_stage_without_reloading(status: StatusPage) -> None:
    from playwright.sync_api import expect

    status.open()
    page = status.page
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("kernel/initrd")
    page.evaluate("window.__sameDocument = true")

    moved = {**MASTER, "stage": "config", "stage_index": STAGES.index("config")}
    status.api.set_nodes([moved, WORKER, SPARE])
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("config")
    expect(page.locator("#summary")).to_have_text(
        "3 machines: 1 installed, 1 in progress, 1 not seen"
    )

    arrived = {**SPARE, "stage": "dhcp", "stage_index": 0, "ip": "10.77.0.12"}
    arrived["last_seen"] = time.time()
    status.api.set_nodes([moved, WORKER, arrived])
    expect(status.cell(SPARE["mac"], "stage")).to_have_text("DHCP")
    expect(status.cell(SPARE["mac"], "ip")).to_have_text("10.77.0.12")
    expect(page.locator("#summary")).to_have_text(
        "3 machines: 1 installed, 2 in progress, 0 not seen"
    )

    assert page.evaluate("window.__sameDocument") is True
    assert status.api.paths.count("/") == 1
    status.assert_quiet()


def test_failed_machine_is_shown_as_failed(status: StatusPage) -> None:
    from playwright.sync_api import expect

    broken = make_node(
        "52:54:00:77:00:10", "master1", "boot-file", ip="10.77.0.10", failed=True,
        kind="tftp-failed",
    )  # fmt: skip
    status.api.set_nodes([broken, WORKER, SPARE])
    status.open()

    row = status.row(broken["mac"])
    expect(row).to_have_attribute("data-failed", "true")
    expect(row).to_have_class(re.compile(r"\bfailed\b"))
    expect(status.cell(broken["mac"], "stage")).to_have_text("boot file")
    failure = status.cell(broken["mac"], "failure")
    expect(failure).to_be_visible()
    expect(failure).to_contain_text("tftp-failed")
    expect(status.cell(broken["mac"], "progress").locator(".step.failed")).to_have_count(1)
    expect(status.page.locator("#summary")).to_have_text(
        "3 machines: 1 installed, 0 in progress, 1 failed, 1 not seen"
    )
    color = failure.evaluate("e => getComputedStyle(e).color")
    red, green, blue = (int(c) for c in re.findall(r"\d+", color)[:3])
    assert red > 150, color
    assert red > 2 * green, color
    assert red > 2 * blue, color
    # Machines that did not fail are not marked.
    expect(status.cell(WORKER["mac"], "failure")).to_be_hidden()
    status.assert_quiet()


def test_unknown_machine_is_listed_after_the_known_ones(status: StatusPage) -> None:
    from playwright.sync_api import expect

    stranger = make_node("52:54:00:aa:bb:cc", None, "dhcp", ip="10.77.0.200", known=False)
    status.api.set_nodes([stranger, MASTER, WORKER, SPARE])
    status.open()

    page = status.page
    expect(page.locator("tr[data-mac]")).to_have_count(4)
    macs = page.locator("tr[data-mac]").evaluate_all("rows => rows.map(r => r.dataset.mac)")
    assert macs == [MASTER["mac"], WORKER["mac"], SPARE["mac"], stranger["mac"]]
    expect(status.row(stranger["mac"]).locator(".badge.unknown")).to_be_visible()
    expect(status.cell(stranger["mac"], "stage")).to_have_text("DHCP")
    expect(status.cell(stranger["mac"], "ip")).to_have_text("10.77.0.200")
    expect(status.cell(stranger["mac"], "mac")).to_have_text(stranger["mac"])
    expect(page.locator("tr.section")).to_contain_text("not in the cluster description")
    status.assert_quiet()


def test_html_in_the_data_is_shown_as_text(status: StatusPage) -> None:
    from playwright.sync_api import expect

    hostile = make_node("52:54:00:77:00:66", HOSTILE, "ipxe-script", ip="10.77.0.66")
    hostile["roles"] = ["<b>worker</b>"]
    hostile["last_event"]["kind"] = "<svg onload=alert(2)>"
    status.api.set_nodes([MASTER, hostile])
    status.api.set_timeline(
        hostile["mac"],
        [
            {
                "at": time.time(),
                "source": "http",
                "kind": "<i>x</i>",
                "path": "<script>alert(3)</script>",
            }
        ],
    )
    status.open()

    page = status.page
    expect(status.cell(hostile["mac"], "hostname")).to_have_text(HOSTILE)
    expect(status.cell(hostile["mac"], "roles")).to_have_text("<b>worker</b>")
    status.cell(hostile["mac"], "hostname").click()
    timeline = page.locator(f'tr[data-detail-for="{hostile["mac"]}"] [data-field="timeline"]')
    expect(timeline).to_contain_text("<script>alert(3)</script>")
    expect(timeline).to_contain_text("<i>x</i>")

    for tag in ("img", "svg"):
        assert page.locator(tag).count() == 0, tag
    for tag in ("b", "i"):  # the page uses <b> itself, but never in the table
        assert page.locator(f"#rows {tag}").count() == 0, tag
    assert page.locator("script").count() == 1  # the page's own
    assert not any(urlsplit(url).path == "/x" for url in status.requests)
    status.assert_quiet()


def test_connection_banner_comes_and_goes(status: StatusPage) -> None:
    from playwright.sync_api import expect

    status.open()
    page = status.page
    banner = page.locator("#connection")
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("kernel/initrd")
    expect(banner).to_be_hidden()

    status.api.set_failing(True)
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(re.compile("connection lost.*retrying", re.IGNORECASE))
    expect(banner).to_contain_text("HTTP 503")

    moved = {**MASTER, "stage": "installed", "stage_index": STAGES.index("installed")}
    status.api.set_nodes([moved, WORKER, SPARE])
    status.api.set_failing(False)
    expect(banner).to_be_hidden()
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("installed")
    status.assert_quiet(failed_loads_allowed=True)


def test_clicking_a_row_shows_its_timeline(status: StatusPage) -> None:
    from playwright.sync_api import expect

    t0 = time.time() - 30
    mac = MASTER["mac"]
    status.api.set_timeline(
        mac,
        [
            {"at": t0, "source": "dhcp", "kind": "offer", "ip": "10.77.0.10", "xid": "0x1234"},
            {"at": t0 + 1.5, "source": "tftp", "kind": "boot-file", "file": "undionly.kpxe"},
            {"at": t0 + 4, "source": "http", "kind": "kernel", "path": "/static/k", "status": 200},
        ],
    )
    status.open()
    page = status.page
    detail = page.locator(f'tr[data-detail-for="{mac}"]')
    expect(status.cell(mac, "stage")).to_have_text("kernel/initrd")
    expect(detail).to_have_count(0)

    status.row(mac).locator('[data-field="stage"]').click()
    events = detail.locator("tr.event")
    expect(events).to_have_count(3)
    expect(events.nth(0)).to_contain_text("dhcp")
    expect(events.nth(0)).to_contain_text("offer")
    expect(events.nth(0)).to_contain_text("xid=0x1234")
    expect(events.nth(1)).to_contain_text("tftp")
    expect(events.nth(1)).to_contain_text("file=undionly.kpxe")
    expect(events.nth(1)).to_contain_text("+1.50 s")
    expect(events.nth(2)).to_contain_text("status=200")
    expect(events.nth(2).locator("td.time")).to_have_text(re.compile(r"\d\d:\d\d:\d\d\.\d{3}"))
    expect(status.row(mac).locator("button.toggle")).to_have_attribute("aria-expanded", "true")
    # The open timeline follows the machine on the next polls.
    status.api.set_timeline(
        mac,
        [
            {"at": t0, "source": "dhcp", "kind": "offer", "ip": "10.77.0.10", "xid": "0x1234"},
            {"at": t0 + 1.5, "source": "tftp", "kind": "boot-file", "file": "undionly.kpxe"},
            {"at": t0 + 4, "source": "http", "kind": "kernel", "path": "/static/k", "status": 200},
            {"at": t0 + 9, "source": "http", "kind": "install.sh", "status": 404},
        ],
    )
    expect(events).to_have_count(4)
    expect(events.nth(3)).to_have_class(re.compile(r"\bbad\b"))
    assert any(urlsplit(u).path == "/api/v1/nodes/52:54:00:77:00:10" for u in status.requests)

    # A second click folds it again.
    status.cell(mac, "hostname").click()
    expect(detail).to_have_count(0)
    expect(status.row(mac).locator("button.toggle")).to_have_attribute("aria-expanded", "false")
    status.assert_quiet()


def test_dark_colour_scheme_is_respected(status: StatusPage) -> None:
    from playwright.sync_api import expect

    page = status.page
    background = "getComputedStyle(document.documentElement).backgroundColor"
    page.emulate_media(color_scheme="light")
    status.open()
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("kernel/initrd")
    light = page.evaluate(background)
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate(background)

    def brightness(css: str) -> int:
        return sum(int(c) for c in re.findall(r"\d+", css)[:3])

    assert brightness(dark) < brightness(light), (light, dark)
    status.assert_quiet()


def test_a_machine_without_news_is_flagged(status: StatusPage) -> None:
    from playwright.sync_api import expect

    stuck = make_node("52:54:00:77:00:10", "master1", "kernel", ip="10.77.0.10", seen_ago=1200)
    status.api.set_nodes([stuck, WORKER, SPARE])
    status.open()
    last_seen = status.cell(stuck["mac"], "last-seen")
    expect(last_seen).to_have_text(re.compile(r"^2\d min ago$"))
    expect(last_seen).to_have_class(re.compile(r"\bstalled\b"))
    expect(status.cell(WORKER["mac"], "last-seen")).not_to_have_class(re.compile(r"\bstalled\b"))
    status.assert_quiet()


def test_registry_section_shows_each_image_and_what_failed(status: StatusPage) -> None:
    from playwright.sync_api import expect

    unreadable = "cannot read the archive: /bsroot/images/broken.tar: not a readable tar file"
    coredns = registry_image("registry.k8s.io/coredns/coredns:v1.11.1", "present")
    flannel = registry_image("docker.io/flannel/flannel:v0.25.1", "failed", HOSTILE)
    status.api.set_registry(
        registry_payload(
            "ready",
            [
                ("broken.tar", "failed", unreadable, []),
                ("flannel.tar", "failed", "docker.io/flannel/flannel:v0.25.1: HTTP 400", [flannel]),
                ("kube.tar", "pushed", None, [PAUSE_PUSHED, coredns]),
            ],
        )
    )
    status.open()
    page = status.page
    section = page.locator("#registry")
    expect(section).to_be_visible()
    expect(page.locator('[data-field="registry-name"]')).to_have_text("bootstrapper:5000")
    expect(page.locator('[data-field="registry-backend"]')).to_have_text("binary")
    expect(page.locator('[data-field="registry-state"]')).to_have_text("ready")
    expect(page.locator('[data-field="registry-state"]')).to_have_class(re.compile(r"\bok\b"))
    expect(page.locator('[data-field="registry-summary"]')).to_have_text(
        "1 pushed, 1 present, 2 failed"
    )
    lines = section.locator("li[data-image]")
    expect(lines).to_have_count(4)
    images = lines.evaluate_all("lines => lines.map(l => [l.dataset.image, l.dataset.state])")
    assert images == [
        ["broken.tar", "failed"],
        ["bootstrapper:5000/docker.io/flannel/flannel:v0.25.1", "failed"],
        ["bootstrapper:5000/registry.k8s.io/pause:3.9", "pushed"],
        ["bootstrapper:5000/registry.k8s.io/coredns/coredns:v1.11.1", "present"],
    ]
    broken = section.locator('li[data-image="broken.tar"]')
    expect(broken.locator('[data-field="image-state"]')).to_have_text("failed")
    expect(broken.locator('[data-field="reason"]')).to_have_text(unreadable)
    color = broken.locator('[data-field="reason"]').evaluate("e => getComputedStyle(e).color")
    red, green, blue = (int(c) for c in re.findall(r"\d+", color)[:3])
    assert red > 150, color
    assert red > 2 * green, color
    assert red > 2 * blue, color
    flannel_line = lines.nth(1)
    expect(flannel_line.locator('[data-field="reason"]')).to_have_text(HOSTILE)  # as text
    assert page.locator("img").count() == 0
    expect(lines.nth(2).locator('[data-field="reason"]')).to_have_count(0)

    # The next poll: the registry restarts, and the retried image went up.
    again = registry_payload(
        "restarting",
        [
            ("broken.tar", "failed", unreadable, []),
            ("flannel.tar", "pushed", None, [{**flannel, "state": "pushed", "attempts": 2}]),
            ("kube.tar", "pushed", None, [PAUSE_PUSHED, coredns]),
        ],
        detail="exit status 2; last output: listen tcp 10.77.0.1:5000: bind: address in use",
        restarts=1,
    )
    status.api.set_registry(again)
    expect(page.locator('[data-field="registry-state"]')).to_have_text("restarting")
    detail = page.locator('[data-field="registry-detail"]')
    expect(detail).to_be_visible()
    expect(detail).to_contain_text("address in use")
    expect(flannel_line.locator('[data-field="image-state"]')).to_have_text("pushed")
    expect(page.locator('[data-field="registry-summary"]')).to_have_text(
        "2 pushed, 1 present, 1 failed, restarted 1 time"
    )
    # The machines' table is not disturbed by any of this.
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("kernel/initrd")
    status.assert_quiet()


def test_a_refused_install_token_raises_an_alarm_banner(status: StatusPage) -> None:
    from playwright.sync_api import expect

    status.open()
    page = status.page
    banner = page.locator("#alarms")
    expect(status.cell(MASTER["mac"], "stage")).to_have_text("kernel/initrd")
    expect(banner).to_be_hidden()
    alarm = {
        "at": time.time(),
        "mac": MASTER["mac"],
        "use": "config",
        "verdict": "used",
        "client": HOSTILE,
    }
    status.api.set_alarms([alarm])
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Install token refused")
    item = page.locator(f'#alarm-list li[data-mac="{MASTER["mac"]}"]')
    expect(item).to_contain_text("config refused (used)")
    expect(item).to_contain_text(HOSTILE)  # as text, never as markup
    assert page.locator("#alarms img").count() == 0
    status.api.set_alarms([])
    expect(banner).to_be_hidden()
    status.assert_quiet()
