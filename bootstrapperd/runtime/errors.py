"""Start-up failures: one error type with a message that says why and what to do; and the one
line a command prints for a bug instead of a traceback."""

from __future__ import annotations

import errno
import traceback
from pathlib import Path


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def cannot_listen(service: str, where: str, exc: OSError, hint: str = "") -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        reason = "address already in use (another server is running on this port)"
    elif exc.errno == errno.EACCES:
        reason = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == errno.EPERM:
        reason = "operation not permitted (binding to an interface needs CAP_NET_RAW)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = "address not available on this machine"
    elif exc.errno == errno.ENODEV:
        reason = "no such interface"
    else:
        reason = exc.strerror or str(exc)
    return StartupError(f"{service}: cannot listen on {where}: {reason}{hint}")


def internal_error(program: str, exc: BaseException) -> str:
    """One line for a bug, instead of a traceback: what was raised, and where, to report."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {'/'.join(Path(last.filename).parts[-2:])}:{last.lineno})"
    text = " ".join(str(exc).split())
    return f"{program}: internal error: {type(exc).__name__}: {text}{where}; please report it"
