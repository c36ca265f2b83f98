"""This process's prometheus_client metrics for multiprocess mode, and the delta writes.

One prometheus_client metric per :mod:`poolwatch.metric_names` spec, created once per
process (their values live in the mmap files of ``PROMETHEUS_MULTIPROC_DIR``). The
:class:`~poolwatch.instrumentation.multiprocess.MultiprocessWriter` of each pool adds what
changed since its previous flush; :class:`RouteSeries` does the same for the pool's
per-route series (with :class:`poolwatch.RouteMiddleware`).
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from poolwatch import metric_names as m
from poolwatch.instrumentation.histogram import Histogram as StatsHistogram
from poolwatch.instrumentation.routes import RouteSnapshot
from poolwatch.instrumentation.stats import ROUTE_HISTOGRAM_FIELDS

# How each gauge aggregates across processes (see multiprocess.py's docstring).
GAUGE_MODES: dict[str, str] = {
    m.POOL_SIZE.name: "livesum",
    m.POOL_MAX_OVERFLOW.name: "livesum",
    m.POOL_CHECKED_OUT.name: "livesum",
    m.POOL_IDLE.name: "livesum",
    m.POOL_OVERFLOW.name: "livesum",
    m.POOL_WAITING.name: "livesum",
    m.POOL_TIMEOUT_SECONDS.name: "livemax",
    m.POOL_OLDEST_CHECKOUT_SECONDS.name: "livemax",
    m.POOL_WORKER_MAX_UTILIZATION.name: "livemax",
    m.POOL_WORKER_MAX_CHECKED_OUT.name: "livemax",
    m.POOL_WORKER_MAX_WAITING.name: "livemax",
    m.POOL_THROUGH_PGBOUNCER.name: "livemax",
    m.POOL_ROUTE_CHECKED_OUT.name: "livesum",
}


def _metric(spec: m.MetricSpec) -> Any:
    labels = list(spec.labels)
    if spec.type == "gauge":
        mode: Any = GAUGE_MODES[spec.name]
        return Gauge(spec.name, spec.help, labels, registry=None, multiprocess_mode=mode)
    if spec.type == "counter":
        return Counter(spec.name, spec.help, labels, registry=None)
    return Histogram(spec.name, spec.help, labels, registry=None, buckets=m.DURATION_BUCKETS)


class Metrics:
    """This process's prometheus_client metrics (mmap-backed), created once.

    ``gauges`` / ``counters`` / ``histograms`` hold the per-pool ones (labels: pool) by name,
    ``invalidations`` the one with a ``reason`` label, ``routes`` the per-route ones.
    """

    def __init__(self) -> None:
        self.gauges: dict[str, Gauge] = {}
        self.counters: dict[str, Counter] = {}
        self.histograms: dict[str, Histogram] = {}
        by_type: dict[str, dict[str, Any]] = {
            "gauge": self.gauges,
            "counter": self.counters,
            "histogram": self.histograms,
        }
        for spec in m.INSTRUMENTATION_METRICS:
            by_type[spec.type][spec.name] = _metric(spec)
        self.invalidations: Counter = self.counters.pop(m.POOL_INVALIDATIONS.name)
        self.routes: dict[str, Any] = {spec.name: _metric(spec) for spec in m.ROUTE_METRICS}


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def get_metrics() -> Metrics:
    """The process's :class:`Metrics`, created on first use."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics


def add_histogram(child: Any, now: StatsHistogram, before: StatsHistogram | None) -> None:
    """Add the observations made since ``before`` to a prometheus_client histogram child."""
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    for i, count in enumerate(now.counts):
        delta = count - (before.counts[i] if before is not None else 0)
        if delta <= 0:
            continue
        if buckets is not None and len(buckets) == len(now.counts):
            buckets[i].inc(delta)
        else:  # pragma: no cover - prometheus_client changed its internals
            bound = now.bounds[i] if i < len(now.bounds) else now.bounds[-1] * 2
            for _ in range(delta):
                child.observe(bound)
    sum_delta = now.sum - (before.sum if before is not None else 0.0)
    if sum_delta and total is not None:
        total.inc(sum_delta)


class RouteSeries:
    """One pool's per-route series in the multiprocess files: histogram deltas since the
    previous write, and the connections each route holds now (a ``livesum`` gauge).

    A route's series appear with its first checkout (routes are not known in advance).
    Not thread-safe: the pool's MultiprocessWriter calls it under its own lock.
    """

    def __init__(self, metrics: Metrics, pool: str) -> None:
        self._metrics = metrics
        self._pool = pool
        self._last: dict[str, RouteSnapshot] = {}
        self._gauges: dict[str, int] = {}

    def write(self, routes: tuple[RouteSnapshot, ...]) -> None:
        """Write what changed in ``routes`` (a StatsSnapshot's) since the previous call."""
        held = self._metrics.routes[m.POOL_ROUTE_CHECKED_OUT.name]
        for route in routes:
            before = self._last.get(route.route)
            for spec, attr in ROUTE_HISTOGRAM_FIELDS:
                child = self._metrics.routes[spec.name].labels(self._pool, route.route)
                add_histogram(child, getattr(route, attr), getattr(before, attr, None))
            if self._gauges.get(route.route) != route.checked_out:
                held.labels(self._pool, route.route).set(route.checked_out)
                self._gauges[route.route] = route.checked_out
            self._last[route.route] = route

    def zero_gauges(self) -> None:
        """This process holds nothing any more (the pool is closed)."""
        held = self._metrics.routes[m.POOL_ROUTE_CHECKED_OUT.name]
        for route in self._gauges:
            held.labels(self._pool, route).set(0)
        self._gauges.clear()

    def forget_gauges(self) -> None:
        """Write every gauge again next time (after a failed write)."""
        self._gauges.clear()

    def reset(self) -> None:
        """Forget what was written: a forked child writes its own files from zero."""
        self._last.clear()
        self._gauges.clear()
