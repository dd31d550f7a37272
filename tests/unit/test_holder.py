"""Reload swaps the model atomically; a bad file keeps the old model and says why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bootstrapperd.model import ClusterModel, ConfigError
from bootstrapperd.model.holder import ModelHolder
from tests.conftest import EXAMPLE

NEW_NODE = '  - mac: "52:54:00:77:00:99"\n    cur_host_name: "worker9"\n'


def test_reload_good_and_bad(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cluster-desc.yml"
    path.write_text(EXAMPLE.read_text())
    holder = ModelHolder.load(path)
    first = holder.model
    seen: list[tuple[ClusterModel, ClusterModel]] = []
    holder.subscribe(lambda old, new: seen.append((old, new)))

    path.write_text(EXAMPLE.read_text() + NEW_NODE)
    assert holder.reload() is True
    assert holder.generation == 2
    assert len(holder.model.nodes) == 4
    assert seen == [(first, holder.model)]
    good_digest = holder.digest

    path.write_text(EXAMPLE.read_text() + "  - mac: 52:54:00:zz\n")
    with caplog.at_level(logging.ERROR, logger="bootstrapperd"):
        assert holder.reload() is False
    assert holder.generation == 2
    assert len(holder.model.nodes) == 4
    assert holder.digest == good_digest
    assert len(seen) == 1
    assert any(
        "nodes[3].mac: '52:54:00:zz' is not a MAC address" in r.getMessage() for r in caplog.records
    )

    path.unlink()
    assert holder.reload() is False
    assert holder.model.nodes[-1].hostname == "worker9"


def test_first_load_failure_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ModelHolder.load(tmp_path / "missing.yml")
