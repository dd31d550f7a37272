"""The bsroot directory: what pack writes and serve reads (see DESIGN.md, "bsroot")."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Bsroot:
    root: Path

    @property
    def cluster_desc(self) -> Path:
        return self.root / "config" / "cluster-desc.yml"

    @property
    def templates(self) -> Path:
        return self.root / "config" / "templates"

    @property
    def tftpboot(self) -> Path:
        return self.root / "tftpboot"

    @property
    def html_static(self) -> Path:
        return self.root / "html" / "static"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def directories(self) -> tuple[Path, ...]:
        return (
            self.cluster_desc.parent,
            self.tftpboot,
            self.html_static,
            self.images,
            self.tls,
            self.state,
        )


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside ``path`` and rename it over: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
