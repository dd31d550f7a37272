"""Power control through machines' BMCs: IPMI 2.0 over LAN (pyghmi) and Redfish (aiohttp).

Plain values in, results out: the caller reads the node's ``password_file`` and builds a
``BMC``; ``control`` acts on one machine and ``control_many`` on a rack (bounded, staggered).
Neither raises for a BMC's problems: every failure is a ``PowerResult`` with one clear line.
See docs/power.md.
"""

from __future__ import annotations

from .base import BMC, Action, Failure, PowerResult, PowerState, Protocol
from .fleet import DEFAULT_TIMEOUT, Progress, control, control_many

__all__ = [
    "BMC",
    "DEFAULT_TIMEOUT",
    "Action",
    "Failure",
    "PowerResult",
    "PowerState",
    "Progress",
    "Protocol",
    "control",
    "control_many",
]
