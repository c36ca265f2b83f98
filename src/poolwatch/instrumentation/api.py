"""``poolwatch.instrument`` / ``poolwatch.uninstrument``: the public entry points."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from poolwatch.instrumentation import forking, hooks
from poolwatch.instrumentation.flusher import flusher
from poolwatch.instrumentation.leaks import leak_scan
from poolwatch.instrumentation.naming import default_pool_name
from poolwatch.instrumentation.prometheus import (
    PoolCollector,
    collector_for,
    release_collector,
)
from poolwatch.instrumentation.routes import DEFAULT_ROUTE_LIMIT, RouteTable
from poolwatch.instrumentation.stats import PoolStats
from poolwatch.instrumentation.tracker import PoolTracker

logger = logging.getLogger("poolwatch")
# Re-entrant: a handle's close() can run from a garbage-collection finalizer triggered
# while this thread is inside instrument().
_lock = threading.RLock()


class PoolInstrumentation:
    """Handle returned by :func:`instrument`; :meth:`close` undoes it.

    Attributes:
        name: the ``pool`` label value of this pool's series.
        tracker: the live bookkeeping (for tests and advanced use).

    The handle does not keep the engine alive: when the application drops the engine, its
    series disappear as if :meth:`close` had been called.
    """

    def __init__(self, engine: Engine, tracker: PoolTracker) -> None:
        self._engine_ref: weakref.ref[Engine] = weakref.ref(engine)
        self.tracker = tracker
        self.name = tracker.name
        # What close() runs, last first: every step of instrument() registers its own
        # undo right after it took effect, so nothing it did can be left behind.
        self._undo: list[Callable[[], object]] = []

    def on_close(self, undo: Callable[[], object]) -> None:
        """Run ``undo`` when the handle is closed (after those registered later)."""
        self._undo.append(undo)

    @property
    def engine(self) -> Engine | None:
        """The instrumented (sync) engine, or None once the application dropped it."""
        return self._engine_ref()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` (or :func:`uninstrument`) ran."""
        return self.tracker.closed

    def close(self) -> None:
        """Remove every hook and listener and every series of this pool. Idempotent."""
        with _lock:
            if self.tracker.closed:
                return
            self.tracker.closed = True  # hooks and listeners still reached go quiet now
            while self._undo:
                undo = self._undo.pop()
                try:
                    undo()
                except Exception:
                    logger.warning(
                        "undoing instrument() of pool %r: %r failed",
                        self.name,
                        undo,
                        exc_info=True,
                    )

    def __repr__(self) -> str:
        state = "closed" if self.closed else "active"
        return f"<PoolInstrumentation pool={self.name!r} {state}>"


_handles: dict[int, PoolInstrumentation] = {}


def _sync_engine(engine: Any) -> Engine:
    sync_engine = getattr(engine, "sync_engine", engine)  # AsyncEngine -> its Engine
    if not isinstance(sync_engine, Engine):
        hint = (
            ": pass the engine itself (poolwatch.instrument(engine)), not engine.pool"
            if isinstance(engine, Pool)
            else ""
        )
        raise TypeError(
            "poolwatch.instrument() expects a SQLAlchemy Engine or AsyncEngine, "
            f"got {type(engine).__name__}{hint}"
        )
    return sync_engine


