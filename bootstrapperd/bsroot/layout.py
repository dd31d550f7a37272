"""The bsroot directory: what pack writes and serve reads (see DESIGN.md, "bsroot"), and the
trees its files are served from.

Each route serves only from its own trees: TFTP from ``tftpboot/`` and ``html/static/``, HTTP
``/boot/`` from ``tftpboot/``, HTTP ``/static/`` from ``html/static/``; never ``tls/``,
``state/``, ``config/`` or anything outside bsroot. Symlinks are followed while they resolve
inside the route's trees (Sextant's relative links). A file is opened, not just checked: the
last part with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a FIFO cannot stall the daemon), and the
opened file's own path (``/proc/self/fd``) must still lie inside the trees, so a file or
directory replaced by a link between the check and the open is refused too.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocols.throttle import LogThrottle

__all__ = [
    "REFUSAL_LOG_INTERVAL",
    "Bsroot",
    "Refused",
    "TreeRefusals",
    "open_inside",
    "write_atomically",
]

REFUSAL_LOG_INTERVAL = 60.0  # seconds: at most one log line per (route, kind) of refusal

log = logging.getLogger("bootstrapperd.files")


class Refused(Exception):
    """A file that is not served from this tree. ``kind`` says why: ``outside`` (its real path
    leaves the trees), ``loop`` (a symlink loop), ``changed`` (replaced by a link between the
    check and the open), ``special`` (a FIFO, socket or device) or ``directory``."""

    def __init__(self, kind: str, path: Path, real: str | None = None) -> None:
        super().__init__(f"{kind}: {path}" + (f" -> {real}" if real else ""))
        self.kind = kind
        self.path = path
        self.real = real

    @property
    def edge(self) -> bool:
        """Whether this is a refusal at the edge of the tree (counted and logged), not merely a
        name that is no file (a directory)."""
        return self.kind != "directory"


class TreeRefusals:
    """How many files each route refused at the edge of its trees, by route and kind, with a
    warning at most once per ``REFUSAL_LOG_INTERVAL`` for each (route, kind)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._clock = clock
        self._throttle = LogThrottle(REFUSAL_LOG_INTERVAL)
        self._quiet: Counter[tuple[str, str]] = Counter()

    def record(self, route: str, refused: Refused, peer: str = "") -> None:
        """Count one refusal; log it unless this (route, kind) was logged within the interval."""
        key = (route, refused.kind)
        self.counts[key] += 1
        if not self._throttle.allow(f"{route}:{refused.kind}", self._clock()):
            self._quiet[key] += 1
            return
        fields = {
            "route": route,
            "kind": refused.kind,
            "path": str(refused.path),
            "real": refused.real,
            "peer": peer or None,
            "unlogged_since": self._quiet.pop(key, 0),
        }
        log.warning("file refused at the edge of its tree", extra={"fields": fields})

    def events(self) -> dict[str, int]:
        """The counts as ``<route>_<kind>`` → n, the form of a service's counters in /metrics."""
        return {f"{route}_{kind}": n for (route, kind), n in sorted(self.counts.items())}


@dataclass(frozen=True)
class Bsroot:
    root: Path
    # Files refused at the edge of their trees, by every route serving this bsroot.
    refusals: TreeRefusals = field(default_factory=TreeRefusals, compare=False, repr=False)

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
    def admin_socket(self) -> Path:
        """The daemon's admin channel (mode 0600; http/admin.py)."""
        return self.state / "admin.sock"

    @property
    def bootstrapper(self) -> Path:
        """bootstrapperd itself, for the site (a wheelhouse, the units, the container image)."""
        return self.root / "bootstrapper"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def tftp_trees(self) -> tuple[Path, ...]:
        """What TFTP serves from: ``tftpboot/``, and the mirror for Sextant's ``static`` link."""
        return (self.tftpboot, self.html_static)

    @property
    def boot_trees(self) -> tuple[Path, ...]:
        """What HTTP ``/boot/<name>`` serves from: ``tftpboot/`` alone."""
        return (self.tftpboot,)

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


def _inside(real: str, trees: Sequence[str]) -> bool:
    return any(real == tree or real.startswith(tree.rstrip("/") + "/") for tree in trees)


def _real_trees(trees: Sequence[Path]) -> list[str]:
    return [os.path.realpath(tree) for tree in trees]


def open_inside(path: Path, trees: Sequence[Path]) -> int:
    """Open the regular file ``path`` read-only when its real path lies inside one of ``trees``
    (themselves resolved, so a tree may be a link): the file descriptor, for the caller to
    close. Raises ``FileNotFoundError`` when there is nothing there, ``PermissionError``, and
    ``Refused`` for a file that is not served from these trees."""
    roots = _real_trees(trees)
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("loop", path) from None
        raise
    if not _inside(real, roots):
        raise Refused("outside", path, real)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last part became a symlink since realpath
            raise Refused("changed", path, real) from None
        raise
    try:
        _check_opened(fd, path, roots)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_opened(fd: int, path: Path, roots: Sequence[str]) -> None:
    """Refuse what was opened unless it is a regular file whose own path lies in ``roots``."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise Refused("directory", path)
    if not stat.S_ISREG(mode):
        raise Refused("special", path)
    opened = os.readlink(f"/proc/self/fd/{fd}")
    if not _inside(opened, roots):  # a directory on the way was replaced by a link
        raise Refused("changed", path, opened)
