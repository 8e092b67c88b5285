"""``/metrics`` in the Prometheus text format, read from the live node at scrape time.

Nothing here runs per message: the hot paths only bump ``node.metrics`` (a Counter) as they
did, and everything else (users online, mailbox depths, group-commit batches, supervisor
restarts) is read when Prometheus scrapes. Each node has its own ``CollectorRegistry``
(several nodes share one process in tests), holding one ``NodeCollector``.

Every ``node.metrics`` key is exported, also those a feature adds later (the cluster's
``link_*``): as a counter ``actorchat_<key>_total``, or as a gauge ``actorchat_<key>`` when the
key is in ``node.metric_gauges`` (a level that goes up and down, like ``connections``).
The list is in docs/operations.md.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

import supervisors as sv

from ._http import HttpRequest, HttpResponse
from ._storage import BATCH_ROWS_BUCKETS, BATCH_SECONDS_BUCKETS

if TYPE_CHECKING:
    from ._node import Node

PREFIX = "actorchat_"
# The classic text format, which every Prometheus version reads (our names are all legacy-safe;
# newer prometheus_client versions label the same text "version=1.0.0").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# node.metrics keys bumped by the node itself, with what they count. Exported from the first
# scrape on (as 0 until they move), so alerts and dashboards need not wait for traffic.
COUNTERS: dict[str, str] = {
    "received": "Send frames a recipient's mailbox took (new and retried ids).",
    "accepted": "Message ids a sender was told are accepted (a retried id counts again).",
    "delivered": "Messages written towards a recipient's connection (again after a reconnect).",
    "stored": "Messages committed to the database (offline recipient, no ack in time, spill).",
    "drained": "Stored messages deleted after their recipient acknowledged them.",
    "loaded": "Stored messages paged back from the database into a mailbox.",
    "refused_store_backlog": "Messages refused (unavailable) because the store was behind.",
    "errors": "Error frames answered to bad client input.",
    "stalled_closed": "Connections closed because their socket stopped taking frames.",
}
GAUGES: dict[str, str] = {
    "connections": "Open WebSocket connections (logged in or not).",
}

# Upper bounds of the depth histograms: messages held by one mailbox, queued for one actor.
DEPTH_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(key: str) -> str:
    """Pure: a ``node.metrics`` key as a Prometheus name (``actorchat_`` + [a-zA-Z0-9_])."""
    name = _NOT_NAME.sub("_", key).strip("_") or "unnamed"
    return PREFIX + name


def histogram_buckets(
    values: Iterable[float], bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float]:
    """Pure: Prometheus cumulative buckets (``le`` bounds, then ``+Inf``) and the sum."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for value, n in Counter(values).items():  # depths repeat (most are 0): bisect each once
        total += value * n
        counts[bisect.bisect_left(bounds, value)] += n
    return cumulate(counts, bounds), total


