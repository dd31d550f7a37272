"""``/metrics``: Prometheus text, read at scrape time from the services' own counters (nothing is
counted twice): DHCP, TFTP and DNS events, HTTP requests and bytes, leases by state, free pool
addresses, how many machines are at each boot stage, the timeline's limits, and the registry
(up, images by push state, blobs by result)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .. import __version__
from ..machines.stages import STAGES
from ..machines.timeline import LIMITS
from ..registry.service import absent_status
from .context import CONTEXT, HTTPContext
from .nodes import NOT_SEEN

__all__ = ["metrics"]

PREFIX = "bootstrapperd"


class _Collector(Collector):
    def __init__(self, context: HTTPContext) -> None:
        self.context = context

    def collect(self) -> Iterator[Metric]:
        context = self.context
        model = context.holder.model
        info = GaugeMetricFamily(f"{PREFIX}_info", "Version of the daemon", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_uptime_seconds",
            "Seconds since start",
            value=time.monotonic() - context.started_at,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_model_generation",
            "Loads of the cluster description (1 at start)",
            value=context.holder.generation,
        )
        for service, read in context.service_counters.items():
            family = CounterMetricFamily(
                f"{PREFIX}_{service}_events", f"{service.upper()} events by kind", labels=["event"]
            )
            for event, count in sorted(read().items()):
                family.add_metric([event], count)
            yield family
        requests = CounterMetricFamily(
            f"{PREFIX}_http_requests", "HTTP requests by route and status", labels=["route", "code"]
        )
        for (route, code), count in sorted(context.counters.items()):
            requests.add_metric([route, code], count)
        yield requests
        sent = CounterMetricFamily(
            f"{PREFIX}_http_sent_bytes", "HTTP response body bytes by route", labels=["route"]
        )
        for route, count in sorted(context.sent_bytes.items()):
            sent.add_metric([route], count)
        yield sent

        now = time.time()
        states: Counter[str] = Counter()
        in_pool = 0
        for lease in context.leases.all():
            if lease.holds(now):
                states[str(lease.state)] += 1
                if lease.ip in model.pool and lease.ip not in model.reserved_addresses:
                    in_pool += 1
        leases = GaugeMetricFamily(
            f"{PREFIX}_dhcp_leases", "Addresses taken now, by lease state", labels=["state"]
        )
        for state in ("offered", "bound", "declined"):
            leases.add_metric([state], states[state])
        yield leases
        yield GaugeMetricFamily(
            f"{PREFIX}_dhcp_pool_free",
            "Pool addresses free to offer",
            value=max(0, model.pool_free_size - in_pool),
        )
        stages = dict.fromkeys((NOT_SEEN, *STAGES), 0)
        seen = set()
        for mac in (*(n.mac for n in model.nodes), *context.timeline.machines()):
            if mac in seen or not mac:
                continue
            seen.add(mac)
            progress = context.timeline.progress(mac)
            stages[progress.name or NOT_SEEN] += 1
        nodes = GaugeMetricFamily(
            f"{PREFIX}_nodes", "Machines at each boot stage", labels=["stage"]
        )
        for stage, count in stages.items():
            nodes.add_metric([stage], count)
        yield nodes
        if context.lifecycle is not None:
            by_state = GaugeMetricFamily(
                f"{PREFIX}_machines", "Machines in each provisioning state", labels=["state"]
            )
            for name, count in sorted(context.lifecycle.counts(tuple(seen)).items()):
                by_state.add_metric([name], count)
            yield by_state
        failed = sum(1 for mac in seen if context.timeline.progress(mac).failed)
        yield GaugeMetricFamily(
            f"{PREFIX}_nodes_failed", "Machines whose latest event is a failure", value=failed
        )
        yield from _timeline(context)
        yield from _registry(context)


def _timeline(context: HTTPContext) -> Iterator[Metric]:
    """The timeline's bounds: machines kept, and each limit's hits."""
    timeline = context.timeline
    yield GaugeMetricFamily(
        f"{PREFIX}_timeline_machines",
        "Machines with a boot timeline kept in memory",
        value=len(timeline.machines()),
    )
    limited = CounterMetricFamily(
        f"{PREFIX}_timeline_limited",
        "Timeline limits hit: machines evicted, stored rows skipped, details cut, events for a"
        " malformed MAC refused, prunes of the database",
        labels=["limit"],
    )
    for limit in LIMITS:
        limited.add_metric([limit], timeline.counters[limit])
    yield limited


def _registry(context: HTTPContext) -> Iterator[Metric]:
    registry = context.registry
    status = registry.status() if registry is not None else absent_status()
    yield GaugeMetricFamily(
        f"{PREFIX}_registry_up",
        "1 while the registry answers its API over verified TLS",
        value=1 if status["up"] else 0,
    )
    images = GaugeMetricFamily(
        f"{PREFIX}_registry_images",
        "Images to push into the registry, by state (an archive not read yet counts as one)",
        labels=["state"],
    )
    for state, count in status["counts"].items():
        images.add_metric([state], count)
    yield images
    blobs = CounterMetricFamily(
        f"{PREFIX}_registry_blobs",
        "Blobs handled by pushes: uploaded, already present, or mounted from another repository",
        labels=["result"],
    )
    for result, count in status["blobs"].items():
        blobs.add_metric([result], count)
    yield blobs


async def metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(request.app[CONTEXT]))
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
