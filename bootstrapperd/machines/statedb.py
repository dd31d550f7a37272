"""The daemon's durable state: one SQLite database under ``bsroot/state/`` (leases, boot events).

Writes are queued in memory and committed in groups by one writer thread: ``await flush()``
returns once everything queued before the call is on disk (WAL, ``synchronous=FULL``), so a
burst of a thousand leases costs one fsync, not a thousand, and a reply that promises a lease
is sent only after that lease would survive a crash or a power cut.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("bootstrapperd.state")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    ip TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    state TEXT NOT NULL,
    expires REAL,            -- NULL: infinite
    client_id TEXT,          -- hex
    hostname TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_mac ON leases(mac);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    mac TEXT NOT NULL,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL     -- JSON object
);
CREATE INDEX IF NOT EXISTS events_mac ON events(mac, id);
CREATE TABLE IF NOT EXISTS install_tokens (
    mac TEXT PRIMARY KEY,
    digest TEXT NOT NULL,    -- sha256 of the token, hex: the token itself is never stored
    issued REAL NOT NULL,
    expires REAL NOT NULL,
    used TEXT NOT NULL       -- comma-separated uses made ("config", "csr:worker", ..., "ended")
);
CREATE TABLE IF NOT EXISTS machine_states (
    mac TEXT PRIMARY KEY,
    state TEXT NOT NULL,     -- machines/lifecycle.py MachineState (never "discovered")
    since REAL NOT NULL,
    why TEXT NOT NULL        -- what set it: "report installed", "reinstall by admin", ...
);
"""

Statement = tuple[str, Sequence[Any]]
IDLE_COMMIT = 0.2  # seconds a write nobody waits for may stay queued


class StateDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-writer")
        self._pending: list[Statement] = []
        self._queued = 0  # statements queued since start
        self._durable = 0  # statements committed since start
        self._inflight: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._bulk_sql: dict[tuple[str, tuple[str, ...], bool], str] = {}
        self._bulk: set[str] = set()
        self.commits = 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read (at start-up, before writes begin, or from tests)."""
        return self._conn.execute(sql, params).fetchall()

    def insert(
        self, table: str, columns: Sequence[str], row: Sequence[Any], *, replace: bool = False
    ) -> None:
        """Queue one row for ``table`` (JSON-representable values). All the rows of a commit
        go to SQLite as one statement over one JSON array: the writer thread then gives the
        GIL back a handful of times per commit, not once per row (when the event loop keeps
        the GIL busy, each hand-back costs up to a switch interval)."""
        key = (table, tuple(columns), replace)
        sql = self._bulk_sql.get(key)
        if sql is None:
            picks = ", ".join(f"value->>{i}" for i in range(len(columns)))
            verb = "INSERT OR REPLACE" if replace else "INSERT"
            sql = f"{verb} INTO {table} ({', '.join(columns)}) SELECT {picks} FROM json_each(?)"  # noqa: S608 (the table and columns are the caller's constants; values are bound)
            self._bulk_sql[key] = sql
            self._bulk.add(sql)
        self.write(sql, row)

    def write(self, sql: str, params: Sequence[Any]) -> None:
        """Queue one statement for the next group commit (at the latest ``IDLE_COMMIT`` s away:
        writes nobody waits for, such as a release or a boot event, still reach the disk)."""
        self._pending.append((sql, params))
        self._queued += 1
        if self._idle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not serving (start-up, tests): close() or flush() commits
            self._idle = loop.call_later(IDLE_COMMIT, self._commit_idle)

    def _commit_idle(self) -> None:
        self._idle = None
        if not self._pending:
            return
        if self._inflight is None:
            self._start_commit()
        else:  # a commit is running: look again after it, or these writes would wait for the next
            self._idle = asyncio.get_running_loop().call_later(IDLE_COMMIT, self._commit_idle)

    @property
    def dirty(self) -> bool:
        return self._durable < self._queued

    async def flush(self) -> None:
        """Return once every statement queued before this call is committed."""
        target = self._queued
        while self._durable < target:
            if self._inflight is None:
                self._start_commit()
            assert self._inflight is not None  # noqa: S101 (invariant: _start_commit() set it)
            await asyncio.shield(self._inflight)

    def _start_commit(self) -> None:
        batch, self._pending = self._pending, []
        upto = self._queued
        future = asyncio.get_running_loop().run_in_executor(self._writer, self._commit, batch)

        def done(f: asyncio.Future[None]) -> None:
            self._inflight = None
            error = None if f.cancelled() else f.exception()
            if f.cancelled() or error is not None:
                log.error("state commit failed, will retry: %s", error or "cancelled")
                self._pending[:0] = batch  # retried by the next flush
            else:
                self._durable = upto
                self.commits += 1

        future.add_done_callback(done)
        self._inflight = future

    def _commit(self, batch: Iterable[Statement]) -> None:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            for sql, rows in _runs(batch):
                if sql in self._bulk:
                    conn.execute(sql, (json.dumps(rows),))
                else:
                    conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Commit what is still queued (synchronously) and close."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._writer.shutdown(wait=True)
        if self._pending:
            batch, self._pending = self._pending, []
            try:
                self._commit(batch)
                self._durable = self._queued
            except sqlite3.Error as exc:
                log.error("could not write %d queued state changes: %s", len(batch), exc)
        self._conn.close()


def _runs(batch: Iterable[Statement]) -> Iterator[tuple[str, list[Sequence[Any]]]]:
    """The batch as one ``executemany`` per distinct statement, in order of first appearance;
    each statement's rows keep their order. (The daemon's statements touch either one lease
    row or append one event, so statements of different text never depend on each other.)"""
    runs: dict[str, list[Sequence[Any]]] = {}
    for sql, params in batch:
        runs.setdefault(sql, []).append(params)
    return iter(runs.items())
