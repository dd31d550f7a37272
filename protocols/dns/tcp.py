"""The table of open DNS-over-TCP connections and its bounds: a cap per source address and in
total; when either is full, the least recently active idle connection makes room for the
newcomer (RFC 7766 6.2.2: a server may close idle connections to free resources), and only when
every connection is busy answering is the newcomer refused. No socket here: the endpoint keys
connections by whatever identifies them (its stream writers) and closes what this evicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["MAX_TCP_CLIENTS", "MAX_TCP_PER_SOURCE", "TCP_IDLE", "Admission", "TCPTable"]

TCP_IDLE = 10.0  # seconds a connection may wait for its next query (or the rest of one)
MAX_TCP_CLIENTS = 256  # open connections in total
MAX_TCP_PER_SOURCE = 16  # open connections from one source address

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Connection:
    source: str
    busy: bool = False  # a query is being answered: never evicted meanwhile


@dataclass(frozen=True, slots=True)
class Admission(Generic[K]):
    """What ``TCPTable.admit`` decided: whether the newcomer is in, and whom to close for it."""

    admitted: bool
    evicted: tuple[K, ...] = ()


class TCPTable(Generic[K]):
    """Open connections by key, least recently active first, with their source and whether a
    query is being answered on them."""

    def __init__(self, total: int = MAX_TCP_CLIENTS, per_source: int = MAX_TCP_PER_SOURCE) -> None:
        self.total = total
        self.per_source = per_source
        self._open: dict[K, _Connection] = {}
        self._by_source: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: object) -> bool:
        return key in self._open

    def from_source(self, source: str) -> int:
        """How many connections ``source`` has open."""
        return self._by_source[source]

    def admit(self, key: K, source: str) -> Admission[K]:
        """Take a new connection from ``source``, evicting the oldest idle one of that source
        when it is at its cap, then the oldest idle one of all when the table is full."""
        evicted: list[K] = []
        for scope, full in (
            (source, self._by_source[source] >= self.per_source),
            (None, len(self._open) >= self.total),
        ):
            if not full:
                continue
            victim = self._oldest_idle(scope)
            if victim is None:
                return Admission(False, tuple(evicted))
            self.drop(victim)
            evicted.append(victim)
        self._open[key] = _Connection(source)
        self._by_source[source] += 1
        return Admission(True, tuple(evicted))

    def busy(self, key: K) -> None:
        """A query arrived on ``key``: it is answered before the connection can be evicted."""
        connection = self._open.get(key)
        if connection is not None:
            connection.busy = True

    def idle(self, key: K) -> None:
        """``key`` answered its query: idle again, and now the most recently active."""
        connection = self._open.pop(key, None)
        if connection is not None:
            connection.busy = False
            self._open[key] = connection

    def drop(self, key: K) -> None:
        """``key`` is closed (or being closed): its place is free."""
        connection = self._open.pop(key, None)
        if connection is None:
            return
        self._by_source[connection.source] -= 1
        if not self._by_source[connection.source]:
            del self._by_source[connection.source]

    def _oldest_idle(self, source: str | None) -> K | None:
        """The least recently active idle connection (of ``source``, or of all with None)."""
        for key, connection in self._open.items():
            if not connection.busy and (source is None or connection.source == source):
                return key
        return None
