"""bench/tftp.py's pure parts: client command lines, the download check, medians, ratios, table."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.common import check_download, make_payload
from bench.tftp import (
    ROWS,
    FetchResult,
    build_parser,
    ratios,
    render_table,
    summarise,
)


def fetch(
    server: str, row: str, repeat: int, mib_per_s: float | None, error: str | None = None
) -> FetchResult:
    ok = error is None
    return FetchResult(
        server=server,
        row=row,
        repeat=repeat,
        ok=ok,
        error=error,
        seconds=64 / mib_per_s if ok and mib_per_s else None,
        mib_per_s=mib_per_s if ok else None,
        server_cpu_s=1.0 if ok else None,
        client_cpu_s=0.5 if ok else None,
        server_udp={"RcvbufErrors": 0} if ok else {},
        client_udp={"RcvbufErrors": 2} if ok else {},
    )


def test_client_command_lines() -> None:
    out = Path("/x/out.bin")
    assert ROWS["default"].argv("10.89.0.1", "f.bin", out) == [
        "tftp",
        "-m",
        "binary",
        "10.89.0.1",
        "-c",
        "get",
        "f.bin",
        "/x/out.bin",
    ]
    assert ROWS["blksize"].argv("10.89.0.1", "f.bin", out) == [
        "atftp",
        "--option",
        "blksize 1468",
        "-g",
        "-r",
        "f.bin",
        "-l",
        "/x/out.bin",
        "10.89.0.1",
    ]
    window = ROWS["window"].argv("10.89.0.1", "f.bin", out)
    assert window[:5] == ["atftp", "--option", "blksize 1468", "--option", "windowsize 16"]
    assert [row.target_ratio for row in ROWS.values()] == [1.0, 1.0, 1.3]


def test_payload_and_download_check(tmp_path: Path) -> None:
    payload = make_payload(tmp_path / "p.bin", 3 * 1024 * 1024 + 5, chunk=1024 * 1024)
    data = payload.path.read_bytes()
    assert payload.size == len(data)
    assert payload.sha256 == hashlib.sha256(data).hexdigest()

    same = tmp_path / "same.bin"
    same.write_bytes(data)
    assert check_download(same, payload) is None

    missing = check_download(tmp_path / "nope.bin", payload)
    assert missing is not None
    assert "no downloaded file" in missing

    short = tmp_path / "short.bin"
    short.write_bytes(data[:-1])
    assert (
        check_download(short, payload) == f"size {payload.size - 1} bytes, expected {payload.size}"
    )

    flipped = tmp_path / "flipped.bin"
    flipped.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    different = check_download(flipped, payload)
    assert different is not None
    assert different.startswith("sha256 ")


def test_medians_skip_failed_fetches_and_ratios_meet_targets() -> None:
    results = [
        fetch("bootstrapperd", "window", 1, 80.0),
        fetch("bootstrapperd", "window", 2, None, error="timed out after 120 s"),
        fetch("bootstrapperd", "window", 3, 70.0),
        fetch("dnsmasq", "window", 1, 60.0),
        fetch("dnsmasq", "window", 2, 50.0),
        fetch("dnsmasq", "window", 3, 55.0),
        fetch("bootstrapperd", "default", 1, 20.0),
        fetch("dnsmasq", "default", 1, 21.0),
    ]
    summaries = summarise(results)
    # Rows in ROWS order whatever order the fetches came in.
    assert [(s.row, s.server) for s in summaries] == [
        ("default", "bootstrapperd"),
        ("default", "dnsmasq"),
        ("window", "bootstrapperd"),
        ("window", "dnsmasq"),
    ]
    ours = summaries[2]
    assert ours.mib_per_s == 75.0
    assert (ours.ok, ours.runs) == (2, 3)
    assert ours.client_rcvbuf_drops == 2

    by_row = {r.row: r for r in ratios(summaries)}
    assert by_row["default"].ratio == pytest.approx(20 / 21)
    assert by_row["default"].met is False
    assert by_row["window"].ratio == pytest.approx(75 / 55)
    assert by_row["window"].target == 1.3
    assert by_row["window"].met is True

    table = render_table(summaries, results, 64 * 1024 * 1024)
    assert "64 MiB file" in table
    assert "ratio (window, MiB/s): bootstrapperd/dnsmasq = 1.36 (target ≥ 1.30: met)" in table
    assert "ratio (default, MiB/s): bootstrapperd/dnsmasq = 0.95 (target ≥ 1.00: NOT met)" in table
    assert "FAILED bootstrapperd window #2: timed out after 120 s" in table


def test_a_server_with_no_good_fetch_has_no_figure() -> None:
    results = [
        fetch("bootstrapperd", "blksize", 1, None, error="not serving: nothing listens"),
        fetch("dnsmasq", "blksize", 1, 54.0),
    ]
    summaries = summarise(results)
    assert summaries[0].mib_per_s is None
    (ratio,) = ratios(summaries)
    assert ratio.ratio is None
    assert ratio.met is None
    table = render_table(summaries, results, 64 * 1024 * 1024)
    assert "FAILED" in table.splitlines()[2]
    assert "not measured" in table


def test_command_line_defaults_and_choices() -> None:
    args = build_parser().parse_args([])
    assert args.repeats == 3
    assert args.servers == ["bootstrapperd", "dnsmasq"]
    assert args.rows == ["default", "blksize", "window"]
    assert args.size_mib == 64
    assert build_parser().parse_args(["--rows", "window", "--repeats", "1"]).rows == ["window"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--servers", "kea"])
