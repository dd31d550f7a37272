"""The process's file-descriptor limit: raised to what the host allows, and what it affords.

Every TFTP transfer holds a socket and an open file; HTTP and DNS connections, the state
database, the logs and the registry child need descriptors too. At start the soft limit of
RLIMIT_NOFILE is raised to the hard limit (systemd's ``LimitNOFILE=`` sets both), and the
transfer cap is derived from what is then available, keeping a reserve for everything else.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

FDS_PER_TRANSFER = 2  # the transfer's socket and the file it reads
FD_RESERVE = 512  # descriptors kept for HTTP and DNS connections, the database, logs, children
SOFT_CEILING = 1 << 20  # the soft limit asked for when the hard limit is unlimited
MIN_TRANSFERS = 8  # never fewer transfer slots, whatever the limit (refused, not crashed)


@dataclass(frozen=True, slots=True)
class FDLimit:
    """The descriptor limit found at start and the one in force after raising it."""

    before: int
    soft: int
    hard: int


def raise_fd_limit() -> FDLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as far as the kernel lets it)."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = SOFT_CEILING if hard == resource.RLIM_INFINITY else hard
    soft = before
    if before != resource.RLIM_INFINITY and before < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            soft = before  # e.g. above fs.nr_open: keep what we have
    return FDLimit(before, soft, hard)


def transfer_cap(soft: int, wanted: int) -> int:
    """How many concurrent transfers ``soft`` descriptors afford: at most ``wanted``, after
    the reserve, ``FDS_PER_TRANSFER`` each; never below ``MIN_TRANSFERS``."""
    if soft == resource.RLIM_INFINITY:
        return wanted
    afford = (soft - FD_RESERVE) // FDS_PER_TRANSFER
    return max(MIN_TRANSFERS, min(wanted, afford))
