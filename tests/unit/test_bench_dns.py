"""bench/dns.py's pure parts: query files and checks, dig and dnsperf parsing, the generated
configurations, medians, ratios and the table."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bench.dns import (
    NODES,
    ROWS,
    UPSTREAM_NAMES,
    RunResult,
    build_parser,
    cluster_desc,
    dnsmasq_host_records,
    dnsperf_argv,
    forwarded_checks,
    local_checks,
    ratios,
    render_table,
    summarise,
    write_query_files,
)
from bench.dns_clients import Check, DnsperfStats, dig_answers, parse_dnsperf, unanswered
from bootstrapperd.model import load_cluster_file

DNSPERF_OUTPUT = """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 10.90.0.1 -d q.txt -l 5 -T 1 -c 4 -q 100
[Status] Sending queries (to 10.90.0.1:53)
[Status] Started at: Thu Nov 26 18:28:41 2026
[Status] Stopping after 5.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         909332
  Queries completed:    909300 (100.00%)
  Queries lost:         32 (0.00%)

  Response codes:       NOERROR 909290 (100.00%), NXDOMAIN 10 (0.00%)
  Average packet size:  request 38, response 54
  Run time (s):         5.000143
  Queries per second:   181861.198770

  Average Latency (s):  0.000461 (min 0.000007, max 0.007843)
  Latency StdDev (s):   0.000256

