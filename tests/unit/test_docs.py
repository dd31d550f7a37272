"""The guides' commands are real: the blocks a test can run here are run as written, and every
``bootstrapperd``/``bootstrapperd-pack`` command of the guides parses with the real parsers (an
option a guide names exists). The site's blocks (the address, the install script) are run by
tests/integration/test_site_install.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrapperd.cli import build_parser
from bootstrapperd.pack import _parser as pack_parser
from tests.conftest import need_tools
from tests.docs import GETTING_STARTED, GUIDES, MIGRATING, REPO, commands, marked_block


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_command_of_the_guides_parses(guide: Path) -> None:
    found = commands(guide, "bootstrapperd", "bootstrapperd-pack")
    assert found, f"{guide.name} gives no bootstrapperd command"
    for argv in found:
        parser = build_parser() if argv[0] == "bootstrapperd" else pack_parser()
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"{guide.name}: `{' '.join(argv)}` does not parse (exit {exc.code})")


def test_the_plan_step_runs_as_written(tmp_path: Path) -> None:
    # The guide runs from a clone of the repository: its config/ is there.
    (tmp_path / "config").symlink_to(REPO / "config")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for line in marked_block(GETTING_STARTED, "plan"):
        result = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{line}: {result.stdout}{result.stderr}"
    assert (tmp_path / "cluster-desc.yml").is_file()
    assert "cluster cluster.example" in result.stdout


def test_sextants_ca_is_reused_as_the_migration_guide_says(tmp_path: Path) -> None:
    """A CA made as Sextant's scripts/common.sh made it (RSA 2048, CN=kube-ca) in a Sextant
    bsroot; the guide's lines copy it and pack (here with --no-downloads: no internet); the CA
    is kept byte for byte and the bootstrapper certificate pack signs chains to it."""
    need_tools("openssl")
    sextant = tmp_path / "sextant-bsroot" / "tls"
    sextant.mkdir(parents=True)
    for argv in (
        ["openssl", "genrsa", "-out", "ca-key.pem", "2048"],
        ["openssl", "req", "-x509", "-new", "-nodes", "-key", "ca-key.pem", "-days", "3650",
         "-out", "ca.pem", "-subj", "/CN=kube-ca"],
    ):  # fmt: skip
        subprocess.run(argv, cwd=sextant, check=True, capture_output=True)
    shutil.copy(REPO / "config" / "examples" / "cluster-desc.yml", tmp_path / "cluster-desc.yml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    lines = marked_block(MIGRATING, "reuse-ca")
    assert lines[-1] == "bootstrapperd-pack cluster-desc.yml -o bsroot"
    for line in [*lines[:-1], lines[-1] + " --no-downloads"]:
        line = line.replace("/bsroot/", f"{sextant.parent}/")  # Sextant's bsroot, here
        result = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{line}: {result.stdout}{result.stderr}"
    tls = tmp_path / "bsroot" / "tls"
    assert (tls / "ca.pem").read_bytes() == (sextant / "ca.pem").read_bytes()
    assert (tls / "ca-key.pem").read_bytes() == (sextant / "ca-key.pem").read_bytes()
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(sextant / "ca.pem"), str(tls / "bootstrapper.pem")],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
