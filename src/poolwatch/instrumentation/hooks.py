"""Hooking a SQLAlchemy pool without changing its behaviour.

SQLAlchemy has no "checkout started" event and no "waiting" count, so the pool's own
methods are the only place to measure queue wait and waiters. Rather than monkeypatching
bound methods (which ``engine.dispose()`` would lose, as it builds a new pool with
``self.__class__(...)``), the pool's class is swapped for a subclass that adds the
measurements and otherwise defers to the original with ``super()``. Because
``recreate()`` uses ``self.__class__``, a disposed engine's new pool is instrumented too.

Rare events (invalidation, detach) use ordinary pool event listeners, which
``recreate()`` carries over to the new pool as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool, QueuePool

if TYPE_CHECKING:
    from poolwatch.instrumentation.tracker import PoolTracker


# The hooked methods. Each calls the pool's original class explicitly (the subclass has a
# single base, the original class: a mixin base would change the instance layout and make
# the ``__class__`` swap fail).


def _connect(self: Any) -> Any:
    tracker: PoolTracker | None = self._poolwatch
    original = self._poolwatch_original_class
    if tracker is None:
        return original.connect(self)
    started = perf_counter()
    try:
        fairy = original.connect(self)
    except BaseException:
        tracker.checkout_failed(started)
        raise
    tracker.checkout_succeeded(fairy._connection_record, started)
    return fairy


def _return_conn(self: Any, record: Any) -> None:
    tracker: PoolTracker | None = self._poolwatch
    if tracker is not None:
        tracker.checked_in(record)
    self._poolwatch_original_class._return_conn(self, record)


def _recreate(self: Any) -> Any:
    new_pool = self._poolwatch_original_class.recreate(self)
    tracker: PoolTracker | None = self._poolwatch
    if tracker is not None and not tracker.closed:
        attach(new_pool, tracker)
    return new_pool


def _queue_connect(self: Any) -> Any:
    """``connect`` for QueuePool / AsyncAdaptedQueuePool: also counts waiters and timeouts.

    Deciding here whether the caller will block (rather than wrapping ``_do_get``) keeps
    the hot path to one extra Python frame per checkout.
    """
    tracker: PoolTracker | None = self._poolwatch
    original = self._poolwatch_original_class
    if tracker is None:
        return original.connect(self)
    started = perf_counter()
    # The caller blocks on the queue when every allowed connection exists and none is idle.
    waits = -1 < self._max_overflow <= self._overflow and not self._pool.qsize()
    if waits:
        tracker.wait_started()
    try:
        fairy = original.connect(self)
    except BaseException as exc:
        if waits:
            tracker.wait_ended()
        if isinstance(exc, sa_exc.TimeoutError):
            tracker.timed_out()
        tracker.checkout_failed(started)
        raise
    if waits:
        tracker.wait_ended()
    tracker.checkout_succeeded(fairy._connection_record, started)
    return fairy


def _blocking_do_get(self: Any) -> Any:
    """``_do_get`` for a thread-shared QueuePool: counts a waiter where it may block.

    Under threads a decision taken earlier, in ``connect``, could race with another thread
    taking the last idle connection; here it is taken right where the pool itself decides
    to wait. Sync pools take a lock per event anyway, so the extra frame matters less.
    """
    tracker: PoolTracker | None = self._poolwatch
    original = self._poolwatch_original_class
    if tracker is None or not (-1 < self._max_overflow <= self._overflow):
        return original._do_get(self)
    tracker.wait_started()
    try:
        return original._do_get(self)
    except sa_exc.TimeoutError:
        tracker.timed_out()
        raise
    finally:
        tracker.wait_ended()


_subclasses: dict[type[Pool], type[Pool]] = {}


def _instrumented_class(cls: type[Pool]) -> type[Pool]:
    if "_poolwatch_original_class" in cls.__dict__:
        return cls
    sub = _subclasses.get(cls)
    if sub is None:
        namespace: dict[str, Any] = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "_poolwatch_original_class": cls,
            "_poolwatch": None,
            "connect": _connect,
            "_return_conn": _return_conn,
            "recreate": _recreate,
        }
        if issubclass(cls, QueuePool):
            if cls._is_asyncio:
                namespace["connect"] = _queue_connect  # one event-loop thread: no race
            else:
                namespace["_do_get"] = _blocking_do_get
        sub = type(cls.__name__, (cls,), namespace)
        _subclasses[cls] = sub
    return sub


def attach(pool: Pool, tracker: PoolTracker) -> None:
    """Make ``pool`` report to ``tracker`` (idempotent)."""
    if getattr(pool, "_poolwatch", None) is tracker:
        return
    pool.__class__ = _instrumented_class(type(pool))
    pool._poolwatch = tracker  # type: ignore[attr-defined]
    creator = pool._invoke_creator
    if getattr(creator, "__wrapped__", None) is None:
        pool._invoke_creator = tracker.wrap_creator(creator)  # type: ignore[assignment]
    listeners = _listeners_for(tracker)
    for name, fn in listeners.items():
        if not event.contains(pool, name, fn):
            event.listen(pool, name, fn)


def detach(pool: Pool, tracker: PoolTracker) -> None:
    """Undo :func:`attach`: original class, original creator, no listeners."""
    if getattr(pool, "_poolwatch", None) is not tracker:
        return
    original = type(pool).__dict__.get("_poolwatch_original_class")
    if original is not None:
        pool.__class__ = original
    pool.__dict__.pop("_poolwatch", None)
    wrapped = getattr(pool._invoke_creator, "__wrapped__", None)
    if wrapped is not None:
        pool._invoke_creator = wrapped
    for name, fn in _listeners_for(tracker).items():
        with contextlib.suppress(Exception):
            if event.contains(pool, name, fn):
                event.remove(pool, name, fn)


def _listeners_for(tracker: PoolTracker) -> dict[str, Any]:
    cached: dict[str, Any] | None = tracker.pool_listeners
    if cached is not None:
        return cached

    def on_invalidate(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        if not tracker.closed:
            tracker.stats.count_invalidation(invalidation_reason(exception))

    def on_soft_invalidate(
        dbapi_connection: Any, record: Any, exception: BaseException | None
    ) -> None:
        if not tracker.closed:
            tracker.stats.count_invalidation("soft")

    def on_detach(dbapi_connection: Any, record: Any) -> None:
        if not tracker.closed:
            tracker.detached(record)

    listeners: dict[str, Callable[..., None]] = {
        "invalidate": on_invalidate,
        "soft_invalidate": on_soft_invalidate,
        "detach": on_detach,
    }
    tracker.pool_listeners = listeners
    return listeners


def invalidation_reason(exception: BaseException | None) -> str:
    """Bounded reason label: pre_ping, disconnect, error or explicit."""
    if exception is None:
        return "explicit"
    if isinstance(exception, sa_exc.InvalidatePoolError):
        return "pre_ping"  # raised by the pre-ping when the ping found a dead connection
    if isinstance(exception, sa_exc.DisconnectionError):
        return "disconnect"
    if isinstance(exception, sa_exc.DBAPIError):
        return "disconnect" if exception.connection_invalidated else "error"
    # A DBAPI-level exception (not yet wrapped by SQLAlchemy) that invalidated the
    # connection is, in practice, a lost connection.
    return "disconnect"
