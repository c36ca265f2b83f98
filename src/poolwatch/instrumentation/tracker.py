"""PoolTracker: turns pool hook calls into :class:`PoolStats` updates, never raising.

One tracker per instrumented engine. It outlives ``engine.dispose()`` (which swaps in a
new pool): the new pool is adopted, and connections still out from the old pool are
tracked until they come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import weakref
from collections.abc import Callable
from time import perf_counter, time
from typing import TYPE_CHECKING, Any

from poolwatch.instrumentation import accounting
from poolwatch.instrumentation.accounting import CheckinFn, CheckoutFn, Site, site_of
from poolwatch.instrumentation.callsite import capture_callsite, capture_holder, describe_holder
from poolwatch.instrumentation.context import route_tracking
from poolwatch.instrumentation.exemplars import trace_labels
from poolwatch.instrumentation.routes import current_key
from poolwatch.instrumentation.stats import PoolStats

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

logger = logging.getLogger("poolwatch")
_PY_CURRENT_TASKS: dict[Any, Any] | None = (
    getattr(asyncio.tasks, "_current_tasks", None) if sys.version_info < (3, 12) else None
)


class PoolTracker:
    """Bookkeeping for one instrumented engine's pool (and the pools that replace it)."""

    __slots__ = (
        "__weakref__",
        "_engine_ref",
        "_error_logged",
        "_fork_check",
        "_stats",
        "capture",
        "checked_in",
        "checkout_succeeded",
        "closed",
        "leak_threshold",
        "observers",
        "pool_listeners",
        "pools",
        "running_tasks",
        "threaded",
    )

    checkout_succeeded: CheckoutFn
    """``(record, started, now)``: a caller that asked at ``started`` got ``record`` at
    ``now`` (perf_counter values). Built for the current configuration by :meth:`specialise`."""
    checked_in: CheckinFn
    """``(record, now)``: ``record`` came back to the pool, or left it, at ``now``."""

    def __init__(
        self,
        engine: Engine,
        stats: PoolStats,
        *,
        leak_threshold: float | None,
        exact_callsites: bool = False,
    ) -> None:
        self._engine_ref: weakref.ref[Engine] = weakref.ref(engine)
        self._stats = stats
        self.leak_threshold = None if leak_threshold is None else float(leak_threshold)
        # Who holds a connection: the exact checkout line on request, else the asyncio task
        # (an AsyncEngine's pool is used from its event loop: asyncio.current_task directly,
        # no wrapper frame) or, for a sync engine, the task or thread.
        self.capture: Callable[[], object] = (
            capture_callsite
            if exact_callsites
            else asyncio.current_task
            if engine.dialect.is_async
            else capture_holder
        )
        # Before Python 3.12 asyncio.current_task() is a Python function reading this dict;
        # the checkout accounting reads it directly (a frame less: ~1,000 instructions).
        self.running_tasks: dict[Any, Any] | None = (
            _PY_CURRENT_TASKS if self.capture is asyncio.current_task else None
        )
        # An asyncio engine's pool is only touched from its event loop's thread, so the
        # hot path skips the lock there (an uncontended lock round trip is a measurable
        # share of a checkout). Sync pools, and Python builds without the GIL, take it.
        self.threaded = not engine.dialect.is_async or _gil_disabled()
        self.closed = False
        self._error_logged = False
        # Extra per-observation sinks (OpenTelemetry); each gets (kind, seconds) with kind
        # in {"checkout", "hold", "connect"}. Changed through add/remove_observer.
        self.observers: list[Callable[[str, float], None]] = []
        # Set in a forked child whose pool held connections at fork (see forking.py);
        # called once, on the child's first checkout.
        self._fork_check: Callable[[PoolTracker], None] | None = None
        # The pool event listeners (hooks.py), created once so that every pool this tracker
        # adopts shares them and detach can remove exactly these.
        self.pool_listeners: dict[str, Callable[..., None]] | None = None
        # Every pool attached to this tracker and still alive: the engine's current one
        # and those ``dispose()`` replaced while connections or waiters were still on them.
        self.pools: weakref.WeakSet[Pool] = weakref.WeakSet()
        route_tracking.watch(self)  # the first RouteMiddleware rebuilds the accounting
        self.specialise()

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
    def stats(self) -> PoolStats:
        """Counters, histograms and the checkout table (replaced with fresh ones after fork)."""
        return self._stats

    @stats.setter
    def stats(self, stats: PoolStats) -> None:
        self._stats = stats
        self.specialise()

    @property
    def name(self) -> str:
        """Value of the ``pool`` label."""
        return self.stats.name

    @property
    def fork_check(self) -> Callable[[PoolTracker], None] | None:
        """The inherited-connections check a forked child runs on its first checkout."""
        return self._fork_check

    @fork_check.setter
    def fork_check(self, check: Callable[[PoolTracker], None] | None) -> None:
        self._fork_check = check
        self.specialise()

    def add_observer(self, observer: Callable[[str, float], None]) -> None:
        """Also send every (kind, seconds) observation to ``observer``."""
        self.observers.append(observer)
        self.specialise()

    def remove_observer(self, observer: Callable[[str, float], None]) -> None:
        """Stop sending observations to ``observer`` (no error if it was not there)."""
        with contextlib.suppress(ValueError):
            self.observers.remove(observer)
        self.specialise()

    def specialise(self) -> None:
        """(Re)build :attr:`checkout_succeeded` and :attr:`checked_in` for the current
        configuration (see accounting.py). Call it after replacing anything they close
        over: the stats or their histograms, the observers, the fork check, route
        tracking (done by :meth:`RouteTracking.enable`)."""
        self.checkout_succeeded, self.checked_in = accounting.specialise(self)

    # --- hot path -----------------------------------------------------------------------

    def checkout_failed(self, started: float) -> None:
        """A checkout raised (timeout, connect error, cancellation); its wait still counts."""
        elapsed = perf_counter() - started
        try:
            exemplar = trace_labels()
            stats = self.stats
            with stats.lock:
                index = stats.checkout_duration.observe(elapsed)
                stats.failed_checkouts += 1
                if route_tracking.enabled:  # a failed wait counts for its route too
                    stats.routes.add(current_key()[1]).checkout.observe(elapsed)
                if exemplar is not None:
                    stats.checkout_duration.exemplars[index] = (exemplar, elapsed, time())
            if self.observers:
                self._notify("checkout", elapsed)
        except Exception:
            self.internal_error()

    def wait_started(self) -> None:
        """A caller found the pool at capacity and is about to wait."""
        if self.threaded:
            with self.stats.lock:
                self.stats.waiting += 1
        else:
            self.stats.waiting += 1

    def wait_ended(self) -> None:
        """The waiting caller got a connection, timed out, or was cancelled."""
        if self.threaded:
            with self.stats.lock:
                self.stats.waiting -= 1
        else:
            self.stats.waiting -= 1

    def timed_out(self) -> None:
        """A checkout raised ``sqlalchemy.exc.TimeoutError`` after ``pool_timeout``."""
        with self.stats.lock:
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
            if record not in self.stats.active:
                return
            site = site_of(record)
            self.checked_in(record, perf_counter())
            logger.warning(
                "a connection of pool %r (pid %d) left the pool without being returned "
                "(garbage collected or detached); %s",
                self.name,
                os.getpid(),
                _describe(site),
            )
        except Exception:
            self.internal_error()

    def scan_for_leaks(self, now: float | None = None) -> int:
        """Count and log every connection held past the threshold; returns new leaks."""
        threshold = self.leak_threshold
        if threshold is None or self.closed:
            return 0
        now = perf_counter() if now is None else now
        stats = self.stats
        found = 0
        for record, acquired in list(stats.active.items()):
            held = now - acquired
            if (
                held > threshold
                and record not in stats.leaked
                # still the same checkout (not returned and lent out again meanwhile)
                and stats.active.get(record) == acquired
            ):
                stats.leaked.add(record)
                found += 1
                self.report_leak(site_of(record), held, returned=False)
        return found

    def report_leak(
        self,
        site: Site | None,
        held: float,
        *,
        returned: bool,
    ) -> None:
        """Count one leak and log where the connection was checked out."""
        with self.stats.lock:
            self.stats.leaks += 1
        logger.warning(
            "connection of pool %r (pid %d) %s %.1fs, longer than the leak threshold (%gs); %s",
            self.name,
            os.getpid(),
            "was held for" if returned else "has been held for",
            held,
            self.leak_threshold,
            _describe(site),
        )

    def internal_error(self) -> None:
        """Log a failure inside poolwatch once (with traceback); the pool keeps working."""
        if not self._error_logged:
            self._error_logged = True
            logger.warning(
                "internal error while recording pool %r metrics; "
                "metrics for this pool may be incomplete",
                self.name,
                exc_info=True,
            )
        else:
            logger.debug("internal error (pool %r)", self.name, exc_info=True)


def _describe(site: Site | None) -> str:
    if site is None:
        return "unknown location"
    where = describe_holder(site[0])
    return f"{where} (route {site[1]})" if site[1] else where


def _gil_disabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return check is not None and not check()
