"""bench/harness.py with fake servers (no sockets, no namespaces): the command line, the order of
the rounds, one server start, the run and its report, medians, ratios and tables."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench import harness
from bench.common import Launch, median
from bench.harness import (
    Benchmark,
    Column,
    Ratio,
    RoundsOption,
    Run,
    failed_lines,
    figures,
    grouped,
    markdown_table,
    ratio_line,
    ratios,
    server_order,
    spread,
    text_table,
)
from bootstrapperd.lab.netlab import LabError
from bootstrapperd.model import ConfigError


@dataclass
class Result:
    """A fake server's result for one row in one round."""

    server: str
    row: str
    round: int
    ok: bool
    error: str | None = None
    rate: float | None = None
    log_warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    server: str
    row: str
    rate: float | None
    ok: int
    runs: int


@dataclass
class FakeLab:
    """The lab context: records every server start and whether it was torn down."""

    scratch: Path
    starts: list[tuple[int, str, str]] = field(default_factory=list)
    torn_down: bool = False


RATES = {"bootstrapperd": 90.0, "ref": 100.0}


def summarise(results: Sequence[Result]) -> list[Summary]:
    return [
        Summary(
            server, row, median([r.rate for r in runs if r.ok]), sum(r.ok for r in runs), len(runs)
        )
        for (row, server), runs in grouped(results, lambda r: (r.row, r.server)).items()
    ]


def fake_ratios(summaries: Sequence[Summary]) -> list[Ratio]:
    return ratios(figures(summaries, lambda s: s.row, lambda s: s.rate), "ref", lambda row: 0.8)


def make_bench(
    serve: Any = None,
    alternate: bool = True,
    keeps_partial: bool = False,
    missing: Sequence[str] = (),
) -> tuple[Benchmark[FakeLab, str, Result, Summary], list[FakeLab]]:
    """A benchmark of fake servers: every start records itself and returns one result per row
    of its group ("a,b" → rows a and b); the labs it opened are listed in the second value."""
    labs: list[FakeLab] = []

    @contextlib.contextmanager
    def open_lab(args: argparse.Namespace, scratch: Path) -> Iterator[FakeLab]:
        lab = FakeLab(scratch)
        labs.append(lab)
        try:
            yield lab
        finally:
            lab.torn_down = True

    def default_serve(lab: FakeLab, server: str, group: str, round_: int) -> list[Result]:
        lab.starts.append((round_, group, server))
        return [Result(server, row, round_, True, rate=RATES[server]) for row in group.split(",")]

    def add_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--size", type=int, default=7, help="size (7)")

    bench: Benchmark[FakeLab, str, Result, Summary] = Benchmark(
        name="fake",
        about="Fake servers.",
        servers=("bootstrapperd", "ref"),
        rounds=RoundsOption(("--repeats", "--repeat"), 3, "runs per pair; median (3)"),
        open_lab=open_lab,
        groups=lambda args: ["a,b", "c"],
        serve=serve or default_serve,
        label=lambda r: f"{r.row} #{r.round}",
        progress=lambda r: f"{r.rate} per s",
        summarise=summarise,
        render=lambda run, summaries: "\n".join(
            [f"{s.row} {s.server} {s.rate} {s.ok}/{s.runs}" for s in summaries]
            + failed_lines(run.results, lambda r: f"{r.row} #{r.round}")
        ),
        json_head=lambda run: {"repeats": run.args.repeats, "size": run.args.size},
        json_ratios=lambda summaries: [
            r.json("row", "ratio", "met") for r in fake_ratios(summaries)
        ],
        add_options=add_options,
        missing_tools=lambda: list(missing),
        versions=lambda run: {"ref": "1.0"},
        alternate=alternate,
        keeps_partial=keeps_partial,
        unit="fetch",
        scratch_holds="fake logs",
        runs_key="fetches",
    )
    return bench, labs


# --- the command line ----------------------------------------------------------------------------


