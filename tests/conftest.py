"""Shared fixtures. Tests that need root, namespaces or a tool skip with the reason; under
``BOOTSTRAPPERD_TEST_STRICT=1`` (set by .ci/run) a missing prerequisite fails instead, so CI
can never pass by skipping."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from bootstrapperd.lab.netlab import NetLab, unavailable_reason
from bootstrapperd.lab.vm.qemu import missing_tools
from bootstrapperd.pack import init_bsroot

# The suite never uses this machine's Docker engine: daemons the tests start find none (their
# registry then runs as the docker-registry binary); the Docker tests start their own engine.
os.environ["DOCKER_HOST"] = "unix:///nonexistent/bootstrapperd-tests/docker.sock"

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "examples" / "cluster-desc.yml"
SEXTANT_FIXTURES = sorted((REPO / "tests" / "fixtures" / "sextant").iterdir())
SHARED_SEXTANT = REPO.parent / "shared" / "sextant"


def unavailable(reason: str) -> NoReturn:
    """Skip (or, in strict mode, fail): a prerequisite is missing. Every skip of the suite
    goes through here."""
    if os.environ.get("BOOTSTRAPPERD_TEST_STRICT") == "1":
        pytest.fail(f"prerequisite missing in strict mode: {reason}")
    pytest.skip(reason)


def need(ok: bool, reason: str) -> None:
    """Skip (or, in strict mode, fail) when a prerequisite is missing."""
    if not ok:
        unavailable(reason)


def need_tools(*tools: str) -> None:
    for tool in tools:
        need(shutil.which(tool) is not None, f"`{tool}` is not installed")


def need_vm_lab() -> None:
    """What booting the lab's virtual machines needs: namespaces, QEMU and its firmware, the
    release signer's gpg, curl and busybox for the initramfs."""
    reason = unavailable_reason()
    need(reason is None, reason or "")
    need(not missing_tools(), f"missing Debian packages: {', '.join(missing_tools())}")
    need_tools("gpg", "gpgv", "curl")
    need(Path("/bin/busybox").is_file(), "/bin/busybox is missing (Debian package busybox-static)")


@pytest.fixture
def netlab() -> Iterator[NetLab]:
    reason = unavailable_reason()
    need(reason is None, reason or "")
    with NetLab() as lab:
        yield lab


@pytest.fixture
def bsroot(tmp_path: Path) -> Path:
    """A bsroot laid out by pack for the bundled example cluster."""
    return init_bsroot(EXAMPLE, tmp_path / "bsroot").root
