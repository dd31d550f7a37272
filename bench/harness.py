"""The benchmarks' shared skeleton: options, rounds, results, medians, ratios and the report.

Every benchmark (``python -m bench.<name>``) is a :class:`Benchmark`: a description of what
differs from one benchmark to the next — its servers, its lab, how one server is started for one
group of rows and measured, its medians, its table and its JSON. :func:`main` does the rest, the
same way for all of them:

1. parse the common options (the rounds, ``--servers``, ``--json``, ``--keep-scratch``) and the
   benchmark's own; refuse to start without root, ``ip netns`` or a tool the benchmark needs;
2. make a scratch directory and set up the benchmark's lab in it (:attr:`Benchmark.open_lab`);
3. run every round: every group of rows, every server (in alternating order from one round to
   the next when the benchmark says so), one server start each (:attr:`Benchmark.serve`),
   printing a progress line per result as it comes;
4. tear the lab down and remove the scratch directory, also on failure;
5. summarise, print the table, write the JSON report, and exit 1 when a run failed.

The rest of this module is what the benchmarks' summaries and tables are built from: results
grouped per row and server, medians and ranges, bootstrapperd ÷ reference ratios against
targets, and plain-text and markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar

from bootstrapperd.lab.netlab import LabError, Namespace, NetLab, unavailable_reason
from bootstrapperd.model import ConfigError

from .common import (
    WARNING_MARKERS,
    Launch,
    fmt,
    machine_facts,
    median,
    names_arg,
    positive_int,
    program_pid,
    running,
    scratch_dir,
)

OURS = "bootstrapperd"
"""The server whose figures are divided by the reference's."""


# --- what a benchmark is made of ---------------------------------------------------------------


class Record(Protocol):
    """A dataclass instance: what ``dataclasses.asdict`` takes (results and summaries)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


class Outcome(Record, Protocol):
    """What the harness reads of one result: which server, and whether it counts."""

    @property
    def server(self) -> str: ...

    @property
    def ok(self) -> bool: ...

    @property
    def error(self) -> str | None: ...


class PerServer(Record, Protocol):
    """A summary of one server's results."""

    @property
    def server(self) -> str: ...


class Logged(Protocol):
    """A result that carries the first troubling lines of its server's logs."""

    log_warnings: list[str]


C = TypeVar("C")
"""The lab context every round shares (namespaces, files, options)."""
G = TypeVar("G")
"""What one server start serves: a group of rows, one load, one boot."""
R = TypeVar("R", bound=Outcome)
"""One result: one row measured against one server in one round."""
S = TypeVar("S", bound=Record)
"""One summary: the medians of one server (on one row)."""
W = TypeVar("W")
"""One row a server start measures (:func:`run_server`)."""
L = TypeVar("L", bound=Logged)
"""One result of :func:`run_server`."""
P = TypeVar("P", bound=PerServer)
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class RoundsOption:
    """The option that says how many rounds run (``--repeats``, ``--rounds``): its spellings,
    default and help. The first spelling names the attribute (``--repeats`` → ``repeats``)."""

    flags: tuple[str, ...]
    default: int
    help: str

    @property
    def dest(self) -> str:
        return self.flags[0].removeprefix("--").replace("-", "_")

    def count(self, args: argparse.Namespace) -> int:
        """The number of rounds ``args`` asks for."""
        return int(getattr(args, self.dest))


def no_options(parser: argparse.ArgumentParser) -> None:
    """A benchmark without options of its own."""


def nothing_missing() -> list[str]:
    """A benchmark that checks for no tool before it starts."""
    return []


def no_versions(run: Run[Any, Any]) -> dict[str, str]:
    """A benchmark that reports no tool versions."""
    return {}


def as_json(record: Record) -> dict[str, Any]:
    """A result as it goes into the JSON report: its fields (``dataclasses.asdict``)."""
    return dataclasses.asdict(record)


