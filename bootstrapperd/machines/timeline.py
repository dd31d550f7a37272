"""Boot timelines: what each machine did, in order (DHCP, TFTP, HTTP events), kept per MAC.

The latest events of every machine are kept in memory for the status page and the API, and
written to the state database with the next group commit so they survive restarts.

Everything here is bounded, whatever the network sends: events per machine
(:data:`PER_MACHINE`), machines outside the description (:data:`MAX_MACHINES`, the one seen
longest ago evicted first; the description's nodes are always kept), the JSON text of an
event's detail (:data:`MAX_DETAIL_CHARS`), and rows in the database (:data:`KEEP_ROWS`). A row
of the database that is not an event this module could have written (a MAC that is not
canonical, detail that is not a JSON object, a time that is not a finite number, a source or
kind it does not know) is skipped when loaded, so no stored row can break a view. Each limit
hit is counted in :attr:`Timeline.counters` (``/metrics``) and logged at most once a minute.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocols.throttle import LogThrottle

from ..model.fields import canonical_mac
from .events import EventKind, Source
from .stages import NOT_SEEN, Progress, advance
from .statedb import StateDB

log = logging.getLogger("bootstrapperd.timeline")

PER_MACHINE = 200  # events kept in memory for each MAC
KEEP_ROWS = 100_000  # events kept in the database (the oldest pruned at start and as it grows)
PRUNE_EVERY = 10_000  # events recorded between two prunes of the database
MAX_MACHINES = 10_000  # machines outside the description with a timeline
MAX_DETAIL_CHARS = 2_048  # JSON text of one event's detail
MAX_VALUE_CHARS = 256  # one string of a detail that had to be shortened
MAX_STORED_DETAIL = 64 * 1024  # a stored detail longer than this is not parsed at all
LOG_INTERVAL = 60.0  # seconds between two log lines of one kind of limit hit

# What each counter of Timeline.counters means (the label of bootstrapperd_timeline_limited).
EVICTED = "machine_evicted"  # a machine's timeline dropped to keep MAX_MACHINES
ROW_SKIPPED = "row_skipped"  # a stored row that is not an event, skipped at load
DETAIL_TRUNCATED = "detail_truncated"  # a detail cut to MAX_DETAIL_CHARS
MAC_REFUSED = "mac_refused"  # an event for something that is not a canonical MAC, not kept
ROWS_PRUNED = "rows_pruned"  # prunes of the database to KEEP_ROWS (at start and as it grows)
LIMITS = (EVICTED, ROW_SKIPPED, DETAIL_TRUNCATED, MAC_REFUSED, ROWS_PRUNED)

_COLUMNS = ("mac", "at", "source", "kind", "detail")
_RESERVED = frozenset({"at", "source", "kind"})  # the event's own fields in as_dict()
_SOURCES = frozenset(Source)
_KINDS = frozenset(EventKind)
# Each text column read as bytes (a TEXT that is not UTF-8 must not make the read raise), the
# time only when it is a number.
_LOAD = (
    "SELECT CAST(mac AS BLOB),"
    " CASE WHEN typeof(at) IN ('integer', 'real') THEN at END,"
    " CAST(source AS BLOB), CAST(kind AS BLOB), CAST(detail AS BLOB)"
    " FROM events ORDER BY id"
)
_PRUNE = "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?"


class BadRow(ValueError):
    """A stored row that is not an event: the reason says which column."""


class QuietLog:
    """Warnings that a flood could repeat: each kind is logged at most once per
    :data:`LOG_INTERVAL`, the next line saying how many were held back."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._clock = clock
        self._throttle = LogThrottle(LOG_INTERVAL)
        self._held: Counter[str] = Counter()

    def warning(self, kind: str, message: str, *args: object, **fields: object) -> bool:
        """Log ``message`` unless ``kind`` was logged less than a minute ago; True if logged."""
        if not self._throttle.allow(kind, self._clock()):
            self._held[kind] += 1
            return False
        held = self._held.pop(kind, 0)
        extra = {"fields": {"limit": kind, "held_back": held, **fields}}
        self._log.warning(message, *args, extra=extra)
        return True


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a machine's boot. The detail is kept as its JSON text (what the database
    stores): tens of thousands of machines' timelines stay small in memory."""

    at: float
    source: str  # a Source (as stored: plain text)
    kind: str  # an EventKind (as stored: plain text)
    detail_json: str  # always a JSON object of finite values, at most MAX_DETAIL_CHARS long

    @property
    def detail(self) -> Mapping[str, Any]:
        detail: dict[str, Any] = json.loads(self.detail_json)
        return detail

    def as_dict(self) -> dict[str, Any]:
        extra = {k: v for k, v in self.detail.items() if k not in _RESERVED}
        return {"at": self.at, "source": self.source, "kind": self.kind, **extra}


