"""The "SQLAlchemy pool" dashboard (metrics of poolwatch.instrument), one function per row."""

from __future__ import annotations

from typing import Any

from panels import (
    Panel,
    chained_variables,
    count_stat,
    dashboard,
    heatmap,
    section,
    settings_table,
    stat,
    steps,
    target,
    targets,
    timeseries,
)
from promql import (
    POOL_SEL,
    busiest_worker_utilization,
    capacity,
    increase,
    rate,
    sel,
    usable,
    utilization,
)
from route_panels import by_route
from server_panels import pool_sessions

from poolwatch import metric_names as m
from poolwatch import thresholds as t

PER = "{{pool}} {{instance}}"
NEAR = t.POOL_NEAR_CAPACITY
UTILIZATION = utilization(POOL_SEL)
BUSIEST = busiest_worker_utilization(POOL_SEL)


def quantiles(spec: m.MetricSpec) -> list[dict[str, Any]]:
    """p50/p95/p99 of a histogram per pool, over Grafana's rate interval."""
    buckets = rate(spec, POOL_SEL, "_bucket")
    return targets(
        *[
            (
                f"histogram_quantile({q}, sum by (job, instance, pool, le) ({buckets}))",
                f"p{int(q * 100)} {PER}",
            )
            for q in (0.5, 0.95, 0.99)
        ]
    )


def overview() -> list[Panel]:
    """Four stats: the fullest pool, waiting callers, timeouts and leaks of the last hour."""
    return section(
        "Overview",
        stat(
            "Highest pool utilization",
            "Checked out / (pool_size + max_overflow) in the busiest worker process of the "
            "fullest selected pool (several workers: one full pool shows even when the sums "
            f"look half empty). {NEAR.alert} fires at {NEAR.value:.0%} for {NEAR.for_}; "
            f"{t.POOL_EXHAUSTED.alert} at 100% with callers waiting.",
            [target(f"max({BUSIEST})", "utilization")],
            "percentunit",
            thresholds=steps((NEAR.value, "orange"), (1, "red")),
        ),
        count_stat(
            "Callers waiting",
            "Callers queued for a connection now, all selected pools. Anything above 0 "
            f"means a pool is at capacity ({t.POOL_EXHAUSTED.alert}).",
            f"sum({sel(m.POOL_WAITING, POOL_SEL)})",
            "red",
            "waiting",
        ),
        count_stat(
            "Pool timeouts (1h)",
            "Checkouts that raised TimeoutError after pool_timeout in the last hour "
            f"({t.POOL_TIMEOUTS.alert} fires on any; rounded: increase() extrapolates).",
            f"round(sum({increase(m.POOL_TIMEOUTS, POOL_SEL, '[1h]')}))",
            "red",
        ),
        count_stat(
            "Leaks (1h)",
            "Checkouts held past the leak threshold in the last hour (rounded); the "
            f"application log names where each was checked out ({t.POOL_CONNECTION_LEAK.alert}).",
            f"round(sum({increase(m.POOL_LEAKS, POOL_SEL, '[1h]')}))",
            "orange",
        ),
    )


def _per_pool(title: str, description: str, spec: m.MetricSpec, **look: Any) -> Panel:
    """One gauge per selected pool, a third of the row wide."""
    return timeseries(
        title, description, [target(sel(spec, POOL_SEL), PER)], "short", width=8, **look
    )