def one_group(args: argparse.Namespace) -> tuple[None]:
    """A benchmark whose server start serves one thing (one boot): one group, no rows."""
    return (None,)


@dataclass(frozen=True)
class Benchmark(Generic[C, G, R, S]):
    """What one benchmark is made of: everything that differs from one benchmark to the next.

    :func:`main` runs it; see the module's docstring for the order of things.
    """

    name: str
    """``dns``: run as ``python -m bench.dns``; the JSON's "benchmark"; messages say bench.dns."""
    about: str
    """What it measures, in one sentence (``--help``)."""
    servers: tuple[str, ...]
    """The servers it can run, in their default order (``--servers``)."""
    rounds: RoundsOption
    open_lab: Callable[[argparse.Namespace, Path], AbstractContextManager[C]]
    """Set up what every round shares (namespaces, files, an upstream server) in the scratch
    directory; the context is torn down when it exits, also on failure or Ctrl-C."""
    groups: Callable[[argparse.Namespace], Sequence[G]]
    """What each server is started for, in order, in every round (every group: every server)."""
    serve: Callable[[C, str, G, int], list[R]]
    """Start one server for one group in one round, measure it, stop it: its results."""
    label: Callable[[R], str]
    """Which row and round a result is (``window #2``), in progress lines and FAILED lines."""
    progress: Callable[[R], str]
    """The figures of a result that counts, for its progress line on stderr."""
    summarise: Callable[[Sequence[R]], list[S]]
    """The medians: one summary per server (and row)."""
    render: Callable[[Run[C, R], Sequence[S]], str]
    """The report printed on stdout."""
    json_head: Callable[[Run[C, R]], dict[str, object]]
    """The JSON report's entries between "benchmark" and "summary" (options, conditions,
    definitions, rows)."""
    json_ratios: Callable[[Sequence[S]], object]
    """The JSON report's "ratios"."""
    json_run: Callable[[R], dict[str, Any]] = as_json
    """One result in the JSON report."""
    add_options: Callable[[argparse.ArgumentParser], None] = no_options
    """The benchmark's own options, after the rounds and ``--servers``."""
    missing_tools: Callable[[], list[str]] = nothing_missing
    """The programs it needs that are not installed (checked before anything starts)."""
    versions: Callable[[Run[C, R]], dict[str, str]] = no_versions
    """The versions of the tools it ran, once the rounds are over (:attr:`Run.versions`)."""
    alternate: bool = False
    """Reverse the servers' order on even rounds."""
    keeps_partial: bool = False
    """After a lab failure or Ctrl-C, report the results so far instead of none."""
    unit: str = "run"
    """What one result is called in ``--json``'s help (run, fetch, boot)."""
    scratch_holds: str = "server logs"
    """What ``--keep-scratch`` keeps, for its help."""
    runs_key: str = "runs"
    """The JSON report's key for every result."""
    config_name: str = "generated cluster description"
    """What a ``ConfigError`` refuses, in its message."""


@dataclass
class Run(Generic[C, R]):
    """One run of a benchmark: its options, its lab context, its results, and the conditions the
    figures were measured under."""

    args: argparse.Namespace
    rounds: int
    loadavg_before: tuple[float, float, float]
    context: C | None = None
    """Set once the lab is up; kept (torn down) for the report."""
    results: list[R] = field(default_factory=list)
    """Every result, in the order measured."""
    loadavg_after: tuple[float, float, float] | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def lab(self) -> C:
        """The lab context (there is one whenever a round has run)."""
        if self.context is None:
            raise LabError("no lab was set up")
        return self.context

    def conditions(self) -> dict[str, object]:
        """What the figures depend on besides the servers: the machine, its load before and
        after, the CPUs this benchmark may use, the tools' versions."""
        return {
            "machine": machine_facts(),
            "loadavg_before": self.loadavg_before,
            "loadavg_after": self.loadavg_after,
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "tools": self.versions,
        }


