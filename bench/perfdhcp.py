"""perfdhcp (from kea-admin), the DHCP benchmark's load: its command line, run and final report."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from bootstrapperd.lab.netlab import LabError, Namespace


@dataclass(frozen=True)
class Exchange:
    """perfdhcp's counters for one exchange (DISCOVER-OFFER or REQUEST-ACK)."""

    sent: int
    received: int
    drops: int


@dataclass(frozen=True)
class PerfdhcpStats:
    """What perfdhcp printed: its rate line and both exchanges' counters."""

    rate: float
    """perfdhcp's "Rate": ACKs received ÷ its own test period, in 4-way exchanges/s."""
    discover_offer: Exchange
    request_ack: Exchange

    @property
    def run_time(self) -> float:
        """perfdhcp's measured test period in seconds (ACKs ÷ Rate; 0 when nothing completed)."""
        if self.rate <= 0:
            return 0.0
        return self.request_ack.received / self.rate

    @property
    def dora_per_s(self) -> float:
        """Completed DORA exchanges per second: ACKs received ÷ the measured run time."""
        run_time = self.run_time
        return self.request_ack.received / run_time if run_time > 0 else 0.0

    @property
    def drop_pct(self) -> float:
        """Share of started 4-way exchanges that did not complete: 1 − ACKs ÷ DISCOVERs sent."""
        sent = self.discover_offer.sent
        return 100.0 * (1 - self.request_ack.received / sent) if sent else 0.0


_RATE = re.compile(r"^Rate:\s*([0-9.eE+-]+)\s", re.MULTILINE)
_SECTION = re.compile(r"\*\*\*Statistics for: ([A-Z-]+)\*\*\*")
_COUNTER = re.compile(r"^(sent packets|received packets|drops):\s*(\d+)", re.MULTILINE)


def parse_perfdhcp(output: str) -> PerfdhcpStats:
    """Parse perfdhcp's final report (``***Rate statistics***`` and the two exchange blocks)."""
    rate = _RATE.search(output)
    if rate is None:
        raise ValueError("no 'Rate:' line in perfdhcp's output")
    parts = _SECTION.split(output)
    exchanges: dict[str, Exchange] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        counters = dict(_COUNTER.findall(body))
        exchanges[name] = Exchange(
            sent=int(counters.get("sent packets", 0)),
            received=int(counters.get("received packets", 0)),
            drops=int(counters.get("drops", 0)),
        )
    missing = {"DISCOVER-OFFER", "REQUEST-ACK"} - exchanges.keys()
    if missing:
        raise ValueError(f"perfdhcp's output has no statistics for {', '.join(sorted(missing))}")
    return PerfdhcpStats(
        float(rate.group(1)), exchanges["DISCOVER-OFFER"], exchanges["REQUEST-ACK"]
    )


def perfdhcp_argv(rate: int, clients: int, duration: int, relay: str, server: str) -> list[str]:
    """perfdhcp in relay mode: DORA started at ``rate``/s for ``clients`` MACs for ``duration``
    seconds, every request from the relay (giaddr) address ``relay`` to ``server``."""
    argv = ["perfdhcp", "-4", "-r", str(rate), "-R", str(clients), "-p", str(duration)]
    return [*argv, "-l", relay, server]


def run_perfdhcp(ns: Namespace, argv: list[str], duration: int) -> tuple[PerfdhcpStats, float, str]:
    """Run perfdhcp to its end; return its statistics, wall-clock seconds and raw output."""
    started = time.monotonic()
    result = ns.run(argv, timeout=duration + 120)
    wall = time.monotonic() - started
    # perfdhcp exits 3 when some packets were dropped: that is a measurement, not a failure.
    if result.returncode not in (0, 3):
        raise LabError(f"perfdhcp failed ({result.returncode}): {result.stderr.strip()}")
    try:
        return parse_perfdhcp(result.stdout), wall, result.stdout
    except ValueError as exc:
        raise LabError(f"{exc}:\n{result.stdout}\n{result.stderr}") from exc
