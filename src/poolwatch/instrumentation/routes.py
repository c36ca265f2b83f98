"""Per-route pool statistics (with :class:`poolwatch.RouteMiddleware`): a bounded table.

Each pool keeps, per route template (``"GET /items/{item_id}"``, never the raw path), a
checkout-wait histogram and a hold histogram. The table is bounded: the first
``route_limit`` templates seen get their own series, later ones fold into ``other``.
Three buckets are always available beside the templates and cannot collide with one
(a template is ``"METHOD /path"``):

* ``none``: a checkout outside any request (start-up, background tasks, a worker thread);
* ``unmatched``: inside a request the router had not matched (yet): a 404, or a
  middleware that checks out before routing;
* ``other``: routes beyond the limit.

The accounting (accounting.py) finds a route's :class:`RouteStats` with one dict lookup
and keeps it on the connection record, so the checkin needs no lookup; the number of
connections each route holds right now is counted at scrape time from the records lent
out (:meth:`RouteTable.snapshot`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from poolwatch.instrumentation.context import current_request
from poolwatch.instrumentation.histogram import Histogram

NO_REQUEST = "none"
UNMATCHED = "unmatched"
OTHER = "other"
DEFAULT_ROUTE_LIMIT = 20

# Attribute of a checked-out connection record holding its RouteStats (set at checkout).
RECORD_ATTR = "_poolwatch_routestats"


class RouteStats:
    """Checkout-wait and hold histograms of one ``route`` label value of one pool."""

    __slots__ = ("checkout", "hold", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self.checkout = Histogram()
        self.hold = Histogram()


@dataclass(frozen=True)
class RouteSnapshot:
    """A copy of one route's series, and how many connections it holds right now."""

    route: str
    checkout_duration: Histogram
    hold_duration: Histogram
    checked_out: int


class RouteTable:
    """Route key -> :class:`RouteStats` for one pool, at most ``limit`` templates.

    ``by_route`` maps every key seen (templates past the limit included, all to the one
    ``other`` entry: templates are bounded by the application's routes, never by its
    traffic) so the hot path is one ``dict.get``. Writers hold the pool's stats lock when
    the pool is shared by threads (as for every other PoolStats field).
    """

    __slots__ = ("_templates", "by_route", "limit", "series")

    def __init__(self, limit: int = DEFAULT_ROUTE_LIMIT) -> None:
        self.limit = limit
        self.by_route: dict[str, RouteStats] = {}
        self.series: list[RouteStats] = []  # distinct entries, in order of appearance
        self._templates = 0

    def add(self, key: str) -> RouteStats:
        """The entry for ``key`` (a template, NO_REQUEST or UNMATCHED), creating it."""
        found = self.by_route.get(key)
        if found is not None:
            return found
        label = key
        if key not in (NO_REQUEST, UNMATCHED):
            if self._templates >= self.limit:
                label = OTHER
            else:
                self._templates += 1
        entry = self.by_route.get(label) if label == OTHER else None
        if entry is None:
            entry = RouteStats(label)
            self.series.append(entry)
        self.by_route[key] = entry
        if label == OTHER:
            self.by_route[OTHER] = entry
        return entry

    def snapshot(self, checked_out: Iterable[Any]) -> tuple[RouteSnapshot, ...]:
        """Copies of every series, with the connections each holds among ``checked_out``
        (the pool's records lent out now). Called under the stats lock."""
        series = list(self.series)  # one C-level copy: safe against an asyncio writer
        if not series:
            return ()
        held: dict[str, int] = {}
        for record in checked_out:
            entry = getattr(record, RECORD_ATTR, None)
            if entry is not None:
                held[entry.route] = held.get(entry.route, 0) + 1
        return tuple(
            RouteSnapshot(
                entry.route, entry.checkout.copy(), entry.hold.copy(), held.get(entry.route, 0)
            )
            for entry in series
        )


def current_key() -> tuple[str | None, str]:
    """``(route template or None, table key)`` of the code running now: ``None`` and
    NO_REQUEST outside a request, ``None`` and UNMATCHED before the router has matched."""
    request = current_request.get()
    if request is None:
        return None, NO_REQUEST
    route = request.route if request.route is not None else request.match()
    return route, UNMATCHED if route is None else route
