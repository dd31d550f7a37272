"""The soak's mutation generators and its reading of /metrics (no sockets)."""

from __future__ import annotations

import random

from bench.soak import (
    MAX_DATAGRAM,
    PROTOCOLS,
    SEEDS,
    SoakResult,
    bit_flips,
    failure,
    malformed_counts,
    mutants,
    oversized,
    random_tlvs,
    tracebacks,
    truncations,
)
from protocols.dhcp.packet import parse


def test_every_truncation_comes_first_then_the_other_kinds() -> None:
    for protocol in PROTOCOLS:
        seed = SEEDS[protocol]()
        out = list(mutants(protocol, len(seed) + 40))
        cuts = [data.removesuffix(b"\r\n\r\n") if protocol == "http" else data for data in out]
        assert cuts[: len(seed)] == [seed[:n] for n in range(len(seed))]
        assert len(out) == len(seed) + 40
        assert seed not in out[len(seed) :]


def test_mutants_are_reproducible_and_bounded_in_count() -> None:
    assert list(mutants("dns", 500, seed=7)) == list(mutants("dns", 500, seed=7))
    assert list(mutants("dns", 500, seed=7)) != list(mutants("dns", 500, seed=8))
    assert len(list(mutants("tftp", 3))) == 3


def test_the_dhcp_seed_is_a_valid_discover() -> None:
    packet = parse(SEEDS["dhcp"]())
    assert packet.mac == "52:54:00:aa:00:01"
    assert packet.vendor_class == b"PXEClient"


def test_each_mutation_changes_what_it_says() -> None:
    rng = random.Random(3)
    data = SEEDS["dhcp"]()
    assert list(truncations(b"abc")) == [b"", b"a", b"ab"]
    flipped = bit_flips(data, rng, flips=1)
    assert sum(bin(a ^ b).count("1") for a, b in zip(data, flipped, strict=True)) == 1
    assert random_tlvs(data, 240, rng)[:240] == data[:240]
    assert len(oversized(data, rng)) == MAX_DATAGRAM
    assert len(oversized(data, rng, limit=len(data) + 1)) == len(data) + 1


METRICS = """\
bootstrapperd_dhcp_events_total{event="malformed"} 12.0
bootstrapperd_dhcp_events_total{event="received"} 40.0
bootstrapperd_dns_events_total{event="malformed:header"} 3.0
bootstrapperd_dns_events_total{event="malformed"} 4.0
bootstrapperd_tftp_events_total{event="malformed"} 5.0
bootstrapperd_http_requests_total{code="400",route="unmatched"} 6.0
bootstrapperd_http_requests_total{code="200",route="metrics"} 9.0
"""


def test_malformed_counts_read_from_metrics() -> None:
    assert malformed_counts(METRICS) == {"dhcp": 12, "tftp": 5, "dns": 7, "http": 6}
    assert malformed_counts("") == {"dhcp": 0, "tftp": 0, "dns": 0, "http": 0}


def test_verdict_needs_no_traceback_answers_and_rss_back() -> None:
    good = SoakResult("bootstrapperd", "dns", 10, 10, 1.0, 10, 1000, 1200, 1099)
    assert good.ok
    grown = SoakResult("bootstrapperd", "dns", 10, 10, 1.0, 10, 1000, 1200, 1101)
    assert not grown.ok
    assert "RSS grew +10.1 %" in failure(grown)
    broken = SoakResult("bootstrapperd", "http", 10, 10, 1.0, 0, 1000, 1000, 1000, 2, ["http"])
    assert not broken.ok
    assert failure(broken) == "2 tracebacks in the log; unanswered: http"
    assert tracebacks("x\nTraceback (most recent call last):\n  y\n") == 1
