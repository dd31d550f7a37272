"""Value parsers: MAC spellings, lease times, YAML 1.1 booleans, reverse zones."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from bootstrapperd.model.fields import canonical_mac, format_seconds, parse_bool, parse_lease
from bootstrapperd.model.types import reverse_zones


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("00:25:90:C0:F7:80", "00:25:90:c0:f7:80"),
        ("00-25-90-c0-f7-80", "00:25:90:c0:f7:80"),
        ("0025.90c0.f780", "00:25:90:c0:f7:80"),
        ("002590C0F780", "00:25:90:c0:f7:80"),
        (" 0:25:90:c0:f7:80 ", "00:25:90:c0:f7:80"),
        ("00:25:90:zz", None),
        ("00:25:90:c0:f7", None),
        ("00:25-90:c0:f7:80", None),
        ("00:25:90:c0:f7:80:01", None),
        ("", None),
    ],
)
def test_canonical_mac(text: str, canonical: str | None) -> None:
    assert canonical_mac(text) == canonical


@pytest.mark.parametrize(
    ("value", "result"),
    [
        ("infinite", (True, None)),
        ("24h", (True, 86400)),
        ("12h", (True, 43200)),
        ("30m", (True, 1800)),
        ("1h30m", (True, 5400)),
        ("7d", (True, 604800)),
        ("1w", (True, 604800)),
        ("3600", (True, 3600)),
        (3600, (True, 3600)),
        ("45s", (True, 45)),
        ("0", (False, 0)),
        ("h", (False, None)),
        ("12x", (False, None)),
        ("forever", (False, None)),
        (True, (False, None)),
        ([1], (False, None)),
    ],
)
def test_parse_lease(value: object, result: tuple[bool, int | None]) -> None:
    assert parse_lease(value) == result


def test_format_seconds_round_trips_lease_forms() -> None:
    assert format_seconds(None) == "infinite"
    assert format_seconds(5400) == "1h30m"
    assert format_seconds(86400) == "1d"
    assert parse_lease(format_seconds(93784)) == (True, 93784)


@pytest.mark.parametrize(
    ("value", "result"),
    [
        ("y", True),
        ("YES", True),
        ("On", True),
        (True, True),
        (1, True),
        ("n", False),
        ("off", False),
        (0, False),
        ("maybe", None),
        (2, None),
        (None, None),
    ],
)
def test_parse_bool(value: object, result: bool | None) -> None:
    assert parse_bool(value) is result


@pytest.mark.parametrize(
    ("network", "zones"),
    [
        ("10.10.14.0/24", ("14.10.10.in-addr.arpa",)),
        ("10.10.14.128/25", ("14.10.10.in-addr.arpa",)),
        ("10.20.0.0/16", ("20.10.in-addr.arpa",)),
        ("10.0.0.0/8", ("10.in-addr.arpa",)),
        ("192.168.16.0/22", tuple(f"{i}.168.192.in-addr.arpa" for i in range(16, 20))),
    ],
)
def test_reverse_zones(network: str, zones: tuple[str, ...]) -> None:
    assert reverse_zones(IPv4Network(network)) == zones