# --- the command line --------------------------------------------------------------------------


def build_parser(bench: Benchmark[Any, Any, Any, Any]) -> argparse.ArgumentParser:
    """The rounds, ``--servers``, the benchmark's own options, ``--json``, ``--keep-scratch``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{bench.name}", description=bench.about)
    rounds = bench.rounds
    parser.add_argument(
        *rounds.flags, dest=rounds.dest, type=positive_int, default=rounds.default, help=rounds.help
    )
    servers = bench.servers
    parser.add_argument(
        "--servers",
        type=lambda text: names_arg(text, servers),
        default=list(servers),
        help=f"comma-separated: {','.join(servers)}",
    )
    bench.add_options(parser)
    parser.add_argument(
        "--json", type=Path, help=f"also write every {bench.unit} and the medians here"
    )
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help=f"keep the scratch directory ({bench.scratch_holds})",
    )
    return parser


def not_on_path(*tools: str) -> list[str]:
    """The programs among ``tools`` that are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


# --- the rounds --------------------------------------------------------------------------------


def server_order(servers: Sequence[str], round_: int, alternate: bool = True) -> list[str]:
    """The servers in the given order on odd rounds (1, 3, …), reversed on even ones when
    ``alternate``."""
    if alternate and round_ % 2 == 0:
        return list(reversed(servers))
    return list(servers)


def progress_line(label: Callable[[R], str], progress: Callable[[R], str], result: R) -> str:
    """``[row #round] server: figures`` (or ``FAILED: why``), then the server's log warnings."""
    line = f"[{label(result)}] {result.server}: "
    line += progress(result) if result.ok else f"FAILED: {result.error}"
    warnings: Sequence[str] = getattr(result, "log_warnings", ())
    return line + "".join(f"\n    log: {warning}" for warning in warnings)


def run_rounds(bench: Benchmark[C, G, R, S], run: Run[C, R], context: C) -> None:
    """Every round × group × server, one server start each; results appended as they come."""
    groups = bench.groups(run.args)
    for round_ in range(1, run.rounds + 1):
        for group in groups:
            for server in server_order(run.args.servers, round_, bench.alternate):
                for result in bench.serve(context, server, group, round_):
                    line = progress_line(bench.label, bench.progress, result)
                    print(line, file=sys.stderr, flush=True)
                    run.results.append(result)


def run_server(
    netlab: NetLab,
    ns: Namespace,
    launch: Launch,
    server: str,
    rows: Sequence[W],
    ready: Callable[[subprocess.Popen[bytes]], str | None],
    measure: Callable[[int, W], L],
    failed: Callable[[Sequence[W], str], list[L]],
    finish: Callable[[subprocess.Popen[bytes], list[L]], None] | None = None,
    markers: tuple[str, ...] = WARNING_MARKERS,
) -> list[L]:
    """One server start: ``launch`` in ``ns``; once ``ready`` says it serves (None, else why
    not: every row fails with that), ``measure`` each row against the server's PID (a row fails
    when the server has exited), ``finish`` while it still runs; stop it by PID; every result
    gets the first troubling lines (``markers``) of the server's output and logs."""
    results: list[L] = []
    with running(netlab, ns, launch) as proc:
        why = ready(proc)
        if why is not None:
            results = failed(rows, why)
        else:
            pid = program_pid(proc)
            for row in rows:
                if proc.poll() is not None:
                    results += failed([row], f"{server} exited with status {proc.returncode}")
                    continue
                results.append(measure(pid, row))
            if finish is not None:
                finish(proc, results)
    warnings = launch.warnings(markers)
    for result in results:
        result.log_warnings = warnings
    return results


def abort(rows: Sequence[object], why: str) -> NoReturn:
    """For :func:`run_server`'s ``failed``: a benchmark whose runs cannot fail one by one stops."""
    raise LabError(why)


# --- running a benchmark -----------------------------------------------------------------------


