"""The timeline and the operator's API against hostile input: rows of the state database that
no version of the daemon could have written are skipped (and logged) at load and never break a
view; timelines are kept for a bounded number of machines (the description's always, the
others evicted seen-longest-ago first); an event's detail is bounded; ``/api/v1/nodes`` is
paged, every machine on exactly one page, the counts over all of them."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bootstrapperd.bsroot.layout import Bsroot
from bootstrapperd.http.nodes import DEFAULT_PAGE, MAX_PAGE, Listing
from bootstrapperd.machines import timeline as timeline_module
from bootstrapperd.machines.events import EventKind, Source
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.machines.timeline import (
    DETAIL_TRUNCATED,
    EVICTED,
    LOG_INTERVAL,
    MAC_REFUSED,
    MAX_DETAIL_CHARS,
    MAX_MACHINES,
    ROW_SKIPPED,
    QuietLog,
    Timeline,
)
from bootstrapperd.pack import init_bsroot
from tests.conftest import EXAMPLE
from tests.httpapp import Served, serve

MASTER = "52:54:00:77:00:10"  # the bundled example's nodes
WORKER = "52:54:00:77:00:11"
PLAIN = "52:54:00:77:00:12"
MODEL = (MASTER, WORKER, PLAIN)
GOOD = "52:54:00:aa:00:01"  # a machine outside the description with good rows
GOOD_DETAIL = '{"ip":"10.77.0.50","boot_file":"undionly.kpxe"}'
# What the HTTP tests' state database is called (tests.httpapp.make_context).
TEST_DB = "test.db"

# (mac, at, source, kind, detail) as SQL expressions: each row is one way a stored event can be
# something the daemon never writes.
POISON = [
    ("'02'", "1700000000.0", "'dhcp'", "'discover'", "'{}'"),  # the issue: hlen 1
    ("'52:54:00:AB:CD:EF'", "1700000000.0", "'dhcp'", "'ack'", "'{}'"),  # not canonical
    ("''", "1700000000.0", "'dhcp'", "'ack'", "'{}'"),
    ("12345", "1700000000.0", "'dhcp'", "'ack'", "'{}'"),  # a number
    ("x'525400'", "1700000000.0", "'dhcp'", "'ack'", "'{}'"),  # a blob
    ("CAST(x'ff00ff' AS TEXT)", "1700000000.0", "'dhcp'", "'ack'", "'{}'"),  # not UTF-8
    ("'52:54:00:bb:00:01'", "'yesterday'", "'dhcp'", "'ack'", "'{}'"),
    ("'52:54:00:bb:00:02'", "9e999", "'dhcp'", "'ack'", "'{}'"),  # infinite
    ("'52:54:00:bb:00:03'", "-9e999", "'dhcp'", "'ack'", "'{}'"),
    ("'52:54:00:bb:00:04'", "1700000000.0", "'smtp'", "'ack'", "'{}'"),
    ("'52:54:00:bb:00:05'", "1700000000.0", "'dhcp'", "'explode'", "'{}'"),
    ("'52:54:00:bb:00:06'", "1700000000.0", "7", "'ack'", "'{}'"),
    ("'52:54:00:bb:00:07'", "1700000000.0", "'dhcp'", "'ack'", "'[]'"),
    ("'52:54:00:bb:00:08'", "1700000000.0", "'dhcp'", "'ack'", "'\"text\"'"),
    ("'52:54:00:bb:00:09'", "1700000000.0", "'dhcp'", "'ack'", "'not json'"),
    ("'52:54:00:bb:00:0a'", "1700000000.0", "'dhcp'", "'ack'", "'{\"x\": NaN}'"),
    ("'52:54:00:bb:00:0b'", "1700000000.0", "'dhcp'", "'ack'", "'{\"x\": 1e999}'"),
    ("'52:54:00:bb:00:0c'", "1700000000.0", "'dhcp'", "'ack'", "'{\"x\": -Infinity}'"),
    ("'52:54:00:bb:00:0d'", "1700000000.0", "'dhcp'", "'ack'", "'{\"x\": 1' || zeroblob(0)"),
    ("'52:54:00:bb:00:0e'", "1700000000.0", "'dhcp'", "'ack'", "printf('%.5000c', '[')"),
    ("'52:54:00:bb:00:0f'", "1700000000.0", "'dhcp'", "'ack'",
     "'{\"n\": 1' || printf('%.5000c', '0') || '}'"),
    ("'52:54:00:bb:00:10'", "1700000000.0", "'dhcp'", "'ack'", "CAST(x'7b22ff227d' AS TEXT)"),
    ("'52:54:00:bb:00:11'", "1700000000.0", "'dhcp'", "'ack'",
     "printf('{\"x\":\"%.70000c\"}', 'a')"),
]  # fmt: skip


def write_rows(db_path: Path, rows: list[tuple[str, str, str, str, str]]) -> None:
    """Append rows to the events table as raw SQL (what a hostile or corrupt file holds)."""
    StateDB(db_path).close()  # the schema
    conn = sqlite3.connect(db_path)
    try:
        for row in rows:
            conn.execute(
                f"INSERT INTO events (mac, at, source, kind, detail) VALUES ({', '.join(row)})"  # noqa: S608 (the test's own constants)
            )
        conn.commit()
    finally:
        conn.close()


def good_rows() -> list[tuple[str, str, str, str, str]]:
    at = str(time.time())
    return [
        (f"'{GOOD}'", at, "'dhcp'", "'ack'", f"'{GOOD_DETAIL}'"),
        (f"'{WORKER}'", at, "'dhcp'", "'ack'", f"'{GOOD_DETAIL}'"),
        (f"'{WORKER}'", at, "'install'", "'installed'", '\'{"message":"ok"}\''),
        # A detail naming the event's own fields cannot overwrite them.
        (f"'{GOOD}'", at, "'install'", "'note'", '\'{"at":"x","kind":[1],"message":"m"}\''),
    ]


def strict_json(text: str) -> Any:
    """JSON as a browser's JSON.parse takes it: no NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the answer")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def root(tmp_path: Path) -> Bsroot:
    return init_bsroot(EXAMPLE, tmp_path / "bsroot")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    state = StateDB(tmp_path / "state.db")
    yield state
    state.close()


