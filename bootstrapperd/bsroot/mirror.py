"""The image mirror on disk (``bsroot/html/static``): safe path resolution and release versions.
Files are served only from inside the mirror: a link may point anywhere in it, never out of it.

Layout (what ``flatcar-install -b`` / ``coreos-install -b`` expect below their base URL
``/static/<os>/<channel>``): ``<os>/<channel>/<version>/<file>``, with ``current`` a relative
symlink to the newest version. When pack left no ``current`` link, ``current`` still resolves,
to the newest version directory present.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..model.types import OSConfig
from .layout import open_inside

__all__ = ["Mirror", "version_key"]

_VERSION = re.compile(r"\d+(?:\.\d+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


class Mirror:
    def __init__(self, root: Path) -> None:
        self.root = root

    def newest_version(self, os_name: str, channel: str) -> str | None:
        """The highest release version directory of ``<os>/<channel>``, None when there is none."""
        try:
            entries = os.listdir(self.root / os_name / channel)
        except OSError:
            return None
        versions = [e for e in entries if _VERSION.fullmatch(e)]
        return max(versions, key=version_key) if versions else None

    def current_version(self, os_name: str, channel: str) -> str | None:
        """What ``current`` means for ``<os>/<channel>``: the link's target, else the newest."""
        link = self.root / os_name / channel / "current"
        try:
            target = os.readlink(link)
        except OSError:
            return self.newest_version(os_name, channel)
        name = Path(target).name
        return name if _VERSION.fullmatch(name) else self.newest_version(os_name, channel)

    def version_for(self, os: OSConfig) -> str:
        """The release a machine installs: a pinned version as given; ``current`` resolved in the
        mirror (left as ``current`` when the mirror has none, for the installer to resolve)."""
        if os.version != "current":
            return os.version
        return self.current_version(os.name, os.channel) or "current"

    def locate(self, relative: str) -> Path | None:
        """The path in the mirror that a URL path below ``/static/`` names, ``current``
        resolved (links not followed yet), or None: no ``..``, no backslash or control
        characters. ``open`` decides whether it is served."""
        if _CONTROL.search(relative) or "\\" in relative:
            return None
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            return None
        current = len(parts) >= 4 and parts[2] == "current"
        if current and not os.path.lexists(self.root.joinpath(*parts[:3])):
            version = self.newest_version(parts[0], parts[1])
            if version is None:
                return None
            parts[2] = version
        return self.root.joinpath(*parts)

    def open(self, path: Path) -> int:
        """Open a path ``locate`` gave: a file descriptor of a regular file whose real path (links
        followed) stays inside the mirror. Raises like ``bsroot.layout.open_inside``."""
        return open_inside(path, (self.root,))
