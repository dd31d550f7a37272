"""The wheelhouse ``scripts/setup.sh`` fills (every runtime dependency, the build backend and
pip's wheel), and pip's environment restricted to it and this machine's local package sources:
what the offline install tests (the Containerfile's steps, the site install from bsroot) take
their packages from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import need

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / ".venv" / "wheelhouse"


def local_pip_environment(*needed: str) -> dict[str, str]:
    """pip's environment: the wheelhouse and the package sources this machine's pip is
    configured with (files, PIP_* variables), local ones only; every config file ignored, so
    PyPI is never the default. ``needed``: wheel name prefixes the wheelhouse must hold."""
    for prefix in needed or ("hatchling-",):
        need(
            any(WHEELHOUSE.glob(f"{prefix}*.whl")),
            f"no {prefix}* wheel in {WHEELHOUSE} (the offline installs take their packages "
            "from there): run scripts/setup.sh",
        )
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    indexes: list[str] = []
    links: list[str] = [str(WHEELHOUSE)]
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        option = key.rpartition(".")[2]
        for source in value.strip().strip("'\"").split():
            # Only the file system: a loopback URL would not answer inside pip's namespace.
            local = source.startswith("file://") or source.startswith("/")
            if local and option in ("index-url", "extra-index-url") and source not in indexes:
                indexes.append(source)
            elif local and option == "find-links" and source not in links:
                links.append(source)
    env = {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PIP_FIND_LINKS": " ".join(links),
    }
    if indexes:
        env["PIP_INDEX_URL"] = indexes[0]
        env["PIP_EXTRA_INDEX_URL"] = " ".join(indexes[1:])
    else:
        env["PIP_NO_INDEX"] = "1"
    return env
