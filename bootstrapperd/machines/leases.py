"""The lease table: every address the server has offered, bound, released or quarantined.

Held in memory (two dicts: by address, by MAC) for speed and written through the state
database (group commits) for durability. Offers are in memory only: an offer promises
nothing, so it costs no write. ``take_ended()`` hands out the addresses whose leases have
ended, oldest first, without scanning the table.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from ..model.fields import canonical_mac
from .statedb import StateDB


class LeaseState(StrEnum):
    OFFERED = "offered"
    BOUND = "bound"
    RELEASED = "released"
    DECLINED = "declined"  # someone else answers on this address: quarantined until expiry


@dataclass(slots=True)
class Lease:
    ip: IPv4Address
    mac: str  # "" for a declined address: it belongs to nobody
    state: LeaseState
    expires: float | None  # None: infinite
    client_id: bytes | None = None
    hostname: str | None = None
    updated: float = 0.0

    def holds(self, now: float) -> bool:
        """The address is taken (offered, bound or quarantined) at ``now``."""
        if self.state is LeaseState.RELEASED:
            return False
        return self.expires is None or self.expires > now


_COLUMNS = ("ip", "mac", "state", "expires", "client_id", "hostname", "updated")
log = logging.getLogger("bootstrapperd.dhcp")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _time(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _lease_of(row: tuple[object, ...]) -> Lease | None:
    """The lease a stored row holds, or None for a row that is not one (a damaged or forged
    database must not stop the daemon from starting)."""
    ip_text, mac, state, expires, client_id, hostname, updated = (
        _text(row[0]),
        _text(row[1]),
        _text(row[2]),
        row[3],
        _text(row[4]),
        _text(row[5]),
        _time(row[6]),
    )
    if ip_text is None or mac is None or state is None or updated is None:
        return None
    if mac and canonical_mac(mac) != mac:
        return None
    try:
        ip = IPv4Address(ip_text)
        lease_state = LeaseState(state)
        client = bytes.fromhex(client_id) if client_id else None
    except ValueError:
        return None
    ends = None if expires is None else _time(expires)
    if expires is not None and ends is None:
        return None
    return Lease(ip, mac, lease_state, ends, client, hostname, updated)


class LeaseStore:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._by_ip: dict[IPv4Address, Lease] = {}
        self._by_mac: dict[str, Lease] = {}
        self._ended: list[tuple[float, int]] = []  # heap of (end time, address) candidates
        self.on_change: Callable[[], None] | None = None  # a name's address changed (DNS)
        rows = db.query(
            "SELECT CAST(ip AS BLOB), CAST(mac AS BLOB), CAST(state AS BLOB), expires, "
            "CAST(client_id AS BLOB), CAST(hostname AS BLOB), updated FROM leases "
            "ORDER BY updated"
        )
        skipped = 0
        for row in rows:
            lease = _lease_of(row)
            if lease is None:
                skipped += 1
            else:
                self._index(lease)
        if skipped:
            log.warning(
                "lease rows that are not leases were skipped",
                extra={"fields": {"skipped": skipped, "kept": len(self._by_ip)}},
            )

    def __len__(self) -> int:
        return len(self._by_ip)

    def all(self) -> list[Lease]:
        """Every lease in the table (a snapshot)."""
        return list(self._by_ip.values())

    def at(self, ip: IPv4Address) -> Lease | None:
        return self._by_ip.get(ip)

    def of(self, mac: str) -> Lease | None:
        """The lease this MAC holds or last held (its address, if still free, is its again)."""
        return self._by_mac.get(mac)

    def holder(self, ip: IPv4Address, now: float) -> str | None:
        """Who holds ``ip`` at ``now``: a MAC, "" for a quarantined address, None when free."""
        lease = self._by_ip.get(ip)
        if lease is None or not lease.holds(now):
            return None
        return lease.mac

    def offer(self, ip: IPv4Address, mac: str, now: float, hold: float) -> None:
        current = self._by_ip.get(ip)
        bound = current is not None and current.state is LeaseState.BOUND
        if bound and current is not None and current.mac == mac and current.holds(now):
            return  # a bound client that rebooted keeps its lease while it asks again
        self._index(Lease(ip, mac, LeaseState.OFFERED, now + hold, updated=now))

    def bind(
        self,
        ip: IPv4Address,
        mac: str,
        now: float,
        expires: float | None,
        client_id: bytes | None,
        hostname: str | None,
    ) -> Lease:
        previous = self._by_mac.get(mac)
        if previous is not None and previous.ip != ip and previous.holds(now):
            self._end(previous, LeaseState.RELEASED, now)  # one address per machine
        renewal = (
            previous is not None
            and previous.ip == ip
            and previous.state is LeaseState.BOUND
            and previous.holds(now)
        )
        lease = Lease(ip, mac, LeaseState.BOUND, expires, client_id, hostname, now)
        self._index(lease)
        self._persist(lease)
        if not renewal:
            self._changed()
        return lease

    def release(self, ip: IPv4Address, mac: str, now: float) -> bool:
        lease = self._by_ip.get(ip)
        if lease is None or lease.mac != mac or not lease.holds(now):
            return False
        self._end(lease, LeaseState.RELEASED, now)
        self._changed()
        return True

    def quarantine(self, ip: IPv4Address, now: float, until: float) -> None:
        lease = self._by_ip.get(ip)
        if lease is not None and self._by_mac.get(lease.mac) is lease:
            del self._by_mac[lease.mac]
        declined = Lease(ip, "", LeaseState.DECLINED, until, updated=now)
        self._index(declined)
        self._persist(declined)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def take_ended(self, now: float, usable: Callable[[IPv4Address], bool]) -> IPv4Address | None:
        """The address whose lease ended longest ago (and that ``usable`` accepts), or None.
        Pops heap entries as it goes: stale ones (the address was taken again) are dropped."""
        heap = self._ended
        while heap and heap[0][0] <= now:
            _end, number = heapq.heappop(heap)
            ip = IPv4Address(number)
            lease = self._by_ip.get(ip)
            if lease is not None and not lease.holds(now) and usable(ip):
                return ip
        return None

    def _end(self, lease: Lease, state: LeaseState, now: float) -> None:
        lease.state = state
        lease.expires = now
        lease.updated = now
        heapq.heappush(self._ended, (now, int(lease.ip)))
        self._persist(lease)

    def _index(self, lease: Lease) -> None:
        old = self._by_ip.get(lease.ip)
        if old is not None and old.mac != lease.mac and self._by_mac.get(old.mac) is old:
            del self._by_mac[old.mac]
        self._by_ip[lease.ip] = lease
        if lease.mac:
            self._by_mac[lease.mac] = lease
        if lease.expires is not None:  # a released lease's expiry is its release time
            heapq.heappush(self._ended, (lease.expires, int(lease.ip)))
        if len(self._ended) > 4 * len(self._by_ip) + 4096:
            self._ended = [
                (lease.expires, int(lease.ip))
                for lease in self._by_ip.values()
                if lease.expires is not None
            ]
            heapq.heapify(self._ended)

    def _persist(self, lease: Lease) -> None:
        row = (
            str(lease.ip),
            lease.mac,
            str(lease.state),
            lease.expires,
            lease.client_id.hex() if lease.client_id else None,
            lease.hostname,
            lease.updated,
        )
        self._db.insert("leases", _COLUMNS, row, replace=True)