def record(timeline: Timeline, mac: str, at: float, **detail: Any) -> None:
    timeline.record(mac, at, Source.DHCP, EventKind.ACK, ip="10.77.0.99", **detail)


def stranger(n: int) -> str:
    return "02:00:" + ":".join(f"{b:02x}" for b in n.to_bytes(4, "big"))


async def all_pages(served: Served, limit: int | None = None) -> list[dict[str, Any]]:
    """Every page of /api/v1/nodes, following ``page.next``."""
    url: str | None = "/api/v1/nodes" + (f"?limit={limit}" if limit else "")
    pages = []
    while url is not None:
        response = await served.client.get(url)
        assert response.status == 200, await response.text()
        page = strict_json(await response.text())
        pages.append(page)
        url = page["page"]["next"]
        assert len(pages) < 10_000
    return pages


# ---- rows of the state database ---------------------------------------------------------


async def test_bad_rows_are_skipped_logged_and_break_no_view(
    root: Bsroot, caplog: pytest.LogCaptureFixture
) -> None:
    write_rows(root.state / TEST_DB, [*POISON, *good_rows()])
    with caplog.at_level(logging.WARNING, logger="bootstrapperd.timeline"):
        async with serve(root) as served:
            timeline = served.context.timeline
            assert timeline.counters[ROW_SKIPPED] == len(POISON)
            assert set(timeline.machines()) == {GOOD, WORKER}
            assert [(e.source, e.kind) for e in timeline.of(GOOD)] == [
                ("dhcp", "ack"),
                ("install", "note"),
            ]
            assert timeline.progress(WORKER).name == "installed"

            for path in ("/api/v1/nodes", f"/api/v1/nodes/{GOOD}", f"/api/v1/nodes/{WORKER}"):
                response = await served.client.get(path)
                assert response.status == 200, (path, await response.text())
                strict_json(await response.text())
            nodes = strict_json(await (await served.client.get("/api/v1/nodes")).text())
            assert [n["mac"] for n in nodes["nodes"]] == [*MODEL, GOOD]
            assert nodes["counts"]["installed"] == 1
            note = strict_json(await (await served.client.get(f"/api/v1/nodes/{GOOD}")).text())
            last = note["timeline"][-1]
            assert (last["source"], last["kind"], last["message"]) == ("install", "note", "m")
            assert isinstance(last["at"], float)
            for path in ("/api/v1/nodes/02", "/api/v1/nodes/52:54:00:bb:00:07"):
                assert (await served.client.get(path)).status == 404, path
            assert (await served.client.get("/")).status == 200
            metrics = await served.client.get("/metrics")
            assert metrics.status == 200
            samples = {
                (s.name, s.labels.get("limit")): s.value
                for f in text_string_to_metric_families(await metrics.text())
                for s in f.samples
            }
            assert samples[("bootstrapperd_timeline_limited_total", ROW_SKIPPED)] == len(POISON)
            assert samples[("bootstrapperd_timeline_machines", None)] == 2
    skipped = [r for r in caplog.records if "skipped a stored event row" in r.getMessage()]
    assert len(skipped) == 1  # once a minute, however many rows