def instrument(
    engine: Any,
    *,
    name: str | None = None,
    registry: CollectorRegistry | None = None,
    leak_threshold: float | None = None,
    leak_callsite: str = "holder",
    multiprocess: bool | None = None,
    meter_provider: Any = None,
    prometheus: bool = True,
    application_name: str | bool = False,
    through_pgbouncer: bool = False,
    route_limit: int = DEFAULT_ROUTE_LIMIT,
) -> PoolInstrumentation:
    """Export the connection pool of ``engine`` (an ``AsyncEngine`` or ``Engine``).

    Args:
        engine: the engine whose pool to watch. ``engine.dispose()`` later is fine: the
            replacement pool is watched too.
        name: the ``pool`` label; defaults to ``driver://host:port/database`` (no
            credentials).
        registry: the prometheus_client registry to export to (default: the global one).
        leak_threshold: seconds; a connection held longer is counted once in
            ``sqlalchemy_pool_leaks_total`` and logged (WARNING, logger ``poolwatch``) with
            the code that holds it, and the route when :class:`poolwatch.RouteMiddleware`
            is installed.
        leak_callsite: what a leak report names. ``"holder"`` (default, ~free): the
            asyncio task or thread that checked the connection out and the file:line it
            is at when the leak is reported (or that it finished without returning it).
            ``"checkout"``: the exact file:line and function of every checkout, captured
            when it happens (walks the stack at every checkout, which costs more than all the
            other bookkeeping of a checkout).
        multiprocess: write the metrics into prometheus_client's multiprocess files so
            that a scrape of any worker reports every worker (docs/multiprocess.md).
            Default: on when ``PROMETHEUS_MULTIPROC_DIR`` is set.
        meter_provider: an OpenTelemetry ``MeterProvider``: also record the pool under the
            semantic-convention names ``db.client.connection.*`` (docs/opentelemetry.md).
            Pass ``opentelemetry.metrics.get_meter_provider()`` for the global one.
        prometheus: False exports to OpenTelemetry only (no prometheus_client series).
        application_name: name the pool's new server sessions, so poolwatch-exporter's
            per-``application_name`` series line up with this pool: a string, or True for
            ``<OTEL_SERVICE_NAME>/<pool>`` (just ``<pool>`` without that variable). Printable
            ASCII, at most 63 bytes, the same in every worker. A name the user set
            (``connect_args``, URL, ``server_settings``, ``options``, ``PGAPPNAME``) wins.
        through_pgbouncer: the engine connects to PostgreSQL through PgBouncer. Exported as
            ``sqlalchemy_pool_through_pgbouncer`` 1 (else 0): the alert rules then budget
            this pool against PgBouncer's ``max_client_conn`` instead of PostgreSQL's
            ``max_connections`` (docs/dashboards.md, "PgBouncer").
        route_limit: with :class:`poolwatch.RouteMiddleware`, how many route templates get
            their own ``sqlalchemy_pool_route_*`` series; later ones share ``route="other"``
            (besides ``route="none"``, outside any request, and ``"unmatched"``).

    Returns:
        A :class:`PoolInstrumentation` handle; ``handle.close()`` undoes everything.
        Instrumenting the same engine again returns the existing handle.

    Example::

        engine = create_async_engine(url, pool_size=10, max_overflow=5, pool_timeout=10)
        poolwatch.instrument(engine, name="primary", leak_threshold=30)
    """
    sync_engine = _sync_engine(engine)
    if leak_threshold is not None:
        if isinstance(leak_threshold, bool) or not isinstance(leak_threshold, int | float):
            raise TypeError(
                "leak_threshold must be a number of seconds (e.g. 30) or None, "
                f"got {leak_threshold!r}"
            )
        if not leak_threshold > 0:  # also refuses NaN
            raise ValueError("leak_threshold must be a positive number of seconds (or None)")
    if leak_callsite not in ("holder", "checkout"):
        raise ValueError('leak_callsite must be "holder" or "checkout"')
    if isinstance(route_limit, bool) or not isinstance(route_limit, int):
        raise TypeError(
            f"route_limit must be a whole number of routes (e.g. 20), got {route_limit!r} "
            "(for no per-route series, leave out RouteMiddleware)"
        )
    if route_limit < 1:
        raise ValueError(
            f"route_limit must be at least 1, got {route_limit} "
            "(for no per-route series, leave out RouteMiddleware)"
        )
    registry = REGISTRY if registry is None else registry
    if not prometheus and meter_provider is None:
        raise ValueError("prometheus=False needs a meter_provider (nothing would be exported)")
    explicit = multiprocess is True
    if multiprocess is None:
        multiprocess = prometheus and bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    multiprocess = multiprocess and prometheus
    if multiprocess:
        from poolwatch.instrumentation import multiprocess as mp

        # A bad directory is one logged line, never an exception at the app's import.
        multiprocess = mp.check_available(explicit=explicit)
    with _lock:
        existing = _handles.get(id(sync_engine))
        if existing is not None and not existing.closed and existing.engine is sync_engine:
            return existing
        # engine.execution_options(...) returns another Engine sharing the same pool:
        # the pool is already watched, so hand back the handle that watches it.
        owner = getattr(sync_engine.pool, "_poolwatch", None)
        for handle in _handles.values():
            if owner is not None and handle.tracker is owner and not handle.closed:
                return handle
        collector = collector_for(registry) if prometheus else None
        label = name or default_pool_name(sync_engine.url)
        taken = collector.names_in_use() if collector is not None else set()
        if label in taken:
            suffix = 2
            while f"{label}#{suffix}" in taken:
                suffix += 1
            logger.warning(
                "pool name %r is already exported; using %r (pass name=...)",
                label,
                f"{label}#{suffix}",
            )
            label = f"{label}#{suffix}"
        tracker = PoolTracker(
            sync_engine,
            PoolStats(
                label,
                through_pgbouncer=bool(through_pgbouncer),
                routes=RouteTable(route_limit),
            ),
            leak_threshold=leak_threshold,
            exact_callsites=leak_callsite == "checkout",
        )
        handle = PoolInstrumentation(sync_engine, tracker)
        try:
            _install(
                handle,
                sync_engine,
                registry,
                collector,
                multiprocess,
                meter_provider,
                application_name,
            )
        except BaseException:
            handle.close()  # a step failed: undo those that took effect
            raise
        return handle


