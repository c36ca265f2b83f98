"""The pool event listeners of a tracker (invalidation, soft invalidation, detach) and the
``reason`` label of an invalidation.

One set per tracker, shared by every pool it adopts; exactly one copy of it on each pool.
``recreate()`` (``engine.dispose()``, the rebuild in hooks.attach_engine) copies the old
pool's listeners into the new one, so ours may be there already, and ``event.contains()``
cannot tell: it knows a listener by the target it was registered on. So :func:`add` looks
in the pool's own listener collection, and registers through the engine: a listener is
then known by the engine's key in every pool ``recreate()`` copied it into, and one
``event.remove()`` takes every copy away (:func:`remove`).
"""

from __future__ import annotations

import contextlib
from asyncio import CancelledError
from asyncio import TimeoutError as AsyncioTimeoutError
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    from sqlalchemy.pool import Pool

    from poolwatch.instrumentation.tracker import PoolTracker


def add(pool: Pool, tracker: PoolTracker) -> None:
    """Give ``pool`` the tracker's listeners, unless it has them already."""
    engine = tracker.engine
    target: Any = engine if engine is not None and engine.pool is pool else pool
    for name, fn in listeners_for(tracker).items():
        if fn not in getattr(pool.dispatch, name):
            event.listen(target, name, fn)


def remove(pool: Pool, tracker: PoolTracker) -> None:
    """Take the tracker's listeners off ``pool`` (and, by the engine's key, off every pool
    they were copied into)."""
    engine = tracker.engine
    for name, fn in listeners_for(tracker).items():
        for target in (engine, pool):
            with contextlib.suppress(Exception):
                if target is not None and event.contains(target, name, fn):
                    event.remove(target, name, fn)


def listeners_for(tracker: PoolTracker) -> dict[str, Any]:
    """The tracker's listeners by event name, made on first use and kept on the tracker
    (so every pool it adopts shares them, and :func:`remove` finds exactly these)."""
    cached: dict[str, Any] | None = tracker.pool_listeners
    if cached is not None:
        return cached

    def on_invalidate(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        if not tracker.closed:
            engine = tracker.engine
            dialect = None if engine is None else engine.dialect
            reason = invalidation_reason(exception, dialect, dbapi_connection)
            tracker.stats.count_invalidation(reason)

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


def invalidation_reason(
    exception: BaseException | None, dialect: Any = None, dbapi_connection: Any = None
) -> str:
    """Bounded ``reason`` label of an invalidation (INVALIDATION_REASONS, docs/metrics.md).

    ``dialect`` (the engine's) tells a lost connection from another error when SQLAlchemy
    invalidated on an exception it has not wrapped (a failed reset on checkin, say); given
    the invalidated ``dbapi_connection`` it looks at the connection itself (asyncpg's
    ``is_closed()``, psycopg's ``closed``/``broken``), not only at the message.
    """
    if exception is None:
        return "explicit"  # invalidate() called by the application or by SQLAlchemy
    if isinstance(exception, sa_exc.InvalidatePoolError):
        return "pre_ping"  # raised by the pre-ping when the ping found a dead connection
    if isinstance(exception, sa_exc.DisconnectionError):
        return "disconnect"
    if isinstance(exception, sa_exc.DBAPIError):
        return "disconnect" if exception.connection_invalidated else "error"
    # SQLAlchemy drops a connection when an operation on it is interrupted, as it cannot
    # know what state it was left in: that is not the server going away.
    if isinstance(exception, CancelledError):
        return "cancelled"  # the task was cancelled during a checkout, query or reset
    if isinstance(exception, TimeoutError | AsyncioTimeoutError):  # two classes before 3.11
        return "timeout"  # a driver-side timeout (asyncio.TimeoutError), e.g. command_timeout
    if not isinstance(exception, Exception):
        return "interrupted"  # KeyboardInterrupt, SystemExit, GeneratorExit
    if isinstance(exception, OSError):
        return "disconnect"  # the socket failed
    try:
        lost = dialect is not None and bool(
            dialect.is_disconnect(exception, dbapi_connection, None)
        )
    except Exception:
        lost = False
    return "disconnect" if lost else "error"