async def test_the_row_of_the_issue_breaks_no_view(root: Bsroot) -> None:
    """A DISCOVER with hlen 1 was stored under MAC ``02``: the API answered 500 from then on."""
    write_rows(root.state / TEST_DB, [POISON[0], *good_rows()])
    async with serve(root) as served:
        for path in ("/api/v1/nodes", "/api/v1/nodes?limit=1", "/metrics", "/"):
            response = await served.client.get(path)
            assert response.status == 200, (path, await response.text())
        nodes = strict_json(await (await served.client.get("/api/v1/nodes")).text())
        assert [n["mac"] for n in nodes["nodes"]] == [*MODEL, GOOD]


def test_each_poison_row_alone_is_skipped(tmp_path: Path) -> None:
    for n, row in enumerate(POISON):
        path = tmp_path / f"{n}.db"
        write_rows(path, [row])
        db = StateDB(path)
        try:
            timeline = Timeline(db)
            assert timeline.machines() == (), row
            assert timeline.counters[ROW_SKIPPED] == 1, row
        finally:
            db.close()


# ---- machines ----------------------------------------------------------------------------


def test_machines_beyond_the_cap_are_evicted_seen_longest_ago_first(db: StateDB) -> None:
    timeline = Timeline(db, lambda mac: mac in MODEL, max_machines=3)
    record(timeline, MASTER, 1.0)
    for n in range(3):
        record(timeline, stranger(n), 2.0 + n)
    record(timeline, stranger(0), 10.0)  # seen again: now the newest
    record(timeline, stranger(3), 11.0)
    assert set(timeline.machines()) == {MASTER, stranger(0), stranger(2), stranger(3)}
    assert timeline.counters[EVICTED] == 1
    for n in range(4, 40):
        record(timeline, stranger(n), 20.0 + n)
    assert set(timeline.machines()) == {MASTER, stranger(37), stranger(38), stranger(39)}
    assert timeline.progress(MASTER).name == "dhcp"
    assert timeline.of(stranger(1)) == ()
    assert timeline.progress(stranger(1)).name is None
    assert timeline.counters[EVICTED] == 37


