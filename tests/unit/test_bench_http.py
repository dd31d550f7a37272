"""bench/http.py's pure parts: the command line, nginx's configuration, the client command and
its output, the aggregation of one row's downloads, medians, ratios and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import MIB, busy_percent
from bench.harness import server_order
from bench.http import (
    URL,
    RunResult,
    build_parser,
    nginx_conf,
    ratios,
    render_table,
    rows_for,
    summarise,
)
from bench.http_clients import (
    Download,
    aggregate,
    curl_argv,
    head_check_argv,
    launcher_argv,
    parse_curl_output,
    parse_launcher_output,
)

SIZE = 256 * MIB


def run(
    server: str,
    clients: int,
    repeat: int,
    mib_per_s: float | None,
    error: str | None = None,
) -> RunResult:
    ok = error is None
    return RunResult(
        server=server,
        row="single" if clients == 1 else "many",
        clients=clients,
        repeat=repeat,
        ok=ok,
        error=error,
        seconds=clients * 256 / mib_per_s if ok and mib_per_s else None,
        mib_per_s=mib_per_s if ok else None,
        total_bytes=clients * SIZE if ok else 0,
        slowest_s=1.5 if ok else None,
        server_cpu_s=2.0 if ok else None,
        client_cpu_s=3.0 if ok else None,
        peak_rss_kib=60_000 if server == "bootstrapperd" else 16_000,
    )


def test_command_line_defaults_and_choices() -> None:
    args = build_parser().parse_args([])
    assert (args.repeats, args.clients, args.size_mib) == (3, 100, 256)
    assert args.servers == ["bootstrapperd", "nginx"]
    assert args.client == "curl"
    assert args.timeout == 600
    assert args.json is None
    assert not args.keep_scratch
    args = build_parser().parse_args(
        ["--repeats", "1", "--clients", "10", "--size-mib", "16", "--servers", "nginx"]
    )
    assert (args.repeats, args.clients, args.size_mib, args.servers) == (1, 10, 16, ["nginx"])
    assert build_parser().parse_args(["--client", "aiohttp"]).client == "aiohttp"
    for bad in (["--clients", "0"], ["--servers", "apache"], ["--client", "wget"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_rows_and_alternating_server_order() -> None:
    single, many = rows_for(100)
    assert (single.name, single.clients, single.target_ratio, single.label) == (
        "single",
        1,
        None,
        "1 client",
    )
    assert (many.name, many.clients, many.target_ratio, many.label) == (
        "many",
        100,
        0.9,
        "100 clients",
    )
    assert [row.clients for row in rows_for(1)] == [1]
    servers = ["bootstrapperd", "nginx"]
    assert [server_order(servers, repeat) for repeat in (1, 2, 3)] == [
        ["bootstrapperd", "nginx"],
        ["nginx", "bootstrapperd"],
        ["bootstrapperd", "nginx"],
    ]
    assert server_order(["nginx"], 2) == ["nginx"]


def test_nginx_configuration(tmp_path: Path) -> None:
    run_dir, html = tmp_path / "nginx-1", tmp_path / "bsroot" / "html"
    text = nginx_conf(run_dir, html)
    directives = {line.strip() for line in text.splitlines()}
    for line in (
        "daemon off;",
        "master_process on;",
        "worker_processes auto;",
        "user root;",
        f"pid {run_dir}/nginx.pid;",
        f"error_log {run_dir}/nginx-error.log warn;",
        "access_log off;",
        "sendfile on;",
        "tcp_nopush on;",
        "listen 10.91.0.1:80;",
        f"root {html};",
    ):
        assert line in directives
    # Nothing outside the run directory: every temp path is in it, no include of /etc/nginx.
    for directive in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{directive}_temp_path {run_dir}/{directive};" in text
    assert "/etc/nginx" not in text
    assert "/var/" not in text
    assert text.count("{") == text.count("}")
    assert "listen 127.0.0.1:8080;" in nginx_conf(run_dir, html, "127.0.0.1", 8080)


def test_client_commands() -> None:
    argv = curl_argv(URL, 600)
    assert argv[0] == "curl"
    assert argv[-1] == "http://10.91.0.1/static/bench/image.bin"
    assert argv[argv.index("-o") + 1] == "/dev/null"
    assert argv[argv.index("-w") + 1] == "%{size_download} %{http_code}"
    assert argv[argv.index("--noproxy") + 1] == "*"  # never through a proxy from the environment
    assert argv[argv.index("--max-time") + 1] == "600"
    head = head_check_argv(URL)
    assert "-I" in head
    assert head[head.index("-w") + 1] == "%{http_code} %header{content-length}"
    launcher = launcher_argv("curl", URL, 100, 600)
    assert launcher[1] == "-c"
    assert "client_main" in launcher[2]
    assert launcher[3:] == ["curl", URL, "100", "600"]


def test_curl_and_launcher_output_parsing() -> None:
    assert parse_curl_output("268435456 200") == (SIZE, 200)
    assert parse_curl_output("0 404\n") == (0, 404)
    assert parse_curl_output("") is None
    assert parse_curl_output("oops 200") is None
    downloads = [Download(0.0, 2.0, SIZE, 200), Download(0.1, 2.5, 10, 0, "curl exited")]
    text = "a warning line\n" + json.dumps(
        {"downloads": [d.__dict__ for d in downloads], "client_cpu_s": 1.25}
    )
    assert parse_launcher_output(text) == (downloads, 1.25)
    with pytest.raises(ValueError, match="Expecting value"):
        parse_launcher_output("Traceback …")


def test_aggregate_is_bytes_over_first_start_to_last_finish() -> None:
    downloads = [
        Download(10.0, 14.0, SIZE, 200),
        Download(10.5, 18.0, SIZE, 200),
        Download(10.2, 12.0, SIZE, 200),
    ]
    agg = aggregate(downloads, SIZE, 3)
    assert agg.errors == []
    assert agg.total_bytes == 3 * SIZE
    assert agg.seconds == pytest.approx(8.0)
    assert agg.mib_per_s == pytest.approx(3 * 256 / 8.0)
    assert agg.fastest_s == pytest.approx(1.8)
    assert agg.slowest_s == pytest.approx(7.5)
    assert agg.spawn_spread_s == pytest.approx(0.5)


def test_aggregate_has_no_figure_unless_every_download_is_whole() -> None:
    short = [Download(0.0, 1.0, SIZE, 200), Download(0.0, 1.0, SIZE - 1, 200)]
    agg = aggregate(short, SIZE, 2)
    assert agg.mib_per_s is None
    assert agg.errors == [f"1 of 2 downloads failed, e.g. status 200, {SIZE - 1} of {SIZE} bytes"]

    not_found = aggregate([Download(0.0, 0.1, 19, 404)], SIZE, 1)
    assert not_found.mib_per_s is None
    assert "status 404" in not_found.errors[0]

    curl_error = aggregate([Download(0.0, 0.1, 0, 0, "curl exited with status 7")], SIZE, 1)
    assert curl_error.errors == ["1 of 1 downloads failed, e.g. curl exited with status 7"]

    missing = aggregate([Download(0.0, 1.0, SIZE, 200)], SIZE, 2)
    assert missing.mib_per_s is None
    assert missing.errors == ["1 downloads reported, expected 2"]

    assert aggregate([], SIZE, 1).errors == ["0 downloads reported, expected 1"]


def test_medians_ratios_and_table() -> None:
    results = [
        run("bootstrapperd", 1, 1, 900.0),
        run("bootstrapperd", 100, 1, 2400.0),
        run("nginx", 1, 1, 1500.0),
        run("nginx", 100, 1, 2600.0),
        run("nginx", 1, 2, 1400.0),
        run("nginx", 100, 2, 2500.0),
        run("bootstrapperd", 1, 2, 1000.0),
        run("bootstrapperd", 100, 2, None, error="3 of 100 downloads failed, e.g. status 500"),
        run("bootstrapperd", 1, 3, 800.0),
        run("bootstrapperd", 100, 3, 2200.0),
        run("nginx", 1, 3, 1600.0),
        run("nginx", 100, 3, 2700.0),
    ]
    summaries = summarise(results)
    # 1 client first, then N; bootstrapperd before nginx, whatever order the runs came in.
    assert [(s.clients, s.server) for s in summaries] == [
        (1, "bootstrapperd"),
        (1, "nginx"),
        (100, "bootstrapperd"),
        (100, "nginx"),
    ]
    ours_many = summaries[2]
    assert ours_many.mib_per_s == 2300.0  # the failed repeat is left out
    assert (ours_many.ok, ours_many.runs) == (2, 3)
    assert summaries[0].mib_per_s == 900.0
    assert summaries[1].mib_per_s == 1500.0

    single, many = ratios(summaries)
    assert single.ratio == pytest.approx(0.6)
    assert single.target is None
    assert single.met is None
    assert many.ratio == pytest.approx(2300 / 2600)
    assert many.target == 0.9
    assert many.met is False

    table = render_table(summaries, results, SIZE, "curl", 3).splitlines()
    assert table[0].startswith("HTTP, 256 MiB file, veth MTU 1500, clients: curl processes")
    assert "median of 3" in table[0]
    assert table[1].split() == [
        "row",
        "bootstrapperd",
        "MiB/s",
        "nginx",
        "MiB/s",
        "ratio",
        "target",
    ]
    assert table[2].split() == ["1", "client", "900.0", "1500.0", "0.60", "none"]
    assert table[3].split() == [
        "100",
        "clients",
        "2300.0",
        "2600.0",
        "0.88",
        "≥",
        "0.90",
        "(NOT",
        "met)",
    ]
    assert table[-2] == (
        "peak RSS (VmHWM at stop; nginx: master + workers summed): "
        "bootstrapperd 58.6 MiB, nginx 15.6 MiB"
    )
    assert (
        "FAILED bootstrapperd 100 clients #2: 3 of 100 downloads failed, e.g. status 500" in table
    )


def test_a_server_with_no_good_run_has_no_figure() -> None:
    results = [
        run("bootstrapperd", 100, 1, None, error="not serving the image: HEAD …: 404"),
        run("nginx", 100, 1, 2600.0),
    ]
    summaries = summarise(results)
    assert summaries[0].mib_per_s is None
    (ratio,) = ratios(summaries)
    assert ratio.ratio is None
    assert ratio.met is None
    table = render_table(summaries, results, SIZE)
    assert table.splitlines()[2].split() == [
        "100",
        "clients",
        "-",
        "2600.0",
        "?",
        "≥",
        "0.90",
        "(not",
        "measured)",
    ]
    assert "FAILED" in table


def test_busy_percent_of_all_cpus() -> None:
    assert busy_percent((100, 1000), (250, 1200)) == pytest.approx(75.0)
    assert busy_percent(None, (250, 1200)) is None
    assert busy_percent((100, 1000), (100, 1000)) is None