def connections() -> list[Panel]:
    """Checked out against capacity, utilization, idle, overflow and waiting callers."""
    return section(
        "Connections",
        timeseries(
            "Checked out vs capacity",
            "Connections lent out now against pool_size and pool_size + max_overflow "
            "(the most the pool will ever open).",
            targets(
                (sel(m.POOL_CHECKED_OUT, POOL_SEL), f"checked out {PER}"),
                (sel(m.POOL_SIZE, POOL_SEL), f"pool_size {PER}"),
                (capacity(POOL_SEL), f"size + max_overflow {PER}"),
            ),
            "short",
        ),
        timeseries(
            "Utilization",
            "Checked out / (pool_size + max_overflow): all workers together, and the busiest "
            f"worker process (what {NEAR.alert} watches). Dashed lines: "
            f"{NEAR.alert} ({NEAR.value:.0%} for {NEAR.for_}) and exhaustion (100%).",
            targets((UTILIZATION, f"all workers {PER}"), (BUSIEST, f"busiest worker {PER}")),
            "percentunit",
            thresholds=steps((NEAR.value, "orange"), (1, "red")),
        ),
        _per_pool(
            "Idle connections",
            "Connections open and idle in the pool, ready to be lent.",
            m.POOL_IDLE,
        ),
        _per_pool(
            "Overflow connections",
            "Connections open beyond pool_size now (closed again when returned).",
            m.POOL_OVERFLOW,
        ),
        _per_pool(
            "Waiting callers",
            "Callers queued for a connection because the pool is at capacity. Above 0 "
            f"for {t.POOL_EXHAUSTED.for_} with the pool full: {t.POOL_EXHAUSTED.alert}.",
            m.POOL_WAITING,
            thresholds=steps((1, "red")),
        ),
    )


def latency() -> list[Panel]:
    """Checkout wait, hold time and connect time quantiles, and the checkout heatmap."""
    slow = t.POOL_CHECKOUT_SLOW
    return section(
        "Latency",
        timeseries(
            "Checkout wait p50 / p95 / p99",
            "Time from asking the pool for a connection to holding one (queue wait + "
            f"connect + pre-ping). {slow.alert}: p95 > {slow.value} s for {slow.for_}.",
            quantiles(m.POOL_CHECKOUT_DURATION),
            "s",
            thresholds=steps((slow.value, "red")),
        ),
        heatmap(
            "Checkout wait distribution",
            "Checkouts per wait-time bucket, all selected pools. A band near pool_timeout "
            "means callers time out.",
            f"sum by (le) ({increase(m.POOL_CHECKOUT_DURATION, POOL_SEL, suffix='_bucket')})",
            "s",
        ),
        timeseries(
            "Hold time p50 / p95 / p99",
            "How long the application keeps a connection, checkout to checkin. Long holds "
            "starve the pool: keep transactions short, never await other I/O inside one.",
            quantiles(m.POOL_HOLD_DURATION),
            "s",
        ),
        timeseries(
            "New connection time p50 / p95 / p99",
            "Time to open a new DBAPI connection (TCP + TLS + authentication).",
            quantiles(m.POOL_CONNECT_DURATION),
            "s",
        ),
    )


def _rates(title: str, description: str, *counters: tuple[m.MetricSpec, str]) -> Panel:
    """Per-second rates of counters, one query each (legend: what, pool, instance)."""
    queries = targets(*[(rate(spec, POOL_SEL), f"{what} {PER}") for spec, what in counters])
    return timeseries(title, description, queries, "ops")