def cumulate(counts: Sequence[int], bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Pure: per-bucket counts (the last past every bound) as cumulative Prometheus buckets."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        out.append((floatToGoString(bound), running))
    out.append(("+Inf", running + counts[len(bounds)]))
    return out


def supervisor_stats(
    stats: Iterable[sv.SupervisorStats],
) -> tuple[dict[str, tuple[int, int]], dict[str, list[int]]]:
    """Pure: per supervisor path (``users``, ``connections``; the root is ``root``), its
    restarts and children, and the mailbox depths of its children. Children of a
    simple_one_for_one supervisor share their template's id, so same paths add up."""
    sups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    depths: dict[str, list[int]] = defaultdict(list)
    for s in stats:
        path = "/".join(s.path[1:]) or "root"
        entry = sups[path]
        entry[0] += s.restarts
        entry[1] += s.children
        depths[path].extend(s.mailbox_depths)
    return {k: (v[0], v[1]) for k, v in sups.items()}, dict(depths)


class NodeCollector:
    """Reads one node when scraped (a prometheus_client custom collector)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def describe(self) -> list[Metric]:
        return []  # no checks of name clashes at registration: this registry is ours alone

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = InfoMetricFamily(PREFIX + "node", "This node.", labels=["node"])
        info.add_metric([node.settings.node_name], {"version": _version()})
        yield info
        yield from self._node_metrics()
        registry = node.registry
        yield GaugeMetricFamily(
            PREFIX + "users_online",
            "Users with a logged-in connection on this node.",
            value=len(registry.connections),
        )
        yield GaugeMetricFamily(
            PREFIX + "mailboxes",
            "User mailbox actors running on this node (connected users and users with mail).",
            value=len(registry.mailboxes),
        )
        yield from self._mailbox_depths()
        yield from self._store()
        yield from self._supervisors()

    def _node_metrics(self) -> Iterator[Metric]:
        counts = dict(self.node.metrics)
        gauges = self.node.metric_gauges
        for key in COUNTERS.keys() | GAUGES.keys():
            counts.setdefault(key, 0)
        for key in sorted(counts):
            value = counts[key]
            if key in gauges:
                doc = GAUGES.get(key, f"node.metrics[{key!r}]: a level.")
                yield GaugeMetricFamily(metric_name(key), doc, value=value)
            else:
                doc = COUNTERS.get(key, f"node.metrics[{key!r}].")
                yield CounterMetricFamily(metric_name(key), doc, value=max(value, 0))

    def _mailbox_depths(self) -> Iterator[Metric]:
        depths = [len(q.items) + len(q.spilling) for q in self.node.registry.queues.values()]
        buckets, total = histogram_buckets(depths, DEPTH_BUCKETS)
        family = HistogramMetricFamily(
            PREFIX + "mailbox_depth",
            "Messages each live mailbox holds in memory (waiting, in flight or spilling), "
            "at scrape time.",
        )
        family.add_metric([], buckets, total)
        yield family
        yield GaugeMetricFamily(
            PREFIX + "mailbox_depth_max",
            "Messages the fullest live mailbox holds in memory, at scrape time.",
            value=max(depths, default=0),
        )

    def _store(self) -> Iterator[Metric]:
        front = self.node.front
        yield GaugeMetricFamily(
            PREFIX + "store_up",
            "1 while the store front's last hop to the database succeeded.",
            value=0 if self.node.store_down() else 1,
        )
        stats = front.stats if front is not None else None
        rows = HistogramMetricFamily(
            PREFIX + "store_batch_rows",
            "Rows per committed group-commit batch (mail, deletes, dedupe rows).",
        )
        seconds = HistogramMetricFamily(
            PREFIX + "store_batch_seconds",
            "Seconds per committed batch: the hop to the store thread and the transaction.",
        )
        failures = CounterMetricFamily(
            PREFIX + "store_failures", "Hops to the database that failed.", value=0
        )
        if stats is not None:
            rows.add_metric([], cumulate(stats.rows_buckets, BATCH_ROWS_BUCKETS), stats.rows)
            seconds.add_metric(
                [], cumulate(stats.seconds_buckets, BATCH_SECONDS_BUCKETS), stats.seconds
            )
            failures = CounterMetricFamily(
                PREFIX + "store_failures",
                "Hops to the database that failed.",
                value=stats.failures,
            )
        yield rows
        yield seconds
        yield failures

    def _supervisors(self) -> Iterator[Metric]:
        sup = self.node.sup
        if sup is None:
            return
        per_sup, depths = supervisor_stats(sup.supervisor_stats())
        restarts = CounterMetricFamily(
            PREFIX + "supervisor_restarts",
            "Child restarts a supervisor performed (since that supervisor started).",
            labels=["supervisor"],
        )
        children = GaugeMetricFamily(
            PREFIX + "supervisor_children",
            "Children a supervisor holds.",
            labels=["supervisor"],
        )
        for path, (count, kids) in sorted(per_sup.items()):
            restarts.add_metric([path], count)
            children.add_metric([path], kids)
        yield restarts
        yield children
        actor_depths = HistogramMetricFamily(
            PREFIX + "actor_mailbox_depth",
            "Messages queued in each actor's mailbox, by supervisor, at scrape time.",
            labels=["supervisor"],
        )
        deepest = GaugeMetricFamily(
            PREFIX + "actor_mailbox_depth_max",
            "Messages queued in the fullest actor mailbox, by supervisor, at scrape time.",
            labels=["supervisor"],
        )
        for path, values in sorted(depths.items()):
            buckets, total = histogram_buckets(values, DEPTH_BUCKETS)
            actor_depths.add_metric([path], buckets, total)
            deepest.add_metric([path], max(values, default=0))
        yield actor_depths
        yield deepest


@functools.cache
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("actorchat")
    except Exception:
        return "unknown"


def install_metrics(node: Node) -> CollectorRegistry:
    """Give the node its registry and serve it at ``/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))  # type: ignore[arg-type]

    async def metrics(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, generate_latest(registry), CONTENT_TYPE)

    node.add_route("/metrics", metrics)
    return registry

