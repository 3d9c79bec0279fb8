"""Prometheus metrics of one node, in a registry that belongs to that node's app.

Node gauges (role, term, commit and applied index, replication lag per follower) are read
from the node's status at scrape time by a collector, so they are never stale and cost
nothing between scrapes. Request latency is labelled by route pattern
(`/api/talents/{id}`), never by raw path, so label cardinality stays bounded. The WAL fsync
histogram is fed by the runtime through `observe_wal_fsync`. Snapshot counters
(`mox_snapshots_taken_total`, `mox_snapshots_installed_total`) and the storage-fault flag
(`mox_node_storage_fault`) are read from the runtime's stats at scrape time too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mox.api.status import ROLES, NodeStatusView

# Label combinations of the request histogram whose children are kept (observe_request).
REQUEST_CHILDREN_MAX: Final = 1024
REQUEST_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
FSYNC_BUCKETS_S: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
)


@attrs.frozen
class RuntimeCounters:
    """What the metrics read of the node runtime beyond its status (its `stats`)."""

    snapshots_taken: int
    snapshots_installed: int
    storage_fault: bool


class _RuntimeCollector(Collector):
    def __init__(self, counters: Callable[[], RuntimeCounters]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = self._counters()
        yield CounterMetricFamily(
            "mox_snapshots_taken",
            "snapshots this node took of its own state (log compaction)",
            value=counters.snapshots_taken,
        )
        yield CounterMetricFamily(
            "mox_snapshots_installed",
            "snapshots this node installed from the leader",
            value=counters.snapshots_installed,
        )
        yield GaugeMetricFamily(
            "mox_node_storage_fault",
            "1 once the node stopped because data on its disk failed verification",
            value=1.0 if counters.storage_fault else 0.0,
        )


class _NodeCollector(Collector):
    def __init__(self, status: Callable[[], NodeStatusView]) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        view = self._status()
        role = GaugeMetricFamily("mox_node_role", "1 for the node's current role", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if view.role == name else 0.0)
        yield role
        yield GaugeMetricFamily("mox_node_term", "current Raft term", value=view.term)
        yield GaugeMetricFamily(
            "mox_node_commit_index", "highest committed log index", value=view.commit_index
        )
        yield GaugeMetricFamily(
            "mox_node_applied_index", "highest applied log index", value=view.applied_index
        )
        leader = -1 if view.leader_id is None else view.leader_id
        yield GaugeMetricFamily(
            "mox_node_leader_id", "the leader this node knows of (-1: none)", value=leader
        )
        lag = GaugeMetricFamily(
            "mox_replication_lag_entries",
            "entries the leader has that a follower has not matched (leader only)",
            labels=["follower"],
        )
        for follower_id, lag_entries in view.replication_lag_entries.items():
            lag.add_metric([str(follower_id)], float(lag_entries))
        yield lag


class ApiMetrics:
    """The metrics of one node's API, registered in `registry`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        status: Callable[[], NodeStatusView],
        counters: Callable[[], RuntimeCounters] | None = None,
    ) -> None:
        self.registry = registry
        self.request_seconds = Histogram(
            "mox_http_request_duration_seconds",
            "HTTP request latency by method, route pattern and status",
            ["method", "route", "status"],
            registry=registry,
            buckets=REQUEST_BUCKETS_S,
        )
        self._request_children: dict[tuple[str, str, int], Histogram] = {}
        self.forwarded = Counter(
            "mox_http_forwarded_requests",
            "requests this node forwarded to the leader",
            registry=registry,
        )
        self.rate_limited = Counter(
            "mox_http_rate_limited_requests",
            "writes refused with 429 by limits.max_events_per_second",
            registry=registry,
        )
        self.connections_refused = Counter(
            "mox_http_connections_refused",
            "connections answered 503 and closed by api.max_connections",
            registry=registry,
        )
        self.wal_fsync_seconds = Histogram(
            "mox_wal_fsync_duration_seconds",
            "time of one durable WAL write (write + fdatasync)",
            registry=registry,
            buckets=FSYNC_BUCKETS_S,
        )
        registry.register(_NodeCollector(status))
        if counters is not None:
            registry.register(_RuntimeCollector(counters))

    def observe_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        # labels() takes a lock and builds the key each call: the children are kept here
        # (bounded: routes are patterns, statuses few; past the bound, the slow path).
        key = (method, route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self.request_seconds.labels(method, route, str(status))
            if len(self._request_children) < REQUEST_CHILDREN_MAX:
                self._request_children[key] = child
        child.observe(duration_s)

    def observe_wal_fsync(self, duration_s: float) -> None:
        """The hook the node runtime calls after each WAL sync."""
        assert duration_s >= 0, duration_s
        self.wal_fsync_seconds.observe(duration_s)
