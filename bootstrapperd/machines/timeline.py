"""Boot timelines: what each machine did, in order (DHCP, TFTP, HTTP events), kept per MAC.

The latest events of every machine are kept in memory for the status page and the API, and
written to the state database with the next group commit so they survive restarts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .events import EventKind, Source
from .stages import NOT_SEEN, Progress, advance
from .statedb import StateDB

PER_MACHINE = 200  # events kept in memory for each MAC
KEEP_ROWS = 100_000  # events kept in the database (the oldest are pruned at start)
_COLUMNS = ("mac", "at", "source", "kind", "detail")


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a machine's boot. The detail is kept as its JSON text (what the database
    stores): tens of thousands of machines' timelines stay small in memory."""

    at: float
    source: str  # a Source (as stored: plain text)
    kind: str  # an EventKind (as stored: plain text)
    detail_json: str

    @property
    def detail(self) -> Mapping[str, Any]:
        detail: dict[str, Any] = json.loads(self.detail_json)
        return detail

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "source": self.source, "kind": self.kind, **self.detail}


class Timeline:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._events: dict[str, list[Event]] = {}
        self._progress: dict[str, Progress] = {}
        db.write("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (KEEP_ROWS,))
        for mac, at, source, kind, detail in db.query(
            "SELECT mac, at, source, kind, detail FROM events ORDER BY id"
        ):
            self._keep(mac, Event(at, source, kind, detail))

    def record(self, mac: str, at: float, source: Source, kind: EventKind, **detail: Any) -> Event:
        event = Event(at, source, kind, json.dumps(detail, default=str, separators=(",", ":")))
        self._keep(mac, event)
        self._db.insert("events", _COLUMNS, (mac, at, source, kind, event.detail_json))
        return event

    def _keep(self, mac: str, event: Event) -> None:
        self._progress[mac] = advance(self._progress.get(mac, NOT_SEEN), event)
        events = self._events.setdefault(mac, [])
        events.append(event)
        if len(events) > 2 * PER_MACHINE:
            del events[:-PER_MACHINE]

    def of(self, mac: str) -> tuple[Event, ...]:
        """The machine's latest events, oldest first."""
        return tuple(self._events.get(mac, ())[-PER_MACHINE:])

    def progress(self, mac: str) -> Progress:
        """Where the machine is in its boot (kept up to date as events arrive)."""
        return self._progress.get(mac, NOT_SEEN)

    def machines(self) -> tuple[str, ...]:
        """Every MAC with a timeline, in the order first seen."""
        return tuple(self._events)