"""


def test_parse_dnsperf_final_statistics() -> None:
    stats = parse_dnsperf(DNSPERF_OUTPUT)
    assert (stats.sent, stats.completed, stats.lost, stats.interrupted) == (909332, 909300, 32, 0)
    assert stats.qps == pytest.approx(181861.19877)
    assert stats.run_time_s == pytest.approx(5.000143)
    assert stats.avg_latency_s == pytest.approx(0.000461)
    assert (stats.min_latency_s, stats.max_latency_s) == (0.000007, 0.007843)
    assert stats.response_codes == {"NOERROR": 909290, "NXDOMAIN": 10}
    assert (stats.request_bytes, stats.response_bytes) == (38.0, 54.0)
    assert stats.lost_percent == pytest.approx(100 * 32 / 909332)
    assert stats.noerror_share == pytest.approx(909290 / 909300)


def test_parse_dnsperf_interrupted_and_missing_figures() -> None:
    interrupted = DNSPERF_OUTPUT.replace(
        "  Queries lost:         32 (0.00%)\n",
        "  Queries lost:         32 (0.00%)\n  Queries interrupted:  7 (0.00%)\n",
    )
    assert parse_dnsperf(interrupted).interrupted == 7
    with pytest.raises(ValueError, match="queries per second"):
        parse_dnsperf(DNSPERF_OUTPUT.replace("Queries per second", "Queries/s"))
    with pytest.raises(ValueError, match="Queries sent"):
        parse_dnsperf("dnsperf: error: could not open file")


def test_query_files_and_their_checks(tmp_path: Path) -> None:
    local = local_checks()
    assert len(local) == NODES + 5
    assert local[0] == Check("node1.bench.internal", "A", "10.90.0.10")
    assert local[NODES - 1] == Check(f"node{NODES}.bench.internal", "A", "10.90.0.59")
    assert local[NODES] == Check("10.0.90.10.in-addr.arpa", "PTR", "node1.bench.internal")
    assert local[NODES + 1].name == "20.0.90.10.in-addr.arpa"  # node11
    forwarded = forwarded_checks()
    assert len(forwarded) == UPSTREAM_NAMES
    assert forwarded[0] == Check("host1.upstream.test", "A", "198.18.0.1")
    assert forwarded[299] == Check("host300.upstream.test", "A", "198.18.1.44")
    assert len({c.expected for c in forwarded}) == UPSTREAM_NAMES

    files = write_query_files(tmp_path, list(ROWS.values()))
    lines = files["local"].read_text().splitlines()
    assert lines[0] == "node1.bench.internal A"
    assert lines[-1] == "50.0.90.10.in-addr.arpa PTR"  # node41
    assert (
        files["forwarded"].read_text().splitlines()[-1] == f"host{UPSTREAM_NAMES}.upstream.test A"
    )
    assert ROWS["local"].target_ratio == 0.5
    assert not ROWS["local"].warm_up
    assert ROWS["forwarded"].target_ratio is None
    assert ROWS["forwarded"].warm_up


def test_dig_answers_and_which_checks_they_miss() -> None:
    output = (
        "node1.bench.internal.\t60\tIN\tA\t10.90.0.10\n"
        ";; communications error to 10.90.0.1#53: timed out\n"
        "10.0.90.10.in-addr.arpa. 60 IN PTR NODE1.bench.internal.\n"
        "node2.bench.internal.\t60\tIN\tA\t10.90.0.99\n"
        "\n"
    )
    answers = dig_answers(output)
    assert answers == [
        ("node1.bench.internal.", "A", "10.90.0.10"),
        ("10.0.90.10.in-addr.arpa.", "PTR", "NODE1.bench.internal."),
        ("node2.bench.internal.", "A", "10.90.0.99"),
    ]
    checks = [
        Check("node1.bench.internal", "A", "10.90.0.10"),
        Check("10.0.90.10.in-addr.arpa", "PTR", "node1.bench.internal"),  # case-insensitive
        Check("node2.bench.internal", "A", "10.90.0.11"),  # wrong address
        Check("node3.bench.internal", "A", "10.90.0.12"),  # no answer
        Check("node4.bench.internal", "A", "10.90.0.10"),  # node1's address is not node4's
    ]
    assert unanswered(checks, answers) == checks[2:]
    assert dig_answers(";; communications error to 10.90.0.1#53: timed out\n") == []


def test_generated_cluster_description_is_accepted(tmp_path: Path) -> None:
    desc = tmp_path / "cluster-desc.yml"
    desc.write_text(cluster_desc())
    model = load_cluster_file(desc)
    assert model.domain == "bench.internal"
    assert model.upstream_nameservers == (IPv4Address("10.90.1.2"),)
    assert len(model.nodes) == NODES
    assert {(n.hostname, n.ip) for n in model.nodes} == {
        (f"node{i}", IPv4Address(f"10.90.0.{9 + i}")) for i in range(1, NODES + 1)
    }
    assert 'mode: "off"' in cluster_desc()


def test_dnsmasq_records_and_dnsperf_command() -> None:
    assert dnsmasq_host_records([("a.b", "10.0.0.1"), ("c.b", "10.0.0.2")]) == (
        "host-record=a.b,10.0.0.1\nhost-record=c.b,10.0.0.2\n"
    )
    assert dnsperf_argv(Path("/q.txt"), duration=30) == [
        "dnsperf",
        "-s",
        "10.90.0.1",
        "-d",
        "/q.txt",
        "-l",
        "30",
        "-T",
        "1",
        "-c",
        "4",
        "-q",
        "100",
    ]
    assert dnsperf_argv(Path("/q.txt"), passes=2)[5:7] == ["-n", "2"]


def run(
    server: str,
    row: str,
    repeat: int,
    qps: float | None,
    error: str | None = None,
    upstream: int = 0,
) -> RunResult:
    ok = error is None
    stats = None
    if qps is not None:
        stats = DnsperfStats(
            sent=int(qps * 10) + 10,
            completed=int(qps * 10),
            lost=10,
            interrupted=0,
            qps=qps,
            run_time_s=10.0,
            avg_latency_s=0.0005,
            min_latency_s=None,
            max_latency_s=None,
            response_codes={"NOERROR": int(qps * 10)},
        )
    return RunResult(
        server=server,
        row=row,
        repeat=repeat,
        ok=ok,
        error=error,
        stats=stats,
        server_cpu_s=5.0 if ok else None,
        server_udp={"RcvbufErrors": 3} if ok else {},
        upstream_udp={"InDatagrams": upstream} if ok else {},
    )


def test_medians_skip_failed_runs_and_ratios_meet_targets() -> None:
    results = [
        run("bootstrapperd", "forwarded", 1, 40000.0),
        run("dnsmasq", "forwarded", 1, 100000.0),
        run("bootstrapperd", "local", 1, 60000.0),
        run("bootstrapperd", "local", 2, None, error="wrong answer: node1"),
        run("bootstrapperd", "local", 3, 50000.0),
        run("dnsmasq", "local", 1, 100000.0),
        run("dnsmasq", "local", 2, 90000.0),
        run("dnsmasq", "local", 3, 110000.0),
    ]
    summaries = summarise(results)
    assert [(s.row, s.server) for s in summaries] == [
        ("local", "bootstrapperd"),
        ("local", "dnsmasq"),
        ("forwarded", "bootstrapperd"),
        ("forwarded", "dnsmasq"),
    ]
    ours = summaries[0]
    assert ours.qps == 55000.0
    assert (ours.ok, ours.runs) == (2, 3)
    assert ours.avg_latency_ms == pytest.approx(0.5)
    assert ours.server_cpu_s == 5.0
    assert ours.cpu_us_per_query == pytest.approx(
        (1e6 * 5 / 600000 + 1e6 * 5 / 500000) / 2, rel=1e-6
    )
    assert ours.upstream_queries == 0
    assert ours.server_rcvbuf_drops == 3

    by_row = {r.row: r for r in ratios(summaries)}
    assert by_row["local"].ratio == pytest.approx(0.55)
    assert by_row["local"].met is True
    assert by_row["forwarded"].ratio == pytest.approx(0.4)
    assert by_row["forwarded"].target is None
    assert by_row["forwarded"].met is None

    table = render_table(summaries, results, 30)
    assert "dnsperf -l 30 -T 1 -c 4 -q 100" in table
    assert "ratio (local, qps): bootstrapperd/dnsmasq = 0.55 (target ≥ 0.50: met)" in table
    assert "ratio (forwarded, qps): bootstrapperd/dnsmasq = 0.40 (no target)" in table
    assert "FAILED bootstrapperd local #2: wrong answer: node1" in table


def test_a_server_with_no_good_run_has_no_figure() -> None:
    results = [
        run("bootstrapperd", "local", 1, None, error="not serving: nothing listens"),
        run("dnsmasq", "local", 1, 100000.0),
    ]
    summaries = summarise(results)
    assert summaries[0].qps is None
    (ratio,) = ratios(summaries)
    assert ratio.ratio is None
    assert ratio.met is None
    table = render_table(summaries, results, 30)
    assert "FAILED" in table.splitlines()[2]
    assert "not measured" in table
    low = summarise([run("bootstrapperd", "local", 1, 40000.0), run("dnsmasq", "local", 1, 1e5)])
    assert "(target ≥ 0.50: NOT met)" in render_table(low, [], 30)


def test_command_line_defaults_and_choices() -> None:
    args = build_parser().parse_args([])
    assert args.repeats == 3
    assert args.duration == 30
    assert args.servers == ["bootstrapperd", "dnsmasq"]
    assert args.rows == ["local", "forwarded"]
    assert args.json is None
    assert not args.keep_scratch
    quick = build_parser().parse_args(["--repeats", "1", "--duration", "10", "--rows", "local"])
    assert (quick.repeats, quick.duration, quick.rows) == (1, 10, ["local"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--servers", "unbound"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--duration", "0"])
