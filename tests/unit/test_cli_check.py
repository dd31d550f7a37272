"""`bootstrapperd check` and `bootstrapperd-pack` as a user runs them: exit codes and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrapperd import cli, pack
from tests.conftest import EXAMPLE, SEXTANT_FIXTURES, SHARED_SEXTANT


def _descriptions() -> list[Path]:
    extra = sorted(SHARED_SEXTANT.iterdir()) if SHARED_SEXTANT.is_dir() else []
    return [*SEXTANT_FIXTURES, *extra, EXAMPLE]


@pytest.mark.parametrize("path", _descriptions(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_check_exits_0_on_every_description(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK\n")
    assert "master" in out


def test_check_summary_names_master_etcd_and_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    sample = next(p for p in SEXTANT_FIXTURES if p.name == "cluster-desc.sample.yaml")
    assert cli.main(["check", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "cluster ail.unisound.com: 5 nodes, 1 master(s), 3 etcd member(s)" in out
    assert "masters node1;" in out
    assert "etcd          node1, node2, node3" in out
    assert "DHCP          off" in out
    lines = {line.split()[0]: line for line in out.splitlines() if ".ail.unisound.com" in line}
    assert lines["node1.ail.unisound.com"].endswith("master, etcd")
    assert lines["node3.ail.unisound.com"].endswith("etcd, ingress, worker")
    assert "00:25:90:c0:f6:d6" in lines["node5.ail.unisound.com"]
    assert "os_name: 'CentOS'" in out  # the warning is shown with the summary
    assert len(out.splitlines()) <= 40  # one screen


def test_check_exits_1_with_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yml"
    text = EXAMPLE.read_text()
    bad.write_text(
        text.replace('"52-54-00-77-00-11"', '"52-54-00-77-00-zz"').replace(
            "iplow: 10.77.0.100", "iplow: 10.76.0.100"
        )
    )
    assert cli.main(["check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{bad}: 2 error(s):" in captured.err
    assert "iplow: 10.76.0.100 is outside subnet 10.77.0.0/24 (line 9)" in captured.err
    assert "nodes[1].mac: '52-54-00-77-00-zz' is not a MAC address" in captured.err


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(tmp_path / "nope.yml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_pack_writes_layout_and_refuses_bad_description(tmp_path: Path) -> None:
    out = tmp_path / "bsroot"
    assert pack.main([str(EXAMPLE), "-o", str(out), "--no-downloads"]) == 0
    assert (out / "config" / "cluster-desc.yml").read_bytes() == EXAMPLE.read_bytes()
    for sub in ("tftpboot", "html/static", "images", "tls", "state"):
        assert (out / sub).is_dir()
    assert not list((out / "config").glob(".*.part"))
    bad = tmp_path / "bad.yml"
    bad.write_text(EXAMPLE.read_text().replace("kube_master: y", "kube_master: n"))
    assert pack.main([str(bad), "-o", str(out), "--no-downloads"]) == 1
    # the bad description did not replace the good one
    assert (out / "config" / "cluster-desc.yml").read_bytes() == EXAMPLE.read_bytes()
