"""``bsroot/manifest.json``: the sha256 and size of every file pack fetched, and the check of it.

Pack writes it last, so a bsroot with a manifest is a finished one. ``bootstrapperd-pack
--verify`` and ``bootstrapperd serve`` (at start) compare the directory with it and name every
file that is missing, of the wrong size, or corrupt. Covered: what pack downloads and what
machines are served from it — ``html/``, ``tftpboot/`` and ``images/``. Not covered, because
they are meant to change on site: ``config/`` (the description is edited and reloaded),
``tls/`` (the daemon issues node certificates) and ``state/``. Dot files (partial downloads)
are never listed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .layout import Bsroot, write_atomically

__all__ = ["COVERED", "MANIFEST", "Entry", "Manifest", "ManifestError", "Problem", "verify"]

MANIFEST = "manifest.json"
# What pack fetched or made for the machines and for the bootstrapper itself; not config/ (the
# operator may edit it on site), tls/ (keys) or state/ (the daemon's).
COVERED = ("html", "tftpboot", "images", "bootstrapper", "install-bootstrapper.sh")
FORMAT = 1


class ManifestError(Exception):
    """The manifest itself is missing or unreadable."""


@dataclass(frozen=True)
class Entry:
    size: int
    sha256: str | None  # None for a symbolic link
    link: str | None = None
    mtime_ns: int = 0  # a hint for pack's next run (re-hash only what changed), not checked


@dataclass(frozen=True)
class Problem:
    path: str
    what: str  # "missing" | "size" | "corrupt" | "link"
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.path} ({self.detail})"


@dataclass(frozen=True)
class Manifest:
    files: dict[str, Entry]
    created_by: str = ""

    @classmethod
    def load(cls, bsroot: Bsroot) -> Manifest:
        path = bsroot.root / MANIFEST
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path} is missing: run bootstrapperd-pack to write it") from None
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{path}: not a format {FORMAT} manifest")
        files: dict[str, Entry] = {}
        for name, raw in dict(data.get("files", {})).items():
            try:
                files[name] = Entry(
                    size=int(raw["size"]),
                    sha256=raw.get("sha256"),
                    link=raw.get("link"),
                    mtime_ns=int(raw.get("mtime_ns", 0)),
                )
            except (KeyError, TypeError, ValueError):
                raise ManifestError(f"{path}: bad entry for {name}") from None
        return cls(files, str(data.get("created_by", "")))

    def write(self, bsroot: Bsroot) -> None:
        files: dict[str, Any] = {}
        for name, entry in sorted(self.files.items()):
            if entry.link is not None:
                files[name] = {"size": 0, "link": entry.link}
            else:
                files[name] = {"size": entry.size, "sha256": entry.sha256}
                files[name]["mtime_ns"] = entry.mtime_ns
        body = {"format": FORMAT, "created_by": self.created_by, "files": files}
        write_atomically(bsroot.root / MANIFEST, json.dumps(body, indent=1).encode() + b"\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(bsroot: Bsroot) -> Iterator[tuple[str, Path]]:
    for top in COVERED:
        base = bsroot.root / top
        if base.is_file() and not base.is_symlink():
            yield top, base
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            # A symbolic link to a directory (``current``) is listed as a link, not walked.
            for name in sorted(
                [*filenames, *(d for d in dirnames if Path(dirpath, d).is_symlink())]
            ):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                yield path.relative_to(bsroot.root).as_posix(), path


def build(
    bsroot: Bsroot,
    created_by: str,
    previous: Manifest | None = None,
    known: Mapping[Path, tuple[int, int, str]] | None = None,
) -> Manifest:
    """Hash every covered file, except where the hash is already known for the file's current
    size and mtime: from ``known`` (absolute path → size, mtime_ns, sha256: what the downloader
    hashed as it wrote) or from the previous manifest's entry (pack rewrote nothing there)."""
    files: dict[str, Entry] = {}
    for name, path in _walk(bsroot):
        if path.is_symlink():
            files[name] = Entry(size=0, sha256=None, link=os.readlink(path))
            continue
        stat = path.stat()
        hashed = known.get(path.absolute()) if known else None
        if hashed and hashed[:2] == (stat.st_size, stat.st_mtime_ns):
            files[name] = Entry(stat.st_size, hashed[2], mtime_ns=stat.st_mtime_ns)
            continue
        old = previous.files.get(name) if previous else None
        if old and old.sha256 and old.size == stat.st_size and old.mtime_ns == stat.st_mtime_ns:
            files[name] = old
            continue
        files[name] = Entry(stat.st_size, sha256_file(path), mtime_ns=stat.st_mtime_ns)
    return Manifest(files, created_by)


def verify(
    bsroot: Bsroot,
    manifest: Manifest,
    *,
    full: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Problem]:
    """Every listed file present with its size (and, when ``full``, its sha256)."""
    problems: list[Problem] = []
    for name, entry in sorted(manifest.files.items()):
        path = bsroot.root / name
        if entry.link is not None:
            try:
                target = os.readlink(path)
            except OSError:
                problems.append(Problem(name, "missing", f"link to {entry.link}"))
                continue
            if target != entry.link:
                problems.append(Problem(name, "link", f"points to {target}, not {entry.link}"))
            continue
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(Problem(name, "missing", f"{entry.size} bytes expected"))
            continue
        if size != entry.size:
            problems.append(Problem(name, "size", f"{size} bytes, {entry.size} expected"))
            continue
        if full:
            if progress is not None:
                progress(name)
            actual = sha256_file(path)
            if actual != entry.sha256:
                problems.append(
                    Problem(name, "corrupt", f"sha256 {actual[:16]}…, {entry.sha256} expected")
                )
    return problems