def throughput() -> list[Panel]:
    """Checkouts, checkins, timeouts, connect errors, invalidations, leaks, oldest checkout."""
    lagging, burst, leak = (
        t.POOL_CHECKINS_LAGGING,
        t.POOL_INVALIDATION_BURST,
        t.POOL_CONNECTION_LEAK,
    )
    return section(
        "Throughput and errors",
        _rates(
            "Checkouts vs checkins",
            f"Connections lent and returned per second. Checkins below checkouts for "
            f"{lagging.for_} with an old checkout: {lagging.alert}.",
            (m.POOL_CHECKOUTS, "checkouts"),
            (m.POOL_CHECKINS, "checkins"),
        ),
        _rates(
            "Timeouts and connect errors",
            f"Checkouts that gave up after pool_timeout ({t.POOL_TIMEOUTS.alert}) and failed "
            f"attempts to open a connection ({t.POOL_CONNECT_ERRORS.alert}), per second.",
            (m.POOL_TIMEOUTS, "timeouts"),
            (m.POOL_CONNECT_ERRORS, "connect errors"),
        ),
        timeseries(
            "Invalidations by reason",
            "Connections invalidated per 5 minutes, by reason "
            f"({', '.join(m.INVALIDATION_REASONS)}). "
            f"More than {burst.number} in {burst.window}: {burst.alert}.",
            [
                target(
                    "sum by (pool, instance, reason) "
                    f"({increase(m.POOL_INVALIDATIONS, POOL_SEL, f'[{burst.window}]')})",
                    "{{reason}} {{pool}} {{instance}}",
                )
            ],
            "short",
            thresholds=steps((burst.value, "orange")),
            width=8,
        ),
        timeseries(
            "Leaks",
            f"Checkouts held past the leak threshold, per 10 minutes ({leak.alert} fires on any).",
            [target(increase(m.POOL_LEAKS, POOL_SEL, f"[{leak.window}]"), PER)],
            "short",
            thresholds=steps((1, "red")),
            width=8,
        ),
        timeseries(
            "Oldest checkout",
            "Age of the longest-held connection now. A leak grows here without bound; "
            f"{lagging.alert} needs it above {lagging.number} s.",
            [target(sel(m.POOL_OLDEST_CHECKOUT_SECONDS, POOL_SEL), PER)],
            "s",
            thresholds=steps((lagging.value, "orange")),
            width=8,
        ),
    )


def budget() -> list[Panel]:
    """Every pool's capacity against the usable connections of its server (by pg_server)."""
    bounced = f"({sel(m.POOL_THROUGH_PGBOUNCER)} == 1)"
    pools = f"sum by (pg_server) (({capacity('')}) unless {bounced})"
    server = f"min by (pg_server) ({usable()})"
    return section(
        "Connection budget (pools connecting directly, all workers)",
        timeseries(
            "Connection budget per server",
            "pool_size + max_overflow summed over every pool of every worker process, "
            "against the server's max_connections minus reserved slots (by the pg_server "
            "label; one server when it is unset). Above the line: "
            f"{t.CONNECTION_BUDGET_EXCEEDED.alert}. Pools instrumented with "
            "through_pgbouncer=True are budgeted on the Connection chain dashboard instead. "
            "Not filtered by the variables above.",
            targets(
                (pools, "pools may open {{pg_server}}"), (server, "usable on server {{pg_server}}")
            ),
            "short",
            width=16,
        ),
        stat(
            "Budget used",
            "Sum of pool capacities / usable server connections. Above 100% the pools can "
            "open more connections than the server accepts.",
            [target(f"{pools} / on (pg_server) {server}", "{{pg_server}}")],
            "percentunit",
            thresholds=steps((0.9, "orange"), (1.001, "red")),
            kind="gauge",
            width=8,
            height=8,
        ),
    )


def configuration() -> list[Panel]:
    """pool_size, max_overflow and pool_timeout of each pool, as a table."""
    return section(
        "Configuration",
        settings_table(
            "Pool configuration",
            "pool_size, max_overflow and pool_timeout of each selected pool, as configured.",
            POOL_SEL,
            {
                "pool_size": m.POOL_SIZE,
                "max_overflow": m.POOL_MAX_OVERFLOW,
                "pool_timeout": m.POOL_TIMEOUT_SECONDS,
            },
        ),
    )


def pool_dashboard() -> dict[str, Any]:
    """The "SQLAlchemy pool" dashboard (metrics of poolwatch.instrument)."""
    name = m.POOL_CHECKED_OUT.name
    return dashboard(
        "poolwatch-sqlalchemy-pool",
        "SQLAlchemy pool",
        "poolwatch: SQLAlchemy connection pools (poolwatch.instrument) — capacity, waits, "
        "leaks, errors and the connection budget.",
        chained_variables(name, "pool", "Pool", name),
        [
            *overview(),
            *connections(),
            *latency(),
            *by_route(),
            *throughput(),
            *budget(),
            *configuration(),
            *pool_sessions(),
        ],
    )
