"""The first-contact limit: how fast clients the server has not seen recently are let in.

A token bucket refilled at ``rate`` per second (at most ``burst`` tokens) pays for each client
seen for the first time; a client seen within ``remember`` seconds passes free. The table of
recently seen clients is bounded (``table_size``, least recently seen evicted first), so
random MACs cost a token each and a fixed amount of memory in all. Sans IO: the time is an
argument.
"""

from __future__ import annotations

from collections import OrderedDict


class FirstContactLimiter:
    """Token bucket on new keys, with a bounded table of the keys recently let in."""

    def __init__(self, rate: float, burst: int, table_size: int, remember: float) -> None:
        self.rate = rate
        self.burst = burst
        self.table_size = table_size
        self.remember = remember
        self._tokens = float(burst)
        self._refilled: float | None = None
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def allow(self, key: str, now: float) -> bool:
        """True when ``key`` was let in within ``remember`` seconds or a token is left for it
        (it is then remembered); False when it is new and the bucket is empty."""
        seen = self._seen.get(key)
        if seen is not None and now - seen < self.remember:
            self._seen[key] = now
            self._seen.move_to_end(key)
            return True
        self._refill(now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.table_size:
            self._seen.popitem(last=False)
        return True

    def _refill(self, now: float) -> None:
        if self._refilled is not None and now > self._refilled:
            self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        if self._refilled is None or now > self._refilled:
            self._refilled = now
