"""PoolTracker: turns pool hook calls into :class:`PoolStats` updates, never raising.

One tracker per instrumented engine. It outlives ``engine.dispose()`` (which swaps in a
new pool): the new pool is adopted, and connections still out from the old pool are
tracked until they come back.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from time import perf_counter, time
from typing import TYPE_CHECKING, Any

from poolwatch.instrumentation.callsite import capture_callsite, format_callsite
from poolwatch.instrumentation.context import current_route
from poolwatch.instrumentation.exemplars import trace_labels
from poolwatch.instrumentation.stats import Checkout, PoolStats

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

logger = logging.getLogger("poolwatch")


class PoolTracker:
    """Bookkeeping for one instrumented engine's pool (and the pools that replace it)."""

    def __init__(
        self,
        engine: Engine,
        stats: PoolStats,
        *,
        leak_threshold: float | None,
    ) -> None:
        self._engine_ref: weakref.ref[Engine] = weakref.ref(engine)
        self.stats = stats
        self.leak_threshold = leak_threshold
        self.capture_sites = leak_threshold is not None
        self.closed = False
        self._error_logged = False
        # Extra per-observation sinks (OpenTelemetry, multiprocess); each gets
        # (kind, seconds) with kind in {"checkout", "hold", "connect"}.
        self.observers: list[Callable[[str, float], None]] = []
        # Set in a forked child whose pool held connections at fork (see forking.py);
        # called once, on the child's first checkout.
        self.fork_check: Callable[[PoolTracker], None] | None = None
        self._lock = threading.Lock()

    # --- what the exporters read --------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        """The instrumented engine, or None once it has been garbage collected."""
        return self._engine_ref()

    @property
    def pool(self) -> Pool | None:
        """The engine's current pool (after ``dispose()``, the new one)."""
        engine = self._engine_ref()
        return None if engine is None else engine.pool

    @property
    def name(self) -> str:
        """Value of the ``pool`` label."""
        return self.stats.name

    # --- hot path -----------------------------------------------------------------------

    def checkout_succeeded(self, record: Any, started: float) -> None:
        """A caller got a connection; ``started`` is when it asked."""
        now = perf_counter()
        try:
            site = route = None
            if self.capture_sites:
                site = capture_callsite()
                route = current_route()
            if self.fork_check is not None:
                self.fork_check(self)
            exemplar = trace_labels()  # None at once unless opentelemetry is imported
            stats = self.stats
            with stats.lock:
                stats.checkouts += 1
                index = stats.checkout_duration.observe(now - started)
                if exemplar is not None:
                    stats.checkout_duration.exemplars[index] = (exemplar, now - started, time())
                stats.active[record] = Checkout(started, now, site, route)
            if self.observers:
                self._notify("checkout", now - started)
        except Exception:
            self.internal_error()

    def checkout_failed(self, started: float) -> None:
        """A checkout raised (timeout, connect error, cancellation); its wait still counts."""
        elapsed = perf_counter() - started
        try:
            exemplar = trace_labels()
            stats = self.stats
            with stats.lock:
                index = stats.checkout_duration.observe(elapsed)
                if exemplar is not None:
                    stats.checkout_duration.exemplars[index] = (exemplar, elapsed, time())
            if self.observers:
                self._notify("checkout", elapsed)
        except Exception:
            self.internal_error()

    def checked_in(self, record: Any) -> None:
        """A connection came back to the pool (or was detached from it)."""
        now = perf_counter()
        try:
            stats = self.stats
            with stats.lock:
                checkout = stats.active.pop(record, None)
                if checkout is None:
                    # e.g. _checkin_failed after a failed reconnect: there was no checkout.
                    return
                stats.checkins += 1
                held = now - checkout.acquired
                stats.hold_duration.observe(held)
            if self.observers:
                self._notify("hold", held)
            threshold = self.leak_threshold
            if threshold is not None and held > threshold and not checkout.leak_reported:
                self.report_leak(checkout, held, returned=True)
        except Exception:
            self.internal_error()

    def wait_started(self) -> None:
        """A caller found the pool at capacity and is about to wait."""
        with self.stats.lock:
            self.stats.waiting += 1

    def wait_ended(self, timed_out: bool) -> None:
        """The waiting caller got a connection, timed out, or was cancelled."""
        with self.stats.lock:
            self.stats.waiting -= 1
            if timed_out:
                self.stats.timeouts += 1

    def wrap_creator(self, creator: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Wrap a pool's ``_invoke_creator`` to time new DBAPI connections."""

        def timed_creator(record: Any) -> Any:
            started = perf_counter()
            try:
                connection = creator(record)
            except BaseException:
                self._connect_done(perf_counter() - started, failed=True)
                raise
            self._connect_done(perf_counter() - started, failed=False)
            return connection

        timed_creator.__wrapped__ = creator  # type: ignore[attr-defined]
        return timed_creator

    def _connect_done(self, elapsed: float, *, failed: bool) -> None:
        try:
            stats = self.stats
            with stats.lock:
                stats.connect_duration.observe(elapsed)
                if failed:
                    stats.connect_errors += 1
            if self.observers:
                self._notify("connect", elapsed)
        except Exception:
            self.internal_error()

    def _notify(self, kind: str, seconds: float) -> None:
        for observer in self.observers:
            observer(kind, seconds)

    # --- rare events --------------------------------------------------------------------

    def detached(self, record: Any) -> None:
        """A checked-out connection left the pool without a checkin.

        Under asyncio this is how a connection that was garbage collected without being
        returned ends: SQLAlchemy emits ``detach`` but no ``checkin``.
        """
        try:
            with self.stats.lock:
                checkout = self.stats.active.get(record)
            if checkout is None:
                return
            self.checked_in(record)
            logger.warning(
                "poolwatch: a connection of pool %r left the pool without being returned "
                "(garbage collected or detached); it was checked out at %s%s",
                self.name,
                format_callsite(checkout.callsite),
                f" (route {checkout.route})" if checkout.route else "",
            )
        except Exception:
            self.internal_error()

    def scan_for_leaks(self, now: float | None = None) -> int:
        """Count and log every connection held past the threshold; returns new leaks."""
        threshold = self.leak_threshold
        if threshold is None or self.closed:
            return 0
        now = perf_counter() if now is None else now
        found: list[tuple[Checkout, float]] = []
        with self.stats.lock:
            for checkout in self.stats.active.values():
                held = now - checkout.acquired
                if held > threshold and not checkout.leak_reported:
                    found.append((checkout, held))
        for checkout, held in found:
            self.report_leak(checkout, held, returned=False)
        return len(found)

    def report_leak(self, checkout: Checkout, held: float, *, returned: bool) -> None:
        """Count a leak once and log where the connection was checked out."""
        with self.stats.lock:
            if checkout.leak_reported:
                return
            checkout.leak_reported = True
            self.stats.leaks += 1
        logger.warning(
            "poolwatch: connection of pool %r %s %.1fs, longer than the leak threshold "
            "(%gs); checked out at %s%s",
            self.name,
            "was held for" if returned else "has been held for",
            held,
            self.leak_threshold,
            format_callsite(checkout.callsite),
            f" (route {checkout.route})" if checkout.route else "",
        )

    def internal_error(self) -> None:
        """Log a failure inside poolwatch once (with traceback); the pool keeps working."""
        if not self._error_logged:
            self._error_logged = True
            logger.warning(
                "poolwatch: internal error while recording pool %r metrics; "
                "metrics for this pool may be incomplete",
                self.name,
                exc_info=True,
            )
        else:
            logger.debug("poolwatch: internal error (pool %r)", self.name, exc_info=True)
