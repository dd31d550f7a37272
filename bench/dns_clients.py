"""The DNS benchmark's clients: ``dnsperf`` (the load, and its final statistics) and ``dig``
(every question of a query file asked once, each answer checked before a row is measured)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrapperd.lab.netlab import Namespace

from .common import tail

# --- questions and their answers ---------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One question of a query file and the answer it must get."""

    name: str
    qtype: str
    expected: str

    @property
    def query(self) -> str:
        """The question as a dnsperf (and ``dig -f``) input line."""
        return f"{self.name} {self.qtype}"

    def matches(self, answers: Sequence[tuple[str, str, str]]) -> bool:
        """Whether ``answers`` ((name, type, data), as from ``dig_answers``) hold the answer."""
        name, want = _canonical(self.name), _canonical(self.expected)
        return (name, self.qtype, want) in {
            (_canonical(n), t, _canonical(d)) for n, t, d in answers
        }


def _canonical(name: str) -> str:
    return name.rstrip(".").lower()


# --- parsing dig and dnsperf -------------------------------------------------------------------


def dig_answers(output: str) -> list[tuple[str, str, str]]:
    """(name, type, data) of every answer in ``dig +noall +answer`` output; comments skipped.

    dig prints its errors (``;; communications error …``) as comments, so a timeout gives [].
    """
    answers = []
    for line in output.splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = line.split(None, 4)
        if len(fields) == 5 and fields[2] == "IN":
            answers.append((fields[0], fields[3], fields[4].strip()))
    return answers


def unanswered(checks: Sequence[Check], answers: Sequence[tuple[str, str, str]]) -> list[Check]:
    """The checks whose expected answer is not among ``answers``."""
    return [check for check in checks if not check.matches(answers)]


@dataclass(frozen=True)
class DnsperfStats:
    """dnsperf's final statistics."""

    sent: int
    completed: int
    lost: int
    interrupted: int
    qps: float
    run_time_s: float
    avg_latency_s: float
    min_latency_s: float | None
    max_latency_s: float | None
    response_codes: dict[str, int]
    request_bytes: float | None = None
    """dnsperf's average request size (its 'Average packet size' line)."""
    response_bytes: float | None = None
    """dnsperf's average response size: both servers should give the same answers' sizes."""

    @property
    def lost_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    @property
    def noerror_share(self) -> float:
        """NOERROR answers ÷ completed queries (1.0 when nothing completed: no wrong answers)."""
        if not self.completed:
            return 1.0
        return self.response_codes.get("NOERROR", 0) / self.completed


_INT_FIELDS = {
    "sent": "Queries sent",
    "completed": "Queries completed",
    "lost": "Queries lost",
    "interrupted": "Queries interrupted",
}


def parse_dnsperf(output: str) -> DnsperfStats:
    """The statistics block of dnsperf's output; ``ValueError`` when a figure is missing."""

    def figure(label: str) -> str | None:
        match = re.search(rf"^\s*{re.escape(label)}:\s+(\S+)", output, re.MULTILINE)
        return match.group(1) if match else None

    counts: dict[str, int] = {}
    for key, label in _INT_FIELDS.items():
        value = figure(label)
        if value is None:
            if key == "interrupted":  # only printed when some were
                counts[key] = 0
                continue
            raise ValueError(f"no {label!r} in dnsperf's output")
        counts[key] = int(value)
    qps, run_time = figure("Queries per second"), figure("Run time (s)")
    latency = re.search(
        r"^\s*Average Latency \(s\):\s+(\S+)(?:\s+\(min\s+(\S+),\s+max\s+(\S+)\))?",
        output,
        re.MULTILINE,
    )
    if qps is None or run_time is None or latency is None:
        raise ValueError("no queries per second, run time or average latency in dnsperf's output")
    codes: dict[str, int] = {}
    match = re.search(r"^\s*Response codes:\s+(.*)$", output, re.MULTILINE)
    if match:
        for code, count in re.findall(r"([A-Z]+)\s+(\d+)", match.group(1)):
            codes[code] = int(count)
    sizes = re.search(
        r"^\s*Average packet size:\s+request\s+(\S+),\s+response\s+(\S+)", output, re.MULTILINE
    )
    return DnsperfStats(
        request_bytes=float(sizes.group(1)) if sizes else None,
        response_bytes=float(sizes.group(2)) if sizes else None,
        sent=counts["sent"],
        completed=counts["completed"],
        lost=counts["lost"],
        interrupted=counts["interrupted"],
        qps=float(qps),
        run_time_s=float(run_time),
        avg_latency_s=float(latency.group(1)),
        min_latency_s=float(latency.group(2)) if latency.group(2) else None,
        max_latency_s=float(latency.group(3)) if latency.group(3) else None,
        response_codes=codes,
    )


# --- asking the server under test --------------------------------------------------------------


def dig(ns: Namespace, server: str, args: Sequence[str], timeout: float = 10) -> str:
    """``dig @server +noall +answer ARGS`` in ``ns`` (1 s per try, 2 tries); its stdout."""
    argv = ["dig", f"@{server}", "+noall", "+answer", "+time=1", "+tries=2", *args]
    try:
        result = ns.run(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout if result.returncode == 0 else ""


def _describe(check: Check, answers: Sequence[tuple[str, str, str]]) -> str:
    mine = [f"{t} {d}" for n, t, d in answers if _canonical(n) == _canonical(check.name)]
    got = ", ".join(mine) or "no answer"
    return f"{check.query}: {got} (expected {check.expected})"


def wait_answering(ns: Namespace, server: str, check: Check, timeout: float = 15.0) -> str | None:
    """Ask ``check`` until it gets the expected answer; None then, else why not."""
    deadline = time.monotonic() + timeout
    answers: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline:
        answers = dig_answers(dig(ns, server, [check.name, check.qtype]))
        if check.matches(answers):
            return None
        time.sleep(0.2)
    return f"{_describe(check, answers)} after {timeout:g} s"


def wrong_answers(ns: Namespace, server: str, checks: Sequence[Check], batch: Path) -> str | None:
    """Ask every check once (one ``dig -f`` batch): None when each gets its expected answer,
    else how many did not and the first of them."""
    batch.write_text("".join(f"{check.query}\n" for check in checks))
    answers = dig_answers(dig(ns, server, ["-f", str(batch)], timeout=120))
    missed = unanswered(checks, answers)
    if not missed:
        return None
    first = _describe(missed[0], answers)
    return f"{len(missed)} of {len(checks)} without the expected answer, first {first}"


def run_dnsperf(
    ns: Namespace, argv: Sequence[str], output: Path, timeout: float
) -> tuple[DnsperfStats | None, str | None]:
    """Run dnsperf in ``ns``, keep its output in ``output``; (statistics, None) or (None, why)."""
    try:
        result = ns.run(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"dnsperf did not finish within {timeout:g} s"
    text = result.stdout + result.stderr
    output.write_text(text)
    if result.returncode != 0:
        return None, f"dnsperf exited with status {result.returncode}: {tail(text)}"
    try:
        return parse_dnsperf(result.stdout), None
    except ValueError as exc:
        return None, f"{exc}: {tail(text)}"