def main(bench: Benchmark[Any, Any, Any, Any], argv: Sequence[str] | None = None) -> int:
    """``python -m bench.<name>``: parse, check the lab can be built, run, report; the exit
    status (0, 1 when a run failed or the lab could not be built, 130 after Ctrl-C)."""
    args = build_parser(bench).parse_args(argv)
    reason = unavailable_reason()
    if reason is None and (missing := bench.missing_tools()):
        reason = f"not installed: {', '.join(missing)}"
    if reason is not None:
        print(f"bench.{bench.name}: cannot build the lab: {reason}", file=sys.stderr)
        return 1
    return run_benchmark(bench, args)


def run_benchmark(bench: Benchmark[C, G, R, S], args: argparse.Namespace) -> int:
    """Run every round in a fresh scratch directory and lab, then report; the exit status."""
    run: Run[C, R] = Run(args, bench.rounds.count(args), os.getloadavg())
    status = 0
    try:
        with (
            scratch_dir(f"bench-{bench.name}-", keep=args.keep_scratch) as scratch,
            bench.open_lab(args, scratch) as context,
        ):
            run.context = context
            run_rounds(bench, run, context)
    except ConfigError as exc:
        print(f"bench.{bench.name}: the {bench.config_name} is refused:\n{exc.report()}")
        return 1
    except LabError as exc:
        print(f"bench.{bench.name}: {exc}", file=sys.stderr)
        if not bench.keeps_partial:
            return 1
        status = 1
    except KeyboardInterrupt:
        if not bench.keeps_partial:
            raise
        print(f"bench.{bench.name}: interrupted; the labs are torn down", file=sys.stderr)
        status = 130
    if not run.results:
        return status or 1
    run.loadavg_after = os.getloadavg()
    run.versions = bench.versions(run)
    report(bench, run)
    return status or (0 if all(result.ok for result in run.results) else 1)


def report(bench: Benchmark[C, G, R, S], run: Run[C, R]) -> None:
    """Print the table; write the JSON report when ``--json`` names a file."""
    summaries = bench.summarise(run.results)
    print(bench.render(run, summaries))
    if run.args.json is not None:
        text = json.dumps(json_report(bench, run, summaries), indent=2)
        run.args.json.write_text(text + "\n")


def json_report(
    bench: Benchmark[C, G, R, S], run: Run[C, R], summaries: Sequence[S]
) -> dict[str, object]:
    """Everything measured: the benchmark's head (options, conditions, definitions, rows), the
    medians, the ratios and every result."""
    return {
        "benchmark": bench.name,
        **bench.json_head(run),
        "summary": [dataclasses.asdict(summary) for summary in summaries],
        "ratios": bench.json_ratios(summaries),
        bench.runs_key: [bench.json_run(result) for result in run.results],
    }


# --- medians and ratios ------------------------------------------------------------------------


