"""Per-pool bookkeeping written on the hot path and read at scrape time.

Everything here is plain Python state behind one uncontended lock: a checkout or checkin
costs a lock round-trip, a ``bisect`` and a few integer additions. Exporters (the
Prometheus collector, OpenTelemetry observers, the multiprocess writer) read snapshots of
it when they are asked, so the application never pays for exposition.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from poolwatch import metric_names as m
from poolwatch.instrumentation.histogram import Histogram as Histogram  # re-exported
from poolwatch.instrumentation.routes import RouteSnapshot, RouteTable


@dataclass
class StatsSnapshot:
    """A consistent copy of one pool's counters and histograms."""

    checkouts: int
    checkins: int
    timeouts: int
    connect_errors: int
    leaks: int
    waiting: int
    invalidations: dict[str, int]
    checkout_duration: Histogram
    hold_duration: Histogram
    connect_duration: Histogram
    oldest_checkout_age: float
    # Per-route series (with RouteMiddleware; empty without it).
    routes: tuple[RouteSnapshot, ...] = ()


# Which StatsSnapshot attribute each counter and histogram is exported from (the scrape-time
# collector and the multiprocess writer both read these).
COUNTER_FIELDS: tuple[tuple[m.MetricSpec, str], ...] = (
    (m.POOL_CHECKOUTS, "checkouts"),
    (m.POOL_CHECKINS, "checkins"),
    (m.POOL_TIMEOUTS, "timeouts"),
    (m.POOL_CONNECT_ERRORS, "connect_errors"),
    (m.POOL_LEAKS, "leaks"),
)
HISTOGRAM_FIELDS: tuple[tuple[m.MetricSpec, str], ...] = (
    (m.POOL_CHECKOUT_DURATION, "checkout_duration"),
    (m.POOL_HOLD_DURATION, "hold_duration"),
    (m.POOL_CONNECT_DURATION, "connect_duration"),
)
# Which RouteSnapshot attribute each per-route histogram is exported from.
ROUTE_HISTOGRAM_FIELDS: tuple[tuple[m.MetricSpec, str], ...] = (
    (m.POOL_ROUTE_CHECKOUT_DURATION, "checkout_duration"),
    (m.POOL_ROUTE_HOLD_DURATION, "hold_duration"),
)


@dataclass(slots=True)
class PoolStats:
    """Counters, histograms and the live checkout table of one instrumented pool.

    Writers hold ``lock`` when the pool is used from several threads (a sync ``QueuePool``);
    an asyncio pool lives on one event-loop thread and is updated without it.
    """

    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    # instrument(through_pgbouncer=...): configuration, exported as a 1/0 gauge.
    through_pgbouncer: bool = False
    # Checkouts and checkins are not counted separately on the hot path: every checkout
    # attempt lands in checkout_duration (successful ones = count - failed_checkouts) and
    # every checkin in hold_duration.
    failed_checkouts: int = 0
    timeouts: int = 0
    connect_errors: int = 0
    leaks: int = 0
    waiting: int = 0
    invalidations: dict[str, int] = field(default_factory=dict)
    checkout_duration: Histogram = field(default_factory=Histogram)
    hold_duration: Histogram = field(default_factory=Histogram)
    connect_duration: Histogram = field(default_factory=Histogram)
    # ConnectionPoolEntry -> time.perf_counter() when it was handed out, for every
    # connection lent out now.
    active: dict[Any, float] = field(default_factory=dict)
    # With leak detection, the ones already reported as leaks. (Who holds each connection
    # is kept on its record: tracker.site_of.)
    leaked: set[Any] = field(default_factory=set)
    # With RouteMiddleware: checkout-wait and hold histograms by route (routes.py).
    routes: RouteTable = field(default_factory=RouteTable)

    def successful_checkouts(self) -> int:
        """Checkouts that got a connection (call with ``lock`` held)."""
        return sum(self.checkout_duration.counts) - self.failed_checkouts

    def snapshot(self, now: float) -> StatsSnapshot:
        """Copy everything (``now`` is a ``time.perf_counter()`` value).

        Asyncio pools update these fields without the lock (one thread); the copies below
        are single C-level operations, so a scrape from another thread never sees a
        container mid-resize.
        """
        with self.lock:
            oldest = min(list(self.active.values()), default=None)
            checkouts = self.successful_checkouts()
            checkout_duration = self.checkout_duration.copy()
            hold_duration = self.hold_duration.copy()
            return StatsSnapshot(
                checkouts=checkouts,
                checkins=sum(hold_duration.counts),
                timeouts=self.timeouts,
                connect_errors=self.connect_errors,
                leaks=self.leaks,
                waiting=self.waiting,
                invalidations=dict(self.invalidations),
                checkout_duration=checkout_duration,
                hold_duration=hold_duration,
                connect_duration=self.connect_duration.copy(),
                oldest_checkout_age=0.0 if oldest is None else max(0.0, now - oldest),
                routes=self.routes.snapshot(list(self.active)),
            )

    def fresh(self) -> PoolStats:
        """Zeroed stats with this pool's configuration (name, through_pgbouncer, route
        limit), for a forked child."""
        return PoolStats(
            self.name,
            through_pgbouncer=self.through_pgbouncer,
            routes=RouteTable(self.routes.limit),
        )

    def count_invalidation(self, reason: str) -> None:
        """One more invalidation for ``reason``."""
        with self.lock:
            self.invalidations[reason] = self.invalidations.get(reason, 0) + 1
