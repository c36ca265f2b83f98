"""The pool dashboard's "By route" row: per-route series of poolwatch.RouteMiddleware.

Which endpoint holds connections now, which holds them longest and which waits most, each
one query over ``sqlalchemy_pool_route_*`` (summed over workers, top 10 routes).
"""

from __future__ import annotations

from panels import Panel, row, targets, timeseries
from promql import POOL_SEL, rate, sel

from poolwatch import metric_names as m

TOP = 10
ROUTE = "{{route}} ({{pool}})"


def _route_quantile(spec: m.MetricSpec, q: float) -> str:
    buckets = rate(spec, POOL_SEL, "_bucket")
    return f"topk({TOP}, histogram_quantile({q}, sum by (pool, route, le) ({buckets})))"


def by_route() -> list[Panel]:
    """Connections held now, connection time, hold p95 and checkout-wait p95, by route."""
    held = sel(m.POOL_ROUTE_CHECKED_OUT, POOL_SEL)
    hold_rate = rate(m.POOL_ROUTE_HOLD_DURATION, POOL_SEL, "_sum")
    note = (
        " Needs poolwatch.RouteMiddleware; route is the template (GET /items/{item_id}), "
        '"none" outside any request, "unmatched" before routing, "other" past route_limit.'
    )
    return [
        row("By route"),
        timeseries(
            f"Connections held by route (top {TOP})",
            "Connections lent out now, by the route that checked them out, all workers. "
            "Mid-incident: the route at the top holds the pool." + note,
            targets((f"topk({TOP}, sum by (pool, route) ({held}))", ROUTE)),
            "short",
        ),
        timeseries(
            f"Connection time by route (top {TOP})",
            "Seconds of connection use per second, by route: the average number of "
            "connections each route keeps busy (its checkouts x their hold time)." + note,
            targets((f"topk({TOP}, sum by (pool, route) ({hold_rate}))", ROUTE)),
            "short",
        ),
        timeseries(
            f"Hold time p95 by route (top {TOP})",
            "How long each route keeps a connection, checkout to checkin (p95)." + note,
            targets((_route_quantile(m.POOL_ROUTE_HOLD_DURATION, 0.95), ROUTE)),
            "s",
        ),
        timeseries(
            f"Checkout wait p95 by route (top {TOP})",
            "How long each route waits for a connection (p95, failed attempts included): "
            "the routes that suffer when the pool is full." + note,
            targets((_route_quantile(m.POOL_ROUTE_CHECKOUT_DURATION, 0.95), ROUTE)),
            "s",
        ),
    ]
