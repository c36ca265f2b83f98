"""Hooking a SQLAlchemy pool without changing its behaviour.

SQLAlchemy has no "checkout started" event and no "waiting" count, so the pool's own
methods are the only place to measure queue wait (and, for a thread-shared pool, waiters;
an asyncio pool's waiters are read from its queue at scrape time: waiting_callers).
Rather than monkeypatching bound methods (which ``engine.dispose()`` would lose, as it
builds a new pool with ``self.__class__(...)``), the pool's class is swapped for a subclass
that adds the measurements and otherwise defers to the original. Because
``recreate()`` uses ``self.__class__``, a disposed engine's new pool is instrumented too.
A pool that has not connected yet is not swapped but rebuilt as that subclass
(attach_engine), which keeps CPython's specialised method lookups on it.

Rare events (invalidation, detach) use ordinary pool event listeners (listeners.py),
which ``recreate()`` carries over to the new pool as well.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import sqlalchemy.pool.base
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue

from poolwatch.instrumentation import listeners

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from poolwatch.instrumentation.tracker import PoolTracker

# The hooked methods, made per pool class: each calls the original class's method, bound
# once here (the subclass has a single base, the original class: a mixin base would
# change the instance layout and make the ``__class__`` swap fail). What a checkout and
# a checkin record is decided once per tracker configuration: accounting.py.
#
# Pool.connect is ``return _ConnectionFairy._checkout(self)`` and Pool._return_conn is
# ``self._do_return_conn(record)`` (SQLAlchemy 2.0 and 2.1): where a pool class keeps them,
# the hooks call what they call, saving a Python frame per checkout and per checkin.
_FAIRY_CHECKOUT: Callable[[Any], Any] | None = getattr(
    getattr(sqlalchemy.pool.base, "_ConnectionFairy", None), "_checkout", None
)


def _make_connect(cls: type[Pool]) -> Callable[[Any], Any]:
    original_connect: Callable[[Any], Any] = cls.connect
    if cls.connect is Pool.connect and _FAIRY_CHECKOUT is not None:
        original_connect = _FAIRY_CHECKOUT
    # An asyncio QueuePool's timeouts are counted here; a thread-shared QueuePool counts
    # them, and its waiters, in _do_get instead (see _make_blocking_do_get). Waiters of an
    # asyncio pool are read from its queue at scrape time (waiting_callers), which costs
    # the checkout nothing; only a queue of unknown make has them counted on checkout, by
    # a wrapper around this function (_counting_waiters), so the common path has no branch.
    counts_timeouts = issubclass(cls, QueuePool) and cls._is_asyncio

    def connect(self: Any) -> Any:
        tracker: PoolTracker | None = self._poolwatch
        if tracker is None:
            return original_connect(self)
        started = perf_counter()
        try:
            fairy = original_connect(self)
        except BaseException as exc:
            if counts_timeouts and isinstance(exc, sa_exc.TimeoutError):
                tracker.timed_out()
            tracker.checkout_failed(started)
            raise
        # (read into a local, then called: CPython 3.11 specialises that, not a method
        # call through an attribute that holds a function)
        checkout_succeeded = tracker.checkout_succeeded
        checkout_succeeded(fairy._connection_record, started, perf_counter())
        return fairy

    if counts_timeouts and not _reports_waiters(cls):
        return _counting_waiters(connect)
    return connect


def _counting_waiters(connect: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``connect`` for an asyncio QueuePool whose queue we cannot read waiters from: the
    caller's wait is decided here, before it asks (one thread: no race)."""

    def counting_connect(self: Any) -> Any:
        tracker: PoolTracker | None = self._poolwatch
        # The caller blocks on the queue when every allowed connection exists and none is idle.
        if tracker is None or not -1 < self._max_overflow <= self._overflow or self._pool.qsize():
            return connect(self)
        tracker.wait_started()
        try:
            return connect(self)
        finally:
            tracker.wait_ended()

    return counting_connect


def _make_return_conn(cls: type[Pool]) -> Callable[[Any, Any], None]:
    original_return_conn: Callable[[Any, Any], None] = cls._return_conn
    if cls._return_conn is Pool._return_conn and hasattr(cls, "_do_return_conn"):
        original_return_conn = cls._do_return_conn

    def _return_conn(self: Any, record: Any) -> None:
        tracker: PoolTracker | None = self._poolwatch
        if tracker is not None:
            checked_in = tracker.checked_in
            checked_in(record, perf_counter())
        original_return_conn(self, record)

    return _return_conn


