"""How often a kind of hostile or broken input may be logged: at most once a minute per kind, so
that a flood is counted in full but leaves one line a minute in the log."""

from __future__ import annotations

__all__ = ["LOG_INTERVAL", "LogThrottle"]

LOG_INTERVAL = 60.0  # seconds between two log lines of one kind


class LogThrottle:
    """Says, for a kind of event at a time, whether it may be logged now; kinds are a fixed
    vocabulary of the caller (so the table stays as small as that vocabulary)."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}

    def allow(self, kind: str, now: float) -> bool:
        """True (and the next line of ``kind`` waits ``interval``) when ``kind`` may be logged."""
        if now < self._next.get(kind, float("-inf")):
            return False
        self._next[kind] = now + self.interval
        return True