def _dumps(value: object) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), allow_nan=False)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text[:20]}")
    return value


def _no_constant(text: str) -> None:
    raise ValueError(f"not a finite number: {text}")


def parse_detail(text: str) -> dict[str, Any]:
    """A stored detail: a JSON object with finite numbers only, else :class:`BadRow`."""
    if len(text) > MAX_STORED_DETAIL:
        raise BadRow(f"detail longer than {MAX_STORED_DETAIL} characters")
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRow(f"detail is not JSON: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise BadRow("detail is not a JSON object")
    return value


def _shorten(value: object) -> object:
    """A value of a detail that must shrink: scalars kept, strings (and whatever else, as
    text) cut to MAX_VALUE_CHARS."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else _dumps(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def bounded_detail(detail: Mapping[str, Any]) -> tuple[str, bool]:
    """The detail's JSON text, at most :data:`MAX_DETAIL_CHARS` long, and whether it had to be
    cut: long values are shortened and keys that no longer fit are dropped, in order, and
    ``"truncated": true`` is added."""
    text = _dumps(detail)
    if len(text) <= MAX_DETAIL_CHARS:
        return text, False
    budget = MAX_DETAIL_CHARS - len(_dumps({"truncated": True}))
    kept: dict[str, object] = {}
    for key, value in detail.items():
        name, short = str(key)[:MAX_VALUE_CHARS], _shorten(value)
        cost = len(_dumps(name)) + 1 + len(_dumps(short)) + 1  # "name":value,
        if cost > budget or name == "truncated":
            continue
        kept[name] = short
        budget -= cost
    kept["truncated"] = True
    return _dumps(kept), True


def _text(value: object, column: str) -> str:
    if not isinstance(value, bytes):
        raise BadRow(f"{column} is missing")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise BadRow(f"{column} is not UTF-8") from None


def event_of_row(row: tuple[Any, ...]) -> tuple[str, Event, bool]:
    """The MAC and event a stored row holds (and whether its detail had to be cut), else
    :class:`BadRow`. ``row`` is one row of :data:`_LOAD`."""
    raw_mac, at, raw_source, raw_kind, raw_detail = row
    mac = _text(raw_mac, "mac")
    if canonical_mac(mac) != mac:
        raise BadRow("mac is not a canonical MAC address")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise BadRow("at is not a finite number")
    source, kind = _text(raw_source, "source"), _text(raw_kind, "kind")
    if source not in _SOURCES:
        raise BadRow("source is unknown")
    if kind not in _KINDS:
        raise BadRow("kind is unknown")
    detail_json, cut = bounded_detail(parse_detail(_text(raw_detail, "detail")))
    return mac, Event(float(at), source, kind, detail_json), cut


class Timeline:
    """Every machine's latest events and progress, within the bounds above. ``pinned`` says
    whether a MAC is one of the description's nodes (never evicted; read at each eviction, so
    a reload counts)."""

    def __init__(
        self,
        db: StateDB,
        pinned: Callable[[str], bool] | None = None,
        *,
        max_machines: int = MAX_MACHINES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._pinned = pinned or (lambda mac: False)
        self._max_machines = max_machines
        self._events: dict[str, list[Event]] = {}
        self._progress: dict[str, Progress] = {}
        self._recency: OrderedDict[str, None] = OrderedDict()  # evictable MACs, oldest first
        self._since_prune = 0
        self.counters: Counter[str] = Counter()
        self.quiet = QuietLog(log, clock)
        # Told of every event kept (machines/lifecycle.py follows install.sh's reports).
        self.on_event: Callable[[str, EventKind], None] | None = None
        self._prune()
        self._load()

    def _load(self) -> None:
        for row in self._db.query(_LOAD):
            try:
                mac, event, cut = event_of_row(row)
            except BadRow as exc:
                self.counters[ROW_SKIPPED] += 1
                self.quiet.warning(ROW_SKIPPED, "state: skipped a stored event row: %s", exc)
                continue
            if cut:
                self._truncated(mac)
            self._keep(mac, event)

    def _prune(self) -> None:
        self._db.write(_PRUNE, (KEEP_ROWS,))
        self._since_prune = 0
        self.counters[ROWS_PRUNED] += 1

    def record(self, mac: str, at: float, source: Source, kind: EventKind, **detail: Any) -> Event:
        """Keep one event (its detail cut to :data:`MAX_DETAIL_CHARS`) and queue it for the
        database. An event for something that is not a canonical MAC is counted, not kept."""
        detail_json, cut = bounded_detail(detail)
        event = Event(at, source, kind, detail_json)
        if canonical_mac(mac) != mac:
            self.counters[MAC_REFUSED] += 1
            self.quiet.warning(MAC_REFUSED, "timeline: event for a malformed MAC not kept")
            return event
        if cut:
            self._truncated(mac)
        self._keep(mac, event)
        self._db.insert("events", _COLUMNS, (mac, at, source, kind, event.detail_json))
        if self.on_event is not None:
            self.on_event(mac, kind)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._prune()
        return event

    def _truncated(self, mac: str) -> None:
        self.counters[DETAIL_TRUNCATED] += 1
        self.quiet.warning(
            DETAIL_TRUNCATED,
            "timeline: event detail cut to %d characters",
            MAX_DETAIL_CHARS,
            mac=mac,
        )

    def _keep(self, mac: str, event: Event) -> None:
        self._progress[mac] = advance(self._progress.get(mac, NOT_SEEN), event)
        events = self._events.setdefault(mac, [])
        events.append(event)
        if len(events) > 2 * PER_MACHINE:
            del events[:-PER_MACHINE]
        if self._pinned(mac):
            self._recency.pop(mac, None)
        else:
            self._recency[mac] = None
            self._recency.move_to_end(mac)
            if len(self._recency) > self._max_machines:
                self._evict()

    def _evict(self) -> None:
        """Drop the timelines seen longest ago until MAX_MACHINES are left (a machine that
        joined the description since its last event is kept, and no longer counted)."""
        while len(self._recency) > self._max_machines:
            mac, _ = self._recency.popitem(last=False)
            if self._pinned(mac):
                continue
            del self._events[mac]
            del self._progress[mac]
            self.counters[EVICTED] += 1
            self.quiet.warning(
                EVICTED,
                "timeline: more than %d machines outside the description; "
                "dropped the one seen longest ago",
                self._max_machines,
                mac=mac,
            )

    def of(self, mac: str) -> tuple[Event, ...]:
        """The machine's latest events, oldest first."""
        return tuple(self._events.get(mac, ())[-PER_MACHINE:])

    def progress(self, mac: str) -> Progress:
        """Where the machine is in its boot (kept up to date as events arrive)."""
        return self._progress.get(mac, NOT_SEEN)

    def seen(self, mac: str) -> bool:
        """Whether the machine has a timeline."""
        return mac in self._events

    def machines(self) -> tuple[str, ...]:
        """Every MAC with a timeline, in the order first seen."""
        return tuple(self._events)