def _make_recreate(cls: type[Pool]) -> Callable[[Any], Any]:
    original_recreate = cls.recreate

    def recreate(self: Any) -> Any:
        new_pool = original_recreate(self)
        tracker: PoolTracker | None = self._poolwatch
        if tracker is not None and not tracker.closed:
            attach(new_pool, tracker)
        elif tracker is not None and type(new_pool) is type(self):
            # uninstrument() ran meanwhile (in another thread): the new pool is not watched
            _set_class(new_pool, cls)
        return new_pool

    return recreate


def _make_blocking_do_get(cls: type[Pool]) -> Callable[[Any], Any]:
    """``_do_get`` for a thread-shared QueuePool: counts a waiter where it may block.

    Under threads a decision taken earlier, in ``connect``, could race with another thread
    taking the last idle connection; here it is taken right where the pool itself decides
    to wait. Sync pools take a lock per event anyway, so the extra frame matters less.
    """
    original_do_get = cls._do_get

    def _do_get(self: Any) -> Any:
        tracker: PoolTracker | None = self._poolwatch
        if tracker is None or not (-1 < self._max_overflow <= self._overflow):
            return original_do_get(self)
        tracker.wait_started()
        try:
            return original_do_get(self)
        except sa_exc.TimeoutError:
            tracker.timed_out()
            raise
        finally:
            tracker.wait_ended()

    return _do_get


def _reports_waiters(cls: type[Any]) -> bool:
    """Whether ``cls`` is an asyncio pool on SQLAlchemy's own queue, whose waiters we count.

    ``AsyncAdaptedQueue`` (SQLAlchemy 2.0 and 2.1) keeps an ``asyncio.Queue`` as ``_queue``
    (created on first use); a caller blocked on the pool awaits that queue's ``get()``,
    which keeps one future per blocked caller in ``_getters`` and removes it when the
    caller is woken, times out or is cancelled. A queue class that changes how it waits
    is not trusted to do the same.
    """
    queue_class = getattr(cls, "_queue_class", None)
    return (
        bool(getattr(cls, "_is_asyncio", False))
        and isinstance(queue_class, type)
        and issubclass(queue_class, AsyncAdaptedQueue)
        and queue_class.get is AsyncAdaptedQueue.get
        and inspect.getattr_static(queue_class, "_queue") is _ASYNC_QUEUE_ATTRIBUTE
    )


_ASYNC_QUEUE_ATTRIBUTE = inspect.getattr_static(AsyncAdaptedQueue, "_queue")


def waiting_callers(tracker: PoolTracker) -> int:
    """Callers blocked waiting for a connection of ``tracker``'s pools now.

    After ``engine.dispose()`` callers may still wait on the replaced pool (until one of
    its connections comes back, or their ``pool_timeout``): every pool the tracker
    adopted and that is still alive counts.
    """
    waiting = max(0, tracker.stats.waiting)  # thread-shared pools, queues of unknown make
    for pool in list(tracker.pools):
        if _reports_waiters(type(pool)):
            waiting += _queue_waiters(pool._pool)  # type: ignore[attr-defined]
    return waiting


def _queue_waiters(queue: Any) -> int:
    # ``_queue`` is created on first use; until then nobody can be waiting on it.
    getters = getattr(queue.__dict__.get("_queue"), "_getters", None)
    if not getters:
        return 0
    # A getter cancelled a moment ago is done but still listed until its task runs again.
    # (Copied first, in one C call: a scrape may run in another thread than the loop.)
    try:
        pending = tuple(getters)
    except RuntimeError:  # changed while copied (only possible without the GIL)
        return 0
    return sum(1 for getter in pending if not getter.done())


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
            "connect": _make_connect(cls),
            "_return_conn": _make_return_conn(cls),
            "recreate": _make_recreate(cls),
        }
        if issubclass(cls, QueuePool) and not cls._is_asyncio:
            namespace["_do_get"] = _make_blocking_do_get(cls)
        sub = type(cls.__name__, (cls,), namespace)
        _subclasses[cls] = sub
    return sub


