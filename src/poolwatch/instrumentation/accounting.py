"""Checkout and checkin accounting: the one implementation, specialised per configuration.

Every checkout and checkin of the application runs through the two functions built here
(called by the pool hooks, hooks.py), so they are built once per tracker configuration
and close over what that configuration fixes, the way structlog's
``_make_filtering_bound_logger`` builds its methods: the stats objects, the lock (None for
an asyncio pool: one event-loop thread), the observers, the fork check, the leak
threshold, how a holder is captured and whether routes are tracked (RouteMiddleware).
A branch on a closure constant costs two bytecodes; the attribute reads and the extra
call it replaces cost more. The tracker rebuilds them (:meth:`PoolTracker.specialise`)
whenever one of those inputs changes: an observer added or removed, a fork check armed or
cleared, fresh stats after fork, the first RouteMiddleware built.
"""

from __future__ import annotations

import sys
from asyncio import get_running_loop
from bisect import bisect_left
from collections.abc import Callable
from threading import current_thread
from time import time
from typing import TYPE_CHECKING, Any

from poolwatch.instrumentation.context import route_tracking
from poolwatch.instrumentation.exemplars import trace_labels
from poolwatch.instrumentation.routes import current_key as route_key

if TYPE_CHECKING:
    from poolwatch.instrumentation.tracker import PoolTracker

# (record, started, now) -> None: a caller asked at ``started`` and got ``record`` at ``now``
CheckoutFn = Callable[[Any, float, float], None]
# (record, now) -> None: ``record`` came back (or left the pool) at ``now``
CheckinFn = Callable[[Any, float], None]

# Checkouts at least this slow carry the active sampled span as an exemplar. (Above the
# first histogram bucket's bound: only a checkout past that bucket looks for a span.)
EXEMPLAR_MIN_SECONDS = 0.001
_modules = sys.modules


def specialise(tracker: PoolTracker) -> tuple[CheckoutFn, CheckinFn]:
    """Build ``(checkout_succeeded, checked_in)`` for ``tracker``'s configuration now."""
    stats = tracker.stats
    lock = stats.lock if tracker.threaded else None
    observers = tuple(tracker.observers)
    fork_check = tracker.fork_check
    capture_sites = tracker.leak_threshold is not None  # leak detection on
    leak_threshold = tracker.leak_threshold if tracker.leak_threshold is not None else 0.0
    capture = tracker.capture
    running_tasks = tracker.running_tasks
    active = stats.active
    leaked = stats.leaked
    checkout_hist = stats.checkout_duration
    checkout_counts = checkout_hist.counts
    checkout_bounds = checkout_hist.bounds
    checkout_first = checkout_hist.first
    checkout_exemplars = checkout_hist.exemplars
    hold_hist = stats.hold_duration
    hold_counts = hold_hist.counts
    hold_bounds = hold_hist.bounds
    hold_first = hold_hist.first
    report_leak = tracker.report_leak
    internal_error = tracker.internal_error
    exemplar_min = EXEMPLAR_MIN_SECONDS
    # Per-route series, with RouteMiddleware (routes.py): the table's dict read directly.
    per_route = route_tracking.enabled
    route_table = stats.routes
    route_entry = route_table.by_route.get
    add_route = route_table.add

    def checkout_succeeded(record: Any, started: float, now: float) -> None:
        waited = now - started
        try:
            if fork_check is not None:
                fork_check(tracker)
            if lock is not None:
                lock.acquire()
            try:
                if waited <= checkout_first:
                    checkout_counts[0] += 1
                else:
                    index = bisect_left(checkout_bounds, waited)
                    checkout_counts[index] += 1
                    # A slow checkout carries the active sampled span as an exemplar (a
                    # sub-millisecond one is not worth the context lookup, nor is any
                    # without OpenTelemetry's trace API loaded: no span to look for).
                    if (
                        waited >= exemplar_min
                        and "opentelemetry.trace" in _modules
                        and (exemplar := trace_labels()) is not None
                    ):
                        checkout_exemplars[index] = (exemplar, waited, time())
                checkout_hist.sum += waited
                active[record] = now
                if per_route:
                    route, key = route_key()
                    entry = route_entry(key)
                    if entry is None:
                        entry = add_route(key)
                    entry.checkout.observe(waited)
                    # checkin finds the entry here (routes.RECORD_ATTR, spelled out: a
                    # store to a constant name is specialised); leak reports read the route
                    record._poolwatch_routestats = entry
                    record._poolwatch_route = route
                if capture_sites:
                    # Who holds it: the running task (read from asyncio's own table before
                    # Python 3.12: a frame less than asyncio.current_task()), else the thread.
                    try:
                        holder = (
                            running_tasks.get(get_running_loop())
                            if running_tasks is not None
                            else capture()
                        )
                    except RuntimeError:  # an asyncio pool used outside its event loop
                        holder = None
                    if holder is None:  # no task: a loop callback, or no loop at all
                        holder = current_thread()
                    record._poolwatch_site = holder
                    if leaked:
                        # a record is reused: a leak flag left by a racing scan must not
                        # hide this checkout's own leak
                        leaked.discard(record)
            finally:
                if lock is not None:
                    lock.release()
            if observers:
                for observer in observers:
                    observer("checkout", waited)
        except Exception:
            internal_error()

    def checked_in(record: Any, now: float) -> None:
        try:
            if lock is not None:
                lock.acquire()
            try:
                acquired = active.pop(record, None)
                if acquired is None:
                    # e.g. _checkin_failed after a failed reconnect: there was no checkout
                    return
                held = now - acquired
                index = 0 if held <= hold_first else bisect_left(hold_bounds, held)
                hold_counts[index] += 1
                hold_hist.sum += held
                if per_route:
                    # (None: checked out before the first RouteMiddleware was built)
                    entry = getattr(record, "_poolwatch_routestats", None)
                    if entry is not None:
                        entry.hold.observe(held)
            finally:
                if lock is not None:
                    lock.release()
            if capture_sites:
                if leaked and record in leaked:
                    leaked.discard(record)  # already reported by the scan
                elif held > leak_threshold:
                    report_leak(site_of(record), held, returned=True)
                record._poolwatch_site = None  # let go of the holder
            if observers:
                for observer in observers:
                    observer("hold", held)
        except Exception:
            internal_error()

    return checkout_succeeded, checked_in


# Who checked a connection out (task, thread or callsite) and the route it served. (The
# route, not the ASGI scope: the scope reaches the request's session through
# request.state, and keeping it would keep a leaked connection from being collected.)
Site = tuple[object, "str | None"]


def site_of(record: Any) -> Site | None:
    """Who checked ``record`` out and for which request (with leak detection on).

    Kept on the pool's connection record itself (SQLAlchemy's records have a
    ``__dict__``): an attribute store costs a third of a dict entry added and removed. The
    holder and the route are two attributes, not one tuple: without RouteMiddleware a
    checkout stores just the holder, and allocates nothing. (With it, the route is stored
    at every checkout, leak detection or not: the per-route series need it anyway.)
    """
    holder: object | None = getattr(record, "_poolwatch_site", None)
    if holder is None:
        return None
    route = getattr(record, "_poolwatch_route", None) if route_tracking.enabled else None
    return holder, route
