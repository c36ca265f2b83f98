"""Per-pool bookkeeping written on the hot path and read at scrape time.

Everything here is plain Python state behind one uncontended lock: a checkout or checkin
costs a lock round-trip, a ``bisect`` and a few integer additions. Exporters (the
Prometheus collector, OpenTelemetry observers, the multiprocess writer) read snapshots of
it when they are asked, so the application never pays for exposition.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from poolwatch import metric_names as m
from poolwatch.metric_names import DURATION_BUCKETS


class Histogram:
    """A fixed-bucket histogram: per-bucket counts (not cumulative), sum and count.

    Not thread-safe on its own: :class:`PoolStats` calls it under its lock.
    """

    __slots__ = ("bounds", "counts", "exemplars", "first", "sum")

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        # Most observations land in the first bucket (sub-100-us checkouts): the hot path
        # compares against it before paying for a bisect call.
        self.first = self.bounds[0]
        self.counts: list[int] = [0] * (len(self.bounds) + 1)  # last one is +Inf
        self.sum = 0.0
        # Latest exemplar per bucket: (labels, value, unix timestamp) or None.
        self.exemplars: list[tuple[dict[str, str], float, float] | None] = [None] * len(self.counts)

    def observe(self, value: float) -> int:
        """Add one observation; returns the index of the bucket it landed in."""
        index = 0 if value <= self.first else bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.sum += value
        return index

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count), ...]`` ending with ``("+Inf", count)``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else _fmt(bound), running))
        return out

    def copy(self) -> Histogram:
        """A snapshot (taken under the owner's lock)."""
        other = Histogram.__new__(Histogram)
        other.bounds = self.bounds
        other.first = self.first
        other.counts = list(self.counts)
        other.sum = self.sum
        other.exemplars = list(self.exemplars)
        return other


def _fmt(bound: float) -> str:
    return repr(float(bound))


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
            )

    def count_invalidation(self, reason: str) -> None:
        """One more invalidation for ``reason``."""
        with self.lock:
            self.invalidations[reason] = self.invalidations.get(reason, 0) + 1