def test_the_cap_holds_when_loading_the_database(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    timeline = Timeline(db)
    for n in range(50):
        record(timeline, stranger(n), float(n))
    db.close()
    db = StateDB(tmp_path / "state.db")
    try:
        loaded = Timeline(db, lambda mac: mac == stranger(0), max_machines=10)
        assert set(loaded.machines()) == {stranger(0), *(stranger(n) for n in range(40, 50))}
    finally:
        db.close()


def test_the_default_cap(db: StateDB) -> None:
    timeline = Timeline(db)
    for n in range(MAX_MACHINES + 25):
        record(timeline, stranger(n), float(n))
    assert len(timeline.machines()) == MAX_MACHINES
    assert timeline.counters[EVICTED] == 25
    assert not timeline.seen(stranger(24))
    assert timeline.seen(stranger(25))


def test_an_event_for_a_malformed_mac_is_not_kept(db: StateDB) -> None:
    timeline = Timeline(db)
    for mac in ("02", "", "52:54:00:AB:CD:EF", "52-54-00-ab-cd-ef", "zz:zz:zz:zz:zz:zz"):
        record(timeline, mac, 1.0)
    assert timeline.machines() == ()
    assert timeline.counters[MAC_REFUSED] == 5


# ---- detail ------------------------------------------------------------------------------


def test_a_detail_is_bounded(db: StateDB) -> None:
    timeline = Timeline(db)
    event = timeline.record(
        GOOD,
        1.0,
        Source.DHCP,
        EventKind.ACK,
        ip="10.77.0.9",
        hostname="h" * 100_000,
        options={str(n): "v" * 300 for n in range(200)},
        **{f"k{n}": n for n in range(2_000)},
    )
    assert len(event.detail_json) <= MAX_DETAIL_CHARS
    detail = event.detail
    assert detail["truncated"] is True
    assert detail["ip"] == "10.77.0.9"
    assert detail["hostname"].startswith("hhhh")
    assert timeline.counters[DETAIL_TRUNCATED] == 1
    small = timeline.record(GOOD, 2.0, Source.DHCP, EventKind.ACK, hostname="node-1")
    assert small.detail == {"hostname": "node-1"}
    assert timeline.counters[DETAIL_TRUNCATED] == 1
    db.close()
    reopened = StateDB(db.path)
    try:
        stored = reopened.query("SELECT length(detail) FROM events")
        assert max(n for (n,) in stored) <= MAX_DETAIL_CHARS
    finally:
        reopened.close()


async def test_a_long_request_path_is_a_bounded_detail(root: Bsroot) -> None:
    async with serve(root) as served:
        served.act_as(WORKER)
        deep = root.root / "html" / "static"
        for n in range(15):  # a path within PATH_MAX, longer than a detail may be
            deep = deep / f"{n:02d}{'d' * 200}"
        deep.mkdir(parents=True)
        (deep / "file.txt").write_text("hello\n")
        long_path = "/static/" + str((deep / "file.txt").relative_to(root.root / "html/static"))
        assert len(long_path) > MAX_DETAIL_CHARS
        response = await served.client.get(long_path)
        assert response.status == 200
        assert await response.read() == b"hello\n"
        for _ in range(1_000):  # the event is recorded once the file is sent
            events = served.context.timeline.of(WORKER)
            if events:
                break
            await asyncio.sleep(0.01)
        assert events
        assert all(len(e.detail_json) <= MAX_DETAIL_CHARS for e in events)
        node = strict_json(await (await served.client.get(f"/api/v1/nodes/{WORKER}")).text())
        assert node["timeline"][-1]["truncated"] is True


# ---- the timeline's database -------------------------------------------------------------


async def test_the_database_is_pruned_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeline_module, "KEEP_ROWS", 50)
    monkeypatch.setattr(timeline_module, "PRUNE_EVERY", 100)
    db = StateDB(tmp_path / "state.db")
    timeline = Timeline(db)
    for n in range(1_000):
        record(timeline, GOOD, float(n))
        if n % 30 == 0:
            await db.flush()  # as the daemon's services do: a commit every few events
    db.close()
    reopened = StateDB(tmp_path / "state.db")
    try:
        [(rows,)] = reopened.query("SELECT COUNT(*) FROM events")
        assert rows <= 50 + 100
    finally:
        reopened.close()


# ---- the log -----------------------------------------------------------------------------


