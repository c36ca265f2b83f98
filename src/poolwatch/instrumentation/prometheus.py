"""Prometheus exposition of instrumented pools: one custom collector per registry.

Gauges that mirror pool state are read from the pool at scrape time, so they are always
true (``sqlalchemy_pool_checked_out`` *is* ``pool.checkedout()``) and cost nothing on the
hot path. Counters and histograms come from :class:`~poolwatch.instrumentation.stats.PoolStats`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar
from sqlalchemy.pool import QueuePool

from poolwatch import metric_names as m
from poolwatch.instrumentation.hooks import waiting_callers
from poolwatch.instrumentation.stats import (
    COUNTER_FIELDS,
    HISTOGRAM_FIELDS,
    ROUTE_HISTOGRAM_FIELDS,
    Histogram,
    StatsSnapshot,
)
from poolwatch.instrumentation.tracker import PoolTracker


def pool_gauges(tracker: PoolTracker) -> dict[str, float]:
    """Live pool-state gauges by metric name; only those that apply to this pool class.

    The ``worker_max`` companions carry this process's own values; multiprocess mode
    aggregates them with ``livemax`` (the busiest worker) where the others are summed.
    """
    pool = tracker.pool
    values: dict[str, float] = {}
    if isinstance(pool, QueuePool):
        size = pool.size()
        max_overflow: int = pool._max_overflow
        if size > 0:
            values[m.POOL_SIZE.name] = size
        if max_overflow >= 0 and size > 0:
            values[m.POOL_MAX_OVERFLOW.name] = max_overflow
        checked_out = pool.checkedout()
        waiting = waiting_callers(tracker)
        values[m.POOL_TIMEOUT_SECONDS.name] = pool.timeout()
        values[m.POOL_CHECKED_OUT.name] = checked_out
        values[m.POOL_IDLE.name] = pool.checkedin()
        values[m.POOL_OVERFLOW.name] = max(0, pool.overflow())
        values[m.POOL_WAITING.name] = waiting
        values[m.POOL_WORKER_MAX_CHECKED_OUT.name] = checked_out
        values[m.POOL_WORKER_MAX_WAITING.name] = waiting
        if size > 0 and max_overflow >= 0:
            values[m.POOL_WORKER_MAX_UTILIZATION.name] = checked_out / (size + max_overflow)
    else:
        with tracker.stats.lock:
            checked_out = len(tracker.stats.active)
        values[m.POOL_CHECKED_OUT.name] = checked_out
        values[m.POOL_WORKER_MAX_CHECKED_OUT.name] = checked_out
    values[m.POOL_THROUGH_PGBOUNCER.name] = 1.0 if tracker.stats.through_pgbouncer else 0.0
    return values


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    buckets: list[Any] = []
    for (le, count), exemplar in zip(hist.cumulative(), hist.exemplars, strict=True):
        if exemplar is None:
            buckets.append((le, count))
        else:
            buckets.append((le, count, Exemplar(exemplar[0], exemplar[1], exemplar[2])))
    family.add_metric(labels, buckets, hist.sum)


class PoolCollector:
    """Yields the ``sqlalchemy_pool_*`` families for every tracker registered with it."""

    def __init__(self) -> None:
        self._trackers: dict[int, PoolTracker] = {}
        self._lock = threading.Lock()

    def add(self, tracker: PoolTracker) -> None:
        """Start exporting ``tracker``'s pool."""
        with self._lock:
            self._trackers[id(tracker)] = tracker

    def remove(self, tracker: PoolTracker) -> None:
        """Stop exporting ``tracker``'s pool: its series disappear from the next scrape."""
        with self._lock:
            self._trackers.pop(id(tracker), None)

    def names_in_use(self) -> set[str]:
        """``pool`` label values already exported through this collector."""
        with self._lock:
            return {t.name for t in self._trackers.values()}

    def __len__(self) -> int:
        return len(self._trackers)

    def describe(self) -> Iterable[Metric]:
        """Metric families this collector owns (so registries can detect clashes)."""
        for spec in (*m.INSTRUMENTATION_METRICS, *m.ROUTE_METRICS):
            yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        """One family per metric, one sample set per live pool."""
        with self._lock:
            trackers = [t for t in self._trackers.values() if t.engine is not None]
        families: dict[str, Any] = {
            spec.name: _family(spec) for spec in (*m.INSTRUMENTATION_METRICS, *m.ROUTE_METRICS)
        }
        now = perf_counter()
        for tracker in trackers:
            try:
                tracker.scan_for_leaks(now)
                snap = tracker.stats.snapshot(now)
                gauges = pool_gauges(tracker)
            except Exception:
                tracker.internal_error()
                continue
            labels = [tracker.name]
            for name, value in gauges.items():
                families[name].add_metric(labels, value)
            _add_stats(families, labels, snap)
        yield from families.values()


def _family(spec: m.MetricSpec) -> Metric:
    name = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
    labels = list(spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(name, spec.help, labels=labels)
    if spec.type == "histogram":
        return HistogramMetricFamily(name, spec.help, labels=labels)
    return GaugeMetricFamily(name, spec.help, labels=labels)


def _add_stats(families: dict[str, Any], labels: list[str], snap: StatsSnapshot) -> None:
    families[m.POOL_OLDEST_CHECKOUT_SECONDS.name].add_metric(labels, snap.oldest_checkout_age)
    for spec, attr in COUNTER_FIELDS:
        families[spec.name].add_metric(labels, getattr(snap, attr))
    invalidations = families[m.POOL_INVALIDATIONS.name]
    for reason in m.INVALIDATION_REASONS:
        invalidations.add_metric([*labels, reason], snap.invalidations.get(reason, 0))
    for spec, attr in HISTOGRAM_FIELDS:
        _histogram(families[spec.name], labels, getattr(snap, attr))
    for route in snap.routes:  # with RouteMiddleware only
        route_labels = [*labels, route.route]
        families[m.POOL_ROUTE_CHECKED_OUT.name].add_metric(route_labels, route.checked_out)
        for spec, attr in ROUTE_HISTOGRAM_FIELDS:
            _histogram(families[spec.name], route_labels, getattr(route, attr))


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def collector_for(registry: CollectorRegistry) -> PoolCollector:
    """The registry's poolwatch collector, registering it on first use."""
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = PoolCollector()
            registry.register(collector)
            _collectors[registry] = collector
        return collector


def release_collector(registry: CollectorRegistry, collector: PoolCollector) -> None:
    """Unregister the collector once it exports no pool."""
    with _collectors_lock:
        if len(collector) == 0 and _collectors.get(registry) is collector:
            del _collectors[registry]
            registry.unregister(collector)
