"""OpenTelemetry metrics for instrumented pools, under the semantic-convention names.

Imported only when ``poolwatch.instrument(engine, meter_provider=...)`` is called, so
applications without OpenTelemetry never import it. Names follow the OpenTelemetry
semantic conventions for database client connection pools (semconv 1.44.0, "development"
stability; see docs/opentelemetry.md):

* pool state is read at collection time by observable instruments, like OpenTelemetry's
  Java HikariCP instrumentation: ``db.client.connection.count`` (``state`` = idle|used),
  ``.idle.max``, ``.idle.min``, ``.max``, ``.pending_requests`` and the ``.timeouts``
  counter cost nothing on the hot path;
* the three duration histograms (``.create_time``, ``.wait_time``, ``.use_time``) need one
  value per event. A synchronous SDK ``record()`` costs more than the rest of a checkout's
  bookkeeping together, so a checkout only appends ``(kind, seconds, context)`` to a
  per-pool buffer; the buffer is replayed into
  the SDK histograms at collection time (from an observable callback, which the SDK runs
  before it aggregates) and by the background flusher (every POOLWATCH_FLUSH_INTERVAL s, or
  sooner when 1024 observations are pending), off the request path. The captured context
  keeps trace exemplars on ``wait_time`` working.

Two extras outside the conventions, so OpenTelemetry users see what Prometheus users see:
``poolwatch.pool.leaks`` and ``poolwatch.pool.invalidations`` (attribute
``poolwatch.invalidation.reason``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from time import perf_counter
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from sqlalchemy.pool import QueuePool

from poolwatch._version import __version__
from poolwatch.instrumentation import forking
from poolwatch.instrumentation.flusher import flusher
from poolwatch.instrumentation.hooks import waiting_callers
from poolwatch.instrumentation.tracker import PoolTracker
from poolwatch.metric_names import DURATION_BUCKETS

logger = logging.getLogger("poolwatch")

SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
REASON = "poolwatch.invalidation.reason"

COUNT = "db.client.connection.count"
IDLE_MAX = "db.client.connection.idle.max"
IDLE_MIN = "db.client.connection.idle.min"
MAX = "db.client.connection.max"
PENDING_REQUESTS = "db.client.connection.pending_requests"
TIMEOUTS = "db.client.connection.timeouts"
CREATE_TIME = "db.client.connection.create_time"
WAIT_TIME = "db.client.connection.wait_time"
USE_TIME = "db.client.connection.use_time"
LEAKS = "poolwatch.pool.leaks"
INVALIDATIONS = "poolwatch.pool.invalidations"

HIGH_WATER = 1024  # pending observations that trigger an early background flush
MAX_PENDING = 200_000  # beyond this the oldest pending observations are dropped

_KIND_TO_HISTOGRAM = {"checkout": WAIT_TIME, "hold": USE_TIME, "connect": CREATE_TIME}


class _Instruments:
    """The instruments of one MeterProvider, shared by every pool exported through it."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("poolwatch", __version__, schema_url=SCHEMA_URL)
        self._sinks: weakref.WeakSet[OtelSink] = weakref.WeakSet()
        self._lock = threading.Lock()
        conn, req = "{connection}", "{request}"
        meter.create_observable_up_down_counter(
            COUNT,
            [self._count],
            conn,
            "The number of connections that are currently in state described by the "
            "`state` attribute.",
        )
        meter.create_observable_up_down_counter(
            IDLE_MAX, [self._idle_max], conn, "The maximum number of idle open connections allowed."
        )
        meter.create_observable_up_down_counter(
            IDLE_MIN, [self._idle_min], conn, "The minimum number of idle open connections allowed."
        )
        meter.create_observable_up_down_counter(
            MAX, [self._max], conn, "The maximum number of open connections allowed."
        )
        meter.create_observable_up_down_counter(
            PENDING_REQUESTS,
            [self._pending],
            req,
            "The number of current pending requests for an open connection.",
        )
        meter.create_observable_counter(
            TIMEOUTS,
            [self._timeouts],
            "{timeout}",
            "The number of connection timeouts that have occurred trying to obtain a "
            "connection from the pool.",
        )
        meter.create_observable_counter(
            LEAKS,
            [self._leaks],
            "{connection}",
            "Checkouts held longer than poolwatch's leak threshold (each counted once).",
        )
        meter.create_observable_counter(
            INVALIDATIONS,
            [self._invalidations],
            "{connection}",
            "Connections invalidated, by reason (pre_ping, disconnect, soft, explicit, error).",
        )
        bounds = list(DURATION_BUCKETS)
        self.histograms: dict[str, Any] = {
            CREATE_TIME: meter.create_histogram(
                CREATE_TIME,
                "s",
                "The time it took to create a new connection.",
                explicit_bucket_boundaries_advisory=bounds,
            ),
            WAIT_TIME: meter.create_histogram(
                WAIT_TIME,
                "s",
                "The time it took to obtain an open connection from the pool.",
                explicit_bucket_boundaries_advisory=bounds,
            ),
            USE_TIME: meter.create_histogram(
                USE_TIME,
                "s",
                "The time between borrowing a connection and returning it to the pool.",
                explicit_bucket_boundaries_advisory=bounds,
            ),
        }

    def add(self, sink: OtelSink) -> None:
        """Report ``sink``'s pool from the next collection on."""
        with self._lock:
            self._sinks.add(sink)

    def discard(self, sink: OtelSink) -> None:
        """Stop reporting ``sink``'s pool."""
        with self._lock:
            self._sinks.discard(sink)

    def _live(self) -> list[OtelSink]:
        with self._lock:
            sinks = list(self._sinks)
        return [s for s in sinks if not s.closed and s.tracker.engine is not None]

    def _count(self, options: CallbackOptions) -> Iterable[Observation]:
        # The SDK runs every observable callback before it aggregates synchronous
        # instruments: replaying the buffered durations here puts them in this collection.
        sinks = self._live()
        for sink in sinks:
            sink.flush()
        out: list[Observation] = []
        for sink in sinks:
            pool = sink.tracker.pool
            if isinstance(pool, QueuePool):
                idle, used = pool.checkedin(), pool.checkedout()
            else:
                with sink.tracker.stats.lock:
                    idle, used = 0, len(sink.tracker.stats.active)
            out.append(Observation(idle, {**sink.attributes, STATE: "idle"}))
            out.append(Observation(used, {**sink.attributes, STATE: "used"}))
        return out

    def _queue_pools(self) -> Iterable[tuple[OtelSink, QueuePool]]:
        for sink in self._live():
            pool = sink.tracker.pool
            if isinstance(pool, QueuePool):
                yield sink, pool

    def _idle_max(self, options: CallbackOptions) -> Iterable[Observation]:
        # QueuePool keeps at most pool_size idle connections (overflow ones close on checkin).
        return [Observation(pool.size(), s.attributes) for s, pool in self._queue_pools()]

    def _idle_min(self, options: CallbackOptions) -> Iterable[Observation]:
        # SQLAlchemy never pre-opens connections: the minimum idle is 0.
        return [Observation(0, s.attributes) for s, _ in self._queue_pools()]

    def _max(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(pool.size() + pool._max_overflow, s.attributes)
            for s, pool in self._queue_pools()
            if pool._max_overflow >= 0  # -1 means unbounded: no maximum to report
        ]

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(waiting_callers(s.tracker), s.attributes) for s, _ in self._queue_pools()
        ]

    def _timeouts(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.tracker.stats.timeouts, s.attributes) for s in self._live()]

    def _leaks(self, options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        for sink in self._live():
            if sink.tracker.leak_threshold is not None:
                sink.tracker.scan_for_leaks(perf_counter())
                out.append(Observation(sink.tracker.stats.leaks, sink.attributes))
        return out

    def _invalidations(self, options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        for sink in self._live():
            with sink.tracker.stats.lock:
                counts = dict(sink.tracker.stats.invalidations)
            for reason, count in sorted(counts.items()):
                out.append(Observation(count, {**sink.attributes, REASON: reason}))
        return out


_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_instruments_lock = threading.Lock()


def _instruments_for(meter_provider: MeterProvider) -> _Instruments:
    with _instruments_lock:
        instruments = _instruments.get(meter_provider)
        if instruments is None:
            instruments = _Instruments(meter_provider)
            _instruments[meter_provider] = instruments
        return instruments


class OtelSink:
    """Feeds one pool's measurements to one MeterProvider's instruments."""

    def __init__(self, tracker: PoolTracker, meter_provider: MeterProvider) -> None:
        self.tracker = tracker
        self.attributes: dict[str, str] = {POOL_NAME: tracker.name}
        self.closed = False
        self._pending: deque[tuple[str, float, Any]] = deque(maxlen=MAX_PENDING)
        self._instruments = _instruments_for(meter_provider)
        self._histograms = self._instruments.histograms
        self._instruments.add(self)
        tracker.add_observer(self.observe)
        flusher.add(self)
        forking.watch_sink(self)

    def __repr__(self) -> str:
        return f"<OtelSink pool={self.tracker.name!r}>"

    def observe(self, kind: str, seconds: float) -> None:
        """Hot path (a tracker observer): buffer the value and, for a checkout, the context."""
        pending = self._pending
        pending.append((kind, seconds, otel_context.get_current() if kind == "checkout" else None))
        if len(pending) == HIGH_WATER:
            flusher.wake()

    def flush(self) -> None:
        """Replay buffered observations into the SDK histograms (off the request path)."""
        pending = self._pending
        histograms = self._histograms
        attributes = self.attributes
        while True:
            try:
                kind, seconds, ctx = pending.popleft()
            except IndexError:
                return
            histograms[_KIND_TO_HISTOGRAM[kind]].record(seconds, attributes, ctx)

    def close(self) -> None:
        """Stop recording; buffered observations are recorded first."""
        if self.closed:
            return
        self.tracker.remove_observer(self.observe)
        flusher.remove(self)
        forking.unwatch(self)
        self.flush()
        self.closed = True
        self._instruments.discard(self)

    def after_fork_in_child(self) -> None:
        """Observations buffered before fork belong to the parent."""
        self._pending.clear()

    def after_fork_in_parent(self) -> None:
        """Nothing to do in the parent."""