def test_a_kind_of_limit_is_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    quiet = QuietLog(logging.getLogger("test.quiet"), lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.quiet"):
        logged = [quiet.warning("a", "hit a") for _ in range(5)]
        logged.append(quiet.warning("b", "hit b"))
        now[0] += LOG_INTERVAL
        logged.append(quiet.warning("a", "hit a again"))
    assert logged == [True, False, False, False, False, True, True]
    assert [r.getMessage() for r in caplog.records] == ["hit a", "hit b", "hit a again"]
    assert caplog.records[-1].fields["held_back"] == 4  # type: ignore[attr-defined]


# ---- paging ------------------------------------------------------------------------------


async def test_every_machine_on_exactly_one_page_and_counts_over_all(root: Bsroot) -> None:
    async with serve(root) as served:
        timeline = served.context.timeline
        strangers = [stranger(n) for n in range(2_345)]
        for n, mac in enumerate(reversed(strangers)):
            record(timeline, mac, float(n), boot_file="undionly.kpxe")
        timeline.record(WORKER, 1.0, Source.INSTALL, EventKind.INSTALLED, message="ok")
        total = len(MODEL) + len(strangers)
        for limit in (None, 1_000, 7):
            pages = await all_pages(served, limit)
            macs = [n["mac"] for page in pages for n in page["nodes"]]
            assert macs == [*MODEL, *sorted(strangers)]
            size = limit or DEFAULT_PAGE
            assert len(pages) == -(-total // size)
            for page in pages:
                assert page["total"] == total
                assert sum(page["counts"].values()) == total
                assert page["counts"]["dhcp"] == len(strangers)
                assert page["counts"]["installed"] == 1
                assert page["counts"]["not-seen"] == 2
                assert len(page["nodes"]) <= size
            assert pages[-1]["page"]["next"] is None
            assert pages[-1]["page"]["next_after"] is None


def test_a_cursor_survives_the_machine_it_names_going_away() -> None:
    listing = Listing(known=(MASTER,), others=(stranger(1), stranger(3), stranger(5)))
    assert listing.page(listing.start_after(None), 2) == [MASTER, stranger(1)]
    assert listing.page(listing.start_after(stranger(2)), 2) == [stranger(3), stranger(5)]
    assert listing.page(listing.start_after(MASTER), 10) == [stranger(1), stranger(3), stranger(5)]
    assert listing.page(listing.start_after(stranger(9)), 10) == []


@pytest.mark.parametrize(
    "query",
    ["limit=0", f"limit={MAX_PAGE + 1}", "limit=-1", "limit=ten", "limit=1e3", "limit=" + "9" * 99,
     "limit=%D9%A1", "after=02", "after=" + "a" * 2_000],
)  # fmt: skip
async def test_bad_paging_is_a_400(root: Bsroot, query: str) -> None:
    async with serve(root) as served:
        response = await served.client.get(f"/api/v1/nodes?{query}")
        assert response.status == 400, query


async def test_twenty_thousand_machines_give_bounded_pages(root: Bsroot) -> None:
    async with serve(root) as served:
        timeline = served.context.timeline
        for n in range(20_000):
            record(timeline, stranger(n), float(n), hostname="x" * 5_000, boot_file="ipxe.efi")
        assert len(timeline.machines()) == MAX_MACHINES
        first = await served.client.get("/api/v1/nodes")
        body = await first.read()
        page = strict_json(body.decode())
        assert len(page["nodes"]) == DEFAULT_PAGE
        assert page["total"] == len(MODEL) + MAX_MACHINES
        largest = await served.client.get(f"/api/v1/nodes?limit={MAX_PAGE}")
        largest_body = await largest.read()
        assert len(strict_json(largest_body.decode())["nodes"]) == MAX_PAGE
        # Each machine's view is a few hundred bytes plus one bounded detail.
        assert len(largest_body) <= MAX_PAGE * (MAX_DETAIL_CHARS + 1_000)
        pages = await all_pages(served, MAX_PAGE)
        assert sum(len(p["nodes"]) for p in pages) == len(MODEL) + MAX_MACHINES
        assert max(len(p["nodes"]) for p in pages) == MAX_PAGE