def attach_engine(engine: Engine, tracker: PoolTracker) -> None:
    """Make ``engine``'s pool report to ``tracker``.

    A QueuePool that has not opened a connection yet (the usual case: ``instrument()`` at
    start-up) is replaced by a fresh instance of the instrumented class, built by its own
    ``recreate()`` as ``engine.dispose()`` would (same arguments, same listeners). Why not
    just swap its class: a swapped instance's attribute dict still shares the key table of
    its original class, so CPython 3.11 cannot specialise method lookups on it for the new
    class, and SQLAlchemy's ``pool._do_get()``, ``pool._return_conn()``,
    ``pool._should_log_debug()`` and ``pool.connect()`` take the generic path on every
    checkout (a few hundred instructions per checkout+checkin). A pool already in use
    keeps its identity (its connections point at it) and is swapped.
    """
    pool = engine.pool
    fresh = _unused_replacement(pool)
    if fresh is not None:
        engine.pool = fresh
        pool = fresh
    attach(pool, tracker)


def _unused_replacement(pool: Pool) -> Pool | None:
    if not isinstance(pool, QueuePool) or pool.checkedin() or pool.checkedout():
        return None
    original = type(pool)
    instrumented = _instrumented_class(original)
    borrower: Any = pool
    try:
        # recreate() builds ``self.__class__(...)``: borrow the instrumented class for the
        # call (the borrower has no tracker, so the hooked recreate attaches none).
        borrower.__class__ = instrumented
        try:
            fresh = borrower.recreate()
        finally:
            borrower.__class__ = original
    except Exception:  # a custom pool whose recreate() fails: swap it in place instead
        return None
    return fresh if type(fresh) is instrumented else None


def _set_class(pool: Pool, cls: type[Pool]) -> None:
    """``pool.__class__ = cls``, keeping the method lookups on it fast.

    Assigning ``__class__`` leaves the instance's attribute dict sharing the key table of
    the class it was created as, and CPython 3.11 only specialises a method lookup
    (``pool._do_get()``, ``pool._return_conn()``, ``pool._should_log_debug()``,
    ``pool.connect()``: several per checkout) on an instance whose dict shares its own
    class's key table; otherwise each stays a generic lookup (about 5,000 instructions per
    checkout+checkin measured). So the attributes are moved into a dict built by an
    instance of ``cls``: same keys, same values, ``cls``'s key table.

    Only for an asyncio pool: it is used from its event loop's thread alone, so nothing
    writes to its attributes while they move (instrument() runs on that thread). A
    thread-shared pool could have ``_overflow`` changed by another thread meanwhile, and
    that change would be lost: it keeps its dict, and the slower lookups.
    """
    if type(pool) is cls:
        return
    pool.__class__ = cls
    if not getattr(cls, "_is_asyncio", False):
        return
    try:
        donor = object.__new__(cls)
        for key, value in pool.__dict__.items():
            object.__setattr__(donor, key, value)
        pool.__dict__ = donor.__dict__
    except Exception:  # a pool class that does not allow it: it keeps the dict it has
        return


def attach(pool: Pool, tracker: PoolTracker) -> None:
    """Make ``pool`` report to ``tracker`` (idempotent: one set of hooks and listeners)."""
    if getattr(pool, "_poolwatch", None) is tracker:
        return
    _set_class(pool, _instrumented_class(type(pool)))
    pool._poolwatch = tracker  # type: ignore[attr-defined]
    tracker.pools.add(pool)
    creator = pool._invoke_creator
    if getattr(creator, "__wrapped__", None) is None:
        pool._invoke_creator = tracker.wrap_creator(creator)  # type: ignore[assignment]
    listeners.add(pool, tracker)


def detach(pool: Pool, tracker: PoolTracker) -> None:
    """Undo :func:`attach`: original class, original creator, none of our listeners."""
    if getattr(pool, "_poolwatch", None) is not tracker:
        return
    pool.__dict__.pop("_poolwatch", None)
    original = type(pool).__dict__.get("_poolwatch_original_class")
    if original is not None:
        _set_class(pool, original)
    tracker.pools.discard(pool)
    wrapped = getattr(pool._invoke_creator, "__wrapped__", None)
    if wrapped is not None:
        pool._invoke_creator = wrapped
    listeners.remove(pool, tracker)


def detach_all(tracker: PoolTracker) -> None:
    """Undo :func:`attach` on every pool ``tracker`` hooked and that is still alive: the
    engine's current pool and those ``dispose()`` replaced (connections may still be out
    on them)."""
    engine = tracker.engine
    pools = list(tracker.pools)
    if engine is not None and engine.pool not in pools:
        pools.append(engine.pool)
    for pool in pools:
        detach(pool, tracker)