def test_command_line_common_and_own_options() -> None:
    bench, _ = make_bench()
    parser = harness.build_parser(bench)
    assert parser.prog == "python -m bench.fake"
    args = parser.parse_args([])
    assert (args.repeats, args.servers, args.size, args.json, args.keep_scratch) == (
        3,
        ["bootstrapperd", "ref"],
        7,
        None,
        False,
    )
    args = parser.parse_args(
        ["--repeat", "2", "--servers", "ref", "--size", "9", "--json", "o.json", "--keep-scratch"]
    )
    assert (args.repeats, args.servers, args.size, args.json, args.keep_scratch) == (
        2,
        ["ref"],
        9,
        Path("o.json"),
        True,
    )
    for bad in (["--repeats", "0"], ["--servers", "kea"], ["--servers", ""]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    text = parser.format_help()
    assert "comma-separated: bootstrapperd,ref" in text
    assert "also write every fetch and the medians here" in text
    assert "keep the scratch directory (fake logs)" in text
    # The common options first, the benchmark's own, then --json and --keep-scratch.
    order = [a.option_strings[0] for a in parser._actions if a.option_strings][1:]
    assert order == ["--repeats", "--servers", "--size", "--json", "--keep-scratch"]


def test_rounds_option_names_its_attribute() -> None:
    rounds = RoundsOption(("--rounds",), 3, "boots per server; median (3)")
    assert rounds.dest == "rounds"
    assert rounds.count(argparse.Namespace(rounds=5)) == 5
    assert RoundsOption(("--repeats", "--repeat"), 3, "").dest == "repeats"


def test_main_refuses_without_the_lab_or_a_tool(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench, labs = make_bench(missing=["dnsperf", "dig"])
    monkeypatch.setattr(harness, "unavailable_reason", lambda: None)
    assert harness.main(bench, []) == 1
    assert (
        capsys.readouterr().err == "bench.fake: cannot build the lab: not installed: dnsperf, dig\n"
    )
    monkeypatch.setattr(harness, "unavailable_reason", lambda: "needs root")
    assert harness.main(bench, []) == 1
    assert capsys.readouterr().err == "bench.fake: cannot build the lab: needs root\n"
    assert labs == []


# --- the rounds ----------------------------------------------------------------------------------


def test_server_order_alternates_from_round_to_round() -> None:
    servers = ["bootstrapperd", "ref"]
    assert [server_order(servers, r) for r in (1, 2, 3)] == [
        ["bootstrapperd", "ref"],
        ["ref", "bootstrapperd"],
        ["bootstrapperd", "ref"],
    ]
    assert server_order(servers, 2, alternate=False) == servers
    assert server_order(["ref"], 2) == ["ref"]


def run(bench: Benchmark[FakeLab, str, Result, Summary], argv: Sequence[str]) -> int:
    return harness.run_benchmark(bench, harness.build_parser(bench).parse_args(argv))


def test_rounds_run_every_group_and_alternate_the_servers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench, labs = make_bench()
    assert run(bench, ["--repeats", "2"]) == 0
    (lab,) = labs
    assert lab.starts == [
        (1, "a,b", "bootstrapperd"),
        (1, "a,b", "ref"),
        (1, "c", "bootstrapperd"),
        (1, "c", "ref"),
        (2, "a,b", "ref"),
        (2, "a,b", "bootstrapperd"),
        (2, "c", "ref"),
        (2, "c", "bootstrapperd"),
    ]
    assert lab.torn_down
    assert not lab.scratch.exists()  # the scratch directory is removed after the lab
    err = capsys.readouterr().err.splitlines()
    assert err[:3] == [
        "[a #1] bootstrapperd: 90.0 per s",
        "[b #1] bootstrapperd: 90.0 per s",
        "[a #1] ref: 100.0 per s",
    ]
    assert len(err) == 12


def test_rounds_keep_the_order_unless_told_to_alternate() -> None:
    bench, labs = make_bench(alternate=False)
    assert run(bench, ["--repeats", "2", "--servers", "ref,bootstrapperd"]) == 0
    assert [server for _, _, server in labs[0].starts] == ["ref", "bootstrapperd"] * 4


def test_progress_lines_of_failures_and_log_warnings() -> None:
    label = harness.progress_line(
        lambda r: f"{r.row} #{r.round}",
        lambda r: f"{r.rate} per s",
        Result("ref", "a", 2, False, "timed out", log_warnings=["ERROR one", "WARN two"]),
    )
    assert label == "[a #2] ref: FAILED: timed out\n    log: ERROR one\n    log: WARN two"


# --- a run and its report ------------------------------------------------------------------------


def test_report_table_json_and_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def serve(lab: FakeLab, server: str, group: str, round_: int) -> list[Result]:
        ok = not (server == "bootstrapperd" and round_ == 2 and group == "c")
        rate = RATES[server] + round_
        return [Result(server, group, round_, ok, None if ok else "no answer", rate)]

    bench, _ = make_bench(serve=serve)
    out = tmp_path / "r.json"
    assert run(bench, ["--repeats", "3", "--json", str(out), "--size", "5"]) == 1
    table = capsys.readouterr().out.splitlines()
    assert table == [
        "a,b bootstrapperd 92.0 3/3",
        "a,b ref 102.0 3/3",
        "c bootstrapperd 92.0 2/3",
        "c ref 102.0 3/3",
        "FAILED bootstrapperd c #2: no answer",
    ]
    report = json.loads(out.read_text())
    assert list(report) == ["benchmark", "repeats", "size", "summary", "ratios", "fetches"]
    assert (report["benchmark"], report["repeats"], report["size"]) == ("fake", 3, 5)
    assert report["summary"][2] == {
        "server": "bootstrapperd",
        "row": "c",
        "rate": 92.0,
        "ok": 2,
        "runs": 3,
    }
    assert report["ratios"] == [
        {"row": "a,b", "ratio": pytest.approx(92 / 102), "met": True},
        {"row": "c", "ratio": pytest.approx(92 / 102), "met": True},
    ]
    assert len(report["fetches"]) == 12
    assert report["fetches"][0] == {
        "server": "bootstrapperd",
        "row": "a,b",
        "round": 1,
        "ok": True,
        "error": None,
        "rate": 91.0,
        "log_warnings": [],
    }


def failing_serve(error: BaseException) -> Any:
    """A serve that succeeds in round 1 and raises ``error`` in round 2."""

    def serve(lab: FakeLab, server: str, group: str, round_: int) -> list[Result]:
        if round_ == 2:
            raise error
        return [Result(server, group, round_, True, rate=RATES[server])]

    return serve


def test_a_lab_failure_reports_nothing_unless_the_benchmark_keeps_partial_results(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench, labs = make_bench(serve=failing_serve(LabError("veth gone")))
    assert run(bench, []) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("bench.fake: veth gone\n")
    assert labs[0].torn_down
    assert not labs[0].scratch.exists()

    bench, labs = make_bench(serve=failing_serve(LabError("veth gone")), keeps_partial=True)
    assert run(bench, []) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "a,b bootstrapperd 90.0 1/1",
        "a,b ref 100.0 1/1",
        "c bootstrapperd 90.0 1/1",
        "c ref 100.0 1/1",
    ]
    assert labs[0].torn_down


def test_ctrl_c_is_raised_or_reported(capsys: pytest.CaptureFixture[str]) -> None:
    bench, labs = make_bench(serve=failing_serve(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run(bench, [])
    assert labs[0].torn_down
    assert not labs[0].scratch.exists()
    capsys.readouterr()

    bench, labs = make_bench(serve=failing_serve(KeyboardInterrupt()), keeps_partial=True)
    assert run(bench, []) == 130
    captured = capsys.readouterr()
    assert "bench.fake: interrupted; the labs are torn down" in captured.err
    assert len(captured.out.splitlines()) == 4


def test_a_refused_description_and_nothing_measured(capsys: pytest.CaptureFixture[str]) -> None:
    bench, _ = make_bench()
    bench = dataclasses.replace(bench, groups=lambda args: [])
    assert run(bench, []) == 1  # no group: nothing measured, nothing to report
    assert capsys.readouterr().out == ""

    error = ConfigError("cluster-desc.yml", [])

    def refuse(lab: FakeLab, server: str, group: str, round_: int) -> list[Result]:
        raise error

    bench, _ = make_bench(serve=refuse, keeps_partial=True)
    assert run(bench, []) == 1
    assert capsys.readouterr().out == (
        "bench.fake: the generated cluster description is refused:\ncluster-desc.yml: 0 error(s):\n"
    )


def test_run_conditions() -> None:
    result: Run[FakeLab, Result] = Run(argparse.Namespace(), 1, (1.0, 2.0, 3.0))
    result.loadavg_after = (4.0, 5.0, 6.0)
    result.versions = {"ref": "1.0"}
    conditions = result.conditions()
    assert list(conditions) == [
        "machine",
        "loadavg_before",
        "loadavg_after",
        "cpu_affinity",
        "tools",
    ]
    assert conditions["loadavg_after"] == (4.0, 5.0, 6.0)
    assert conditions["tools"] == {"ref": "1.0"}
    with pytest.raises(LabError):
        _ = result.lab


# --- one server start ----------------------------------------------------------------------------


class FakeProc:
    """A started server: exits (with ``status``) once ``polls`` polls have seen it running."""

    def __init__(self, polls: int, status: int = 3) -> None:
        self.pid = 2**22 + 12345  # no such process: program_pid keeps it
        self.polls = polls
        self.status = status
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.polls <= 0:
            self.returncode = self.status
        self.polls -= 1
        return self.returncode


class FakeNamespace:
    def __init__(self, proc: FakeProc, stderr: bytes) -> None:
        self.proc = proc
        self.stderr = stderr
        self.spawned: list[list[str]] = []

    def spawn(self, argv: list[str], stdout: Any, stderr: Any, env: Any = None) -> FakeProc:
        self.spawned.append(argv)
        stderr.write(self.stderr)
        return self.proc


class FakeNetLab:
    def __init__(self) -> None:
        self.stopped: list[FakeProc] = []

    def stop(self, proc: FakeProc, timeout: float = 10.0) -> None:
        self.stopped.append(proc)


def serve_fake(
    tmp_path: Path, proc: FakeProc, ready: str | None = None, finish: Any = None
) -> tuple[list[Result], FakeNetLab, FakeNamespace]:
    netlab, ns = FakeNetLab(), FakeNamespace(proc, b"starting\nERROR: no cache\n")
    launch = Launch(tmp_path, ["srv", "--fake"])

    def failed(rows: Sequence[str], why: str) -> list[Result]:
        return [Result("srv", row, 1, False, why) for row in rows]

    results = harness.run_server(
        netlab,  # type: ignore[arg-type]
        ns,  # type: ignore[arg-type]
        launch,
        "srv",
        ["a", "b", "c"],
        lambda started: ready,
        lambda pid, row: Result("srv", row, 1, True, rate=float(pid == proc.pid)),
        failed,
        finish,
    )
    return results, netlab, ns


def test_run_server_measures_every_row_and_stops_the_server(tmp_path: Path) -> None:
    seen: list[tuple[FakeProc, int]] = []
    proc = FakeProc(polls=10)
    results, netlab, ns = serve_fake(tmp_path, proc, finish=lambda p, rs: seen.append((p, len(rs))))
    assert [(r.row, r.ok, r.rate) for r in results] == [
        ("a", True, 1.0),
        ("b", True, 1.0),
        ("c", True, 1.0),
    ]
    assert ns.spawned == [["srv", "--fake"]]
    assert netlab.stopped == [proc]
    assert seen == [(proc, 3)]
    assert all(r.log_warnings == ["ERROR: no cache"] for r in results)


def test_run_server_fails_every_row_when_not_ready_and_rows_after_an_exit(tmp_path: Path) -> None:
    results, netlab, _ = serve_fake(tmp_path, FakeProc(polls=10), ready="not serving: port 69")
    assert [(r.row, r.ok, r.error) for r in results] == [
        ("a", False, "not serving: port 69"),
        ("b", False, "not serving: port 69"),
        ("c", False, "not serving: port 69"),
    ]
    assert len(netlab.stopped) == 1
    results, _, _ = serve_fake(tmp_path, FakeProc(polls=1, status=3))
    assert [(r.row, r.ok, r.error) for r in results] == [
        ("a", True, None),
        ("b", False, "srv exited with status 3"),
        ("c", False, "srv exited with status 3"),
    ]


def test_abort_stops_a_benchmark_whose_runs_cannot_fail(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="srv exited with status 3"):
        harness.run_server(
            FakeNetLab(),  # type: ignore[arg-type]
            FakeNamespace(FakeProc(polls=0), b""),  # type: ignore[arg-type]
            Launch(tmp_path, ["srv"]),
            "srv",
            ["a"],
            lambda started: None,
            lambda pid, row: Result("srv", row, 1, True),
            harness.abort,
        )


# --- medians and ratios --------------------------------------------------------------------------


def test_grouped_keeps_first_appearance_order() -> None:
    groups = grouped(["b1", "a1", "b2", "c1", "a2"], lambda text: text[0])
    assert groups == {"b": ["b1", "b2"], "a": ["a1", "a2"], "c": ["c1"]}
    assert list(groups) == ["b", "a", "c"]


def test_spread_of_known_values() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == harness.Spread(2.0, 1.0, 3.0)
    assert spread([4.0, 1.0]) == harness.Spread(2.5, 1.0, 4.0)
    assert spread([None]) == harness.Spread(None, None, None)


def test_ratio_against_a_floor_or_a_ceiling() -> None:
    floor = Ratio("many", 2300.0, 2600.0, 0.9)
    assert floor.ratio == pytest.approx(2300 / 2600)
    assert (floor.met, floor.bound, floor.verdict) == (False, "≥ 0.90", "NOT met")
    ceiling = Ratio("off_s", 8.3, 9.5, 1.0, lower_is_better=True)
    assert (ceiling.met, ceiling.bound, ceiling.verdict) == (True, "≤ 1.00", "met")
    assert Ratio("x", 1.0, 0.0, 1.0).ratio is None  # the reference measured nothing
    unknown = Ratio("x", None, 5.0, 1.0)
    assert (unknown.ratio, unknown.met, unknown.verdict) == (None, None, "not measured")
    no_target = Ratio("x", 1.0, 2.0)
    assert (no_target.ratio, no_target.met, no_target.bound) == (0.5, None, "none")
    assert floor.json("row", "ratio", "target") == {
        "row": "many",
        "ratio": floor.ratio,
        "target": 0.9,
    }


def test_ratios_per_row_with_or_without_both_sides() -> None:
    summaries = [
        Summary("ref", "a", 100.0, 1, 1),
        Summary("bootstrapperd", "a", 120.0, 1, 1),
        Summary("bootstrapperd", "b", 50.0, 1, 1),
        Summary("ref", "c", 10.0, 1, 1),
        Summary("bootstrapperd", "c", None, 0, 1),
    ]
    table = figures(summaries, lambda s: s.row, lambda s: s.rate)
    assert table == {
        "a": {"ref": 100.0, "bootstrapperd": 120.0},
        "b": {"bootstrapperd": 50.0},
        "c": {"ref": 10.0, "bootstrapperd": None},
    }
    targets = {"a": 1.0}.get
    both = ratios(table, "ref", targets)
    assert [(r.row, r.ratio, r.target) for r in both] == [("a", 1.2, 1.0), ("c", None, None)]
    every = ratios(table, "ref", both_measured=False, lower_is_better=True)
    assert [(r.row, r.ours, r.theirs, r.lower_is_better) for r in every] == [
        ("a", 120.0, 100.0, True),
        ("b", 50.0, None, True),
        ("c", None, 10.0, True),
    ]


def test_ratio_lines() -> None:
    assert (
        ratio_line(Ratio("window", 75.0, 55.0, 1.3), "MiB/s", "dnsmasq")
        == "ratio (window, MiB/s): bootstrapperd/dnsmasq = 1.36 (target ≥ 1.30: met)"
    )
    assert (
        ratio_line(Ratio("forwarded", 4.0, 10.0), "qps", "dnsmasq")
        == "ratio (forwarded, qps): bootstrapperd/dnsmasq = 0.40 (no target)"
    )
    assert ratio_line(Ratio("forwarded", None, 10.0), "qps", "dnsmasq").endswith(
        "= ? (not measured)"
    )
    assert ratio_line(Ratio("local", None, 10.0, 0.5), "qps", "dnsmasq").endswith(
        "= ? (target ≥ 0.50: not measured)"
    )


# --- tables --------------------------------------------------------------------------------------


def test_text_table_pads_and_aligns() -> None:
    columns = (Column("row", 6), Column("MiB/s", 7, right=True), Column("target", gap="  "))
    assert text_table(columns, [["single", "900.0", "none"], ["many", "2300.0", "≥ 0.90"]]) == [
        "row      MiB/s  target",
        "single   900.0  none",
        "many    2300.0  ≥ 0.90",
    ]
    with pytest.raises(ValueError, match="shorter"):
        text_table(columns, [["too", "few"]])


def test_markdown_table_marks_right_aligned_columns() -> None:
    columns = (Column("server"), Column("time s", right=True))
    assert markdown_table(columns, [["ours", "7.20"], ["theirs", "7.33"]]) == [
        "| server | time s |",
        "|---|---:|",
        "| ours | 7.20 |",
        "| theirs | 7.33 |",
    ]


def test_failed_lines_and_affinity_note(monkeypatch: pytest.MonkeyPatch) -> None:
    results = [Result("ref", "a", 1, True), Result("ours", "b", 2, False, "timed out")]
    assert failed_lines(results, lambda r: f"{r.row} #{r.round}") == ["FAILED ours b #2: timed out"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert harness.affinity_note() == "; all on CPU 0"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert harness.affinity_note() == ""
