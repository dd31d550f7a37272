"""The install-token store (one use of each kind, death at installed, supersession, expiry,
alarms, bounds, only digests stored) and a lease table that survives damaged rows."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootstrapperd.machines import tokens
from bootstrapperd.machines.leases import LeaseState, LeaseStore
from bootstrapperd.machines.statedb import StateDB
from bootstrapperd.machines.tokens import LIFETIME, TokenStore, Verdict

MAC = "52:54:00:77:00:11"
OTHER = "52:54:00:77:00:12"
NOW = 1_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    database = StateDB(tmp_path / "state.db")
    yield database
    database.close()


def test_each_use_once_then_refused_with_an_alarm(db: StateDB) -> None:
    store = TokenStore(db)
    token = store.issue(MAC, NOW)
    assert len(token) >= 40
    assert store.redeem(MAC, token, "config", NOW, "10.0.0.5") is Verdict.GRANTED
    assert store.redeem(MAC, token, "csr:worker", NOW, "10.0.0.5") is Verdict.GRANTED
    assert store.redeem(MAC, token, "config", NOW, "10.0.0.66") is Verdict.USED
    [alarm] = store.alarms()
    assert (alarm.mac, alarm.use, alarm.verdict, alarm.client) == (
        MAC,
        "config",
        Verdict.USED,
        "10.0.0.66",
    )
    assert store.counters["alarms"] == 1


def test_no_token_is_refused_without_an_alarm_a_wrong_one_with(db: StateDB) -> None:
    store = TokenStore(db)
    token = store.issue(MAC, NOW)
    assert store.redeem(MAC, None, "config", NOW, "c") is Verdict.NO_TOKEN
    assert store.redeem(MAC, "", "config", NOW, "c") is Verdict.NO_TOKEN
    assert store.alarms() == []
    assert store.redeem(OTHER, token, "config", NOW, "c") is Verdict.UNKNOWN  # another's
    assert store.redeem(MAC, token + "x", "config", NOW, "c") is Verdict.UNKNOWN
    assert [a.verdict for a in store.alarms()] == [Verdict.UNKNOWN, Verdict.UNKNOWN]
    with pytest.raises(ValueError, match="unknown token use"):
        store.redeem(MAC, token, "everything", NOW, "c")


def test_a_new_boot_supersedes_installed_ends_and_time_expires(db: StateDB) -> None:
    store = TokenStore(db)
    first = store.issue(MAC, NOW)
    second = store.issue(MAC, NOW + 1)
    assert store.redeem(MAC, first, "config", NOW + 2, "c") is Verdict.UNKNOWN
    store.end(MAC, NOW + 3)
    assert store.redeem(MAC, second, "config", NOW + 4, "c") is Verdict.ENDED
    third = store.issue(MAC, NOW + 5)
    assert store.live(MAC, NOW + 5)
    assert store.redeem(MAC, third, "config", NOW + 5 + LIFETIME, "c") is Verdict.EXPIRED


async def test_only_digests_are_stored_and_state_survives_a_restart(db: StateDB) -> None:
    store = TokenStore(db)
    token = store.issue(MAC, NOW)
    assert store.redeem(MAC, token, "config", NOW, "c") is Verdict.GRANTED
    await db.flush()
    rows = db.query("SELECT * FROM install_tokens")
    assert token not in repr(rows)
    again = TokenStore(db)
    assert again.redeem(MAC, token, "config", NOW, "c") is Verdict.USED
    assert again.redeem(MAC, token, "csr:worker", NOW, "c") is Verdict.GRANTED


def test_tokens_and_alarms_are_bounded(db: StateDB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "MAX_TOKENS", 3)
    store = TokenStore(db)
    issued = [store.issue(f"52:54:00:00:00:0{i}", NOW + i) for i in range(4)]
    assert store.counters["dropped"] == 1
    assert store.redeem("52:54:00:00:00:00", issued[0], "config", NOW, "c") is Verdict.UNKNOWN
    assert store.redeem("52:54:00:00:00:03", issued[3], "config", NOW, "c") is Verdict.GRANTED
    for _ in range(tokens.MAX_ALARMS + 5):
        store.redeem(MAC, "forged", "config", NOW, "c")
    assert len(store.alarms()) == tokens.MAX_ALARMS


def test_damaged_lease_rows_are_skipped_and_the_rest_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    StateDB(path).close()
    raw = sqlite3.connect(path)
    good = ("10.77.0.100", MAC, "bound", NOW + 600, None, "w", NOW)
    bad = [
        ("not an ip", MAC, "bound", None, None, None, NOW),
        ("10.77.0.101", "02", "bound", None, None, None, NOW),
        ("10.77.0.102", OTHER, "haunted", None, None, None, NOW),
        ("10.77.0.103", OTHER, "bound", "soon", None, None, NOW),
        ("10.77.0.104", OTHER, "bound", None, "zz", None, NOW),
        (b"\xff\xfe", OTHER, "bound", None, None, None, NOW),
        ("10.77.0.105", OTHER, "bound", None, None, None, "yesterday"),
    ]
    raw.executemany("INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)", [good, *bad])
    raw.commit()
    raw.close()
    db = StateDB(path)
    try:
        with caplog.at_level(logging.WARNING, logger="bootstrapperd.dhcp"):
            store = LeaseStore(db)
        assert len(store) == 1
        lease = store.at(IPv4Address("10.77.0.100"))
        assert lease is not None
        assert (lease.mac, lease.state) == (MAC, LeaseState.BOUND)
        assert [r.getMessage() for r in caplog.records] == [
            "lease rows that are not leases were skipped"
        ]
    finally:
        db.close()
