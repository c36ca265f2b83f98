"""Fork safety: an engine created before ``fork()`` (gunicorn ``--preload``).

A process that forks hands its children a copy of every pool, including the DBAPI
connections (sockets) the parent already opened. If a child uses them, two processes talk
over one socket. The fix the sizing guides give is ``engine.dispose(close=False)`` in the
child right after fork (gunicorn's ``post_fork`` hook) or creating the engine after fork. Here:

* the child's copy of every tracker starts from fresh, zeroed :class:`PoolStats` (the
  parent's counts and histograms stay the parent's: nothing is counted twice) with fresh
  locks (a lock held by another parent thread at fork time would deadlock the child);
* if the pool held connections at fork time and the child checks a connection out of that
  same pool (i.e. nobody called ``dispose(close=False)``), poolwatch logs one WARNING with
  the fix;
* sinks (multiprocess writer, OpenTelemetry buffer, the leak scan, the multiprocess
  directory's inherited lock files) reset their own per-process state, and the background
  flusher is made fork-safe (see :mod:`~poolwatch.instrumentation.flusher`) and restarted
  last, once everything it runs has been reset.

This is poolwatch's one ``os.register_at_fork`` registration: whatever else has state to
reset registers with :func:`watch_sink`.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from poolwatch.instrumentation.flusher import flusher

if TYPE_CHECKING:
    from sqlalchemy.pool import Pool

    from poolwatch.instrumentation.tracker import PoolTracker

logger = logging.getLogger("poolwatch")


class ForkAware(Protocol):
    """A sink (or other part) with per-process state to reset in a forked child."""

    def after_fork_in_child(self) -> None:
        """Drop state inherited from the parent."""

    def after_fork_in_parent(self) -> None:
        """This process just forked a child."""


_trackers: weakref.WeakSet[PoolTracker] = weakref.WeakSet()
_sinks: weakref.WeakSet[Any] = weakref.WeakSet()


def watch(tracker: PoolTracker) -> None:
    """Reset ``tracker`` in forked children (see module docstring)."""
    _trackers.add(tracker)


def watch_sink(sink: ForkAware) -> None:
    """Call ``sink.after_fork_in_child()`` / ``after_fork_in_parent()`` around fork()."""
    _sinks.add(sink)


def unwatch(obj: Any) -> None:
    """Forget ``obj`` (a tracker or a sink)."""
    _trackers.discard(obj)
    _sinks.discard(obj)


def open_connections(pool: Pool | None) -> int:
    """DBAPI connections a pool holds now (idle + lent out); 0 when it cannot tell."""
    if pool is None:
        return 0
    try:
        checkedin = getattr(pool, "checkedin", None)
        checkedout = getattr(pool, "checkedout", None)
        if callable(checkedin) and callable(checkedout):
            return int(checkedin()) + int(checkedout())
    except Exception:
        return 0
    return 0


class InheritedPoolCheck:
    """Installed on a child's tracker when the pool held connections at fork time.

    Called once, on the child's first checkout: warns if that checkout came from the
    inherited pool (``engine.dispose(close=False)`` replaces the pool, and then it is quiet).
    """

    def __init__(self, pool: Pool, parent_pid: int, connections: int) -> None:
        self._pool_ref: weakref.ref[Pool] = weakref.ref(pool)
        self.parent_pid = parent_pid
        self.connections = connections
        self.warned = False

    def __call__(self, tracker: PoolTracker) -> None:
        tracker.fork_check = None
        if tracker.pool is not self._pool_ref():
            return
        self.warned = True
        logger.warning(
            "pool %r was created in process %d and is used in process %d after "
            "fork() with %d connection(s) the parent opened: both processes now share those "
            "sockets. Call `engine.dispose(close=False)` (for an AsyncEngine: "
            "`engine.sync_engine.dispose(close=False)`) in the child right after fork "
            "(gunicorn: in the post_fork hook), or create the engine after fork "
            "(no --preload).",
            tracker.name,
            self.parent_pid,
            os.getpid(),
            self.connections,
        )


def reset_tracker_in_child(tracker: PoolTracker, parent_pid: int) -> None:
    """Fresh stats for the child; arm the inherited-connections warning if needed."""
    tracker.stats = tracker.stats.fresh()  # with a fresh (unheld) lock
    pool = tracker.pool
    connections = open_connections(pool)
    if pool is not None and connections > 0:
        tracker.fork_check = InheritedPoolCheck(pool, parent_pid, connections)
    else:
        tracker.fork_check = None


_parent_pid = os.getpid()


def _before() -> None:
    global _parent_pid
    _parent_pid = os.getpid()
    flusher.before_fork()


def _after_in_parent() -> None:
    flusher.after_fork_in_parent()
    for sink in list(_sinks):
        try:
            sink.after_fork_in_parent()
        except Exception:
            logger.debug("after-fork (parent) hook failed", exc_info=True)


def _after_in_child() -> None:
    for tracker in list(_trackers):
        try:
            reset_tracker_in_child(tracker, _parent_pid)
        except Exception:
            logger.debug("after-fork reset failed", exc_info=True)
    for sink in list(_sinks):
        try:
            sink.after_fork_in_child()
        except Exception:
            logger.debug("after-fork (child) hook failed", exc_info=True)
    flusher.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
    )
