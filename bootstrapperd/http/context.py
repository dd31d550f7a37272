"""What the HTTP views read: one record, set up by the daemon (or a test) and kept in the app."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from ..bsroot.layout import Bsroot
from ..bsroot.pki import ClusterPKI
from ..machines.leases import LeaseStore
from ..machines.lifecycle import Lifecycle
from ..machines.resolver import Resolver
from ..machines.timeline import Timeline
from ..machines.tokens import TokenStore
from ..model.holder import ModelHolder
from ..registry import RegistryService
from ..render import Renderer

__all__ = ["ADMIN", "CONTEXT", "EVENT", "HTTPContext"]


@dataclass
class HTTPContext:
    holder: ModelHolder
    bsroot: Bsroot
    renderer: Renderer
    pki: ClusterPKI
    leases: LeaseStore
    resolver: Resolver
    timeline: Timeline
    tokens: TokenStore
    # Other services' counters for /metrics: name ("dhcp", "tftp", "dns") → current counts.
    service_counters: Mapping[str, Callable[[], Mapping[str, int]]] = field(default_factory=dict)
    registry: RegistryService | None = None  # None: no registry service (tests, tools)
    lifecycle: Lifecycle | None = None  # None: every boot installs (tests, tools)
    counters: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, status) → n
    sent_bytes: Counter[str] = field(default_factory=Counter)  # route → bytes
    started_at: float = field(default_factory=time.monotonic)


CONTEXT = web.AppKey("context", HTTPContext)
# True in the application served on the admin socket (http/admin.py), absent elsewhere.
ADMIN = web.AppKey("admin", bool)
# The timeline event a view asks for: (EventKind, MAC or None for "the client's", detail).
EVENT = web.RequestKey("event", tuple)