def _install(
    handle: PoolInstrumentation,
    engine: Engine,
    registry: CollectorRegistry,
    collector: PoolCollector | None,
    multiprocess: bool,
    meter_provider: Any,
    application_name: str | bool,
) -> None:
    """The steps of :func:`instrument`, each followed by the registration of its undo."""
    tracker = handle.tracker
    on_close = handle.on_close
    if collector is not None:
        on_close(lambda: release_collector(registry, collector))
    if multiprocess:
        from poolwatch.instrumentation import multiprocess as mp

        writer = mp.MultiprocessWriter(tracker)
        on_close(writer.close)
        forking.watch_sink(writer)
        on_close(lambda: forking.unwatch(writer))
        flusher.add(writer)
        on_close(lambda: flusher.remove(writer))
    if meter_provider is not None:
        from poolwatch.instrumentation.otel import OtelSink

        on_close(OtelSink(tracker, meter_provider).close)
    if application_name:
        from poolwatch.instrumentation.appname import ApplicationName, default_name

        label = tracker.name
        chosen = default_name(label) if application_name is True else str(application_name)
        on_close(ApplicationName(engine, chosen).close)
    hooks.attach_engine(engine, tracker)
    on_close(lambda: hooks.detach_all(tracker))
    forking.watch(tracker)
    on_close(lambda: forking.unwatch(tracker))
    if collector is not None:
        collector.add(tracker)
        on_close(lambda: collector.remove(tracker))
    if tracker.leak_threshold is not None:
        leak_scan.add(tracker)
        on_close(lambda: leak_scan.remove(tracker))
    engine_id = id(engine)
    _handles[engine_id] = handle

    def forget() -> None:
        if _handles.get(engine_id) is handle:
            del _handles[engine_id]

    on_close(forget)
    # the engine dropped by the application: its series go too
    on_close(weakref.finalize(engine, handle.close).detach)


def uninstrument(engine: Any) -> None:
    """Undo :func:`instrument` for ``engine``: no hooks, no listeners, no series left."""
    sync_engine = _sync_engine(engine)
    with _lock:
        handle = _handles.get(id(sync_engine))
    if handle is not None and handle.engine is sync_engine:
        handle.close()
