"""Where the shipped data (``config/``: templates, examples, schema) lives at run time."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """``bootstrapperd/_config`` in an installed wheel; the repository's ``config/`` otherwise."""
    package = Path(__file__).resolve().parent.parent  # bootstrapperd/
    packaged = package / "_config"
    if packaged.is_dir():
        return packaged
    return package.parent / "config"


def example_cluster() -> Path:
    return config_dir() / "examples" / "cluster-desc.yml"


def systemd_dir() -> Path:
    """The systemd units: ``bootstrapperd/_config/systemd`` in an installed wheel; the
    repository's ``systemd/`` otherwise."""
    packaged = config_dir() / "systemd"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "systemd"