def grouped(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """``items`` by ``key``, keys in the order they first appear, items in their order."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


@dataclass(frozen=True)
class Spread:
    """The median of some figures and their range (all None when none is known)."""

    median: float | None
    low: float | None
    high: float | None


def spread(values: Sequence[float | None]) -> Spread:
    """The median, minimum and maximum of the known values."""
    known = [value for value in values if value is not None]
    if not known:
        return Spread(None, None, None)
    return Spread(median(known), min(known), max(known))


@dataclass(frozen=True)
class Ratio:
    """bootstrapperd's median of one figure ÷ the reference server's, against a target."""

    row: str
    """The row (or figure) the ratio is for."""
    ours: float | None
    theirs: float | None
    target: float | None = None
    """None: no target (the ratio is informative)."""
    lower_is_better: bool = False
    """The target is a ceiling (times) rather than a floor (rates)."""

    @property
    def ratio(self) -> float | None:
        """None when either side is unknown (or the reference's is 0)."""
        return self.ours / self.theirs if self.ours is not None and self.theirs else None

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the target; None when either is unknown."""
        if self.ratio is None or self.target is None:
            return None
        return self.ratio <= self.target if self.lower_is_better else self.ratio >= self.target

    @property
    def bound(self) -> str:
        """The target as text: ``≥ 0.90``, ``≤ 1.00``, or ``none``."""
        if self.target is None:
            return "none"
        return f"{'≤' if self.lower_is_better else '≥'} {self.target:.2f}"

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "not measured"}[self.met]

    def json(self, *names: str) -> dict[str, object]:
        """The named attributes (fields and properties), in that order, for the JSON report;
        by default :data:`RATIO_FIELDS`."""
        return {name: getattr(self, name) for name in names or RATIO_FIELDS}


RATIO_FIELDS = ("row", "ratio", "target", "met")
"""A ratio's entries in the JSON reports that have targets."""


def no_target(row: str) -> float | None:
    """Rows without a target."""
    return None


def figures(
    summaries: Iterable[P], row: Callable[[P], str], value: Callable[[P], float | None]
) -> dict[str, dict[str, float | None]]:
    """Row → server → figure, rows and servers in the order they first appear."""
    table: dict[str, dict[str, float | None]] = {}
    for summary in summaries:
        table.setdefault(row(summary), {})[summary.server] = value(summary)
    return table


def ratios(
    table: Mapping[str, Mapping[str, float | None]],
    reference: str,
    target: Callable[[str], float | None] = no_target,
    both_measured: bool = True,
    lower_is_better: bool = False,
) -> list[Ratio]:
    """One ratio per row of ``table`` (from :func:`figures`): bootstrapperd ÷ ``reference``.
    With ``both_measured``, rows that lack either server are left out; else that side is None."""
    out = []
    for row, by_server in table.items():
        if both_measured and (OURS not in by_server or reference not in by_server):
            continue
        ours, theirs = by_server.get(OURS), by_server.get(reference)
        out.append(Ratio(row, ours, theirs, target(row), lower_is_better))
    return out


def ratio_line(r: Ratio, unit: str, reference: str) -> str:
    """``ratio (row, unit): bootstrapperd/reference = 0.95 (target ≥ 1.00: NOT met)``."""
    line = f"ratio ({r.row}, {unit}): {OURS}/{reference} = {fmt(r.ratio, '.2f')}"
    if r.target is None:
        return line + (" (no target)" if r.ratio is not None else " (not measured)")
    return line + f" (target {r.bound}: {r.verdict})"


# --- tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a table: its title, width, alignment, and what separates it from the
    column before (plain-text tables)."""

    title: str
    width: int = 0
    right: bool = False
    gap: str = " "

    def cell(self, text: str) -> str:
        return f"{text:>{self.width}}" if self.right else f"{text:<{self.width}}"


def text_table(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> list[str]:
    """A plain-text table: the titles, then one line per row, cells padded to the widths."""

    def line(cells: Sequence[str]) -> str:
        pairs = zip(columns, cells, strict=True)
        return "".join((c.gap if i else "") + c.cell(text) for i, (c, text) in enumerate(pairs))

    return [line([column.title for column in columns]), *(line(row) for row in rows)]


def markdown_table(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table: right-aligned columns are marked ``---:``."""
    rule = "|" + "|".join("---:" if column.right else "---" for column in columns) + "|"
    lines = ["| " + " | ".join(column.title for column in columns) + " |", rule]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def failed_lines(results: Iterable[R], label: Callable[[R], str]) -> list[str]:
    """``FAILED server row #round: why`` for every result that does not count."""
    return [f"FAILED {r.server} {label(r)}: {r.error}" for r in results if not r.ok]


def affinity_note() -> str:
    """``; all on CPU 0`` when this process may use fewer than all CPUs (``taskset``), else ""."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < (os.cpu_count() or 0):
        return f"; all on CPU {','.join(map(str, cpus))}"
    return ""
