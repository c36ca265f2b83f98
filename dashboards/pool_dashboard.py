"""The "SQLAlchemy pool" dashboard (metrics of poolwatch.instrument), one function per row."""

from __future__ import annotations

from typing import Any

from panels import (
    dashboard,
    heatmap,
    query_variable,
    row,
    stat,
    steps,
    table,
    target,
    targets,
    timeseries,
)
from promql import POOL_SEL, capacity, sel, usable

from poolwatch import metric_names as m
from poolwatch import thresholds as t

Panel = dict[str, Any]
PER = "{{pool}} {{instance}}"
RATE = "[$__rate_interval]"
NEAR = t.POOL_NEAR_CAPACITY
UTILIZATION = f"{sel(m.POOL_CHECKED_OUT, POOL_SEL)} / ({capacity(POOL_SEL)})"


def _rate(spec: m.MetricSpec, window: str = RATE) -> str:
    return f"rate({sel(spec, POOL_SEL)}{window})"


def _increase(spec: m.MetricSpec, window: str) -> str:
    return f"increase({sel(spec, POOL_SEL)}[{window}])"


def quantiles(spec: m.MetricSpec) -> list[dict[str, Any]]:
    """p50/p95/p99 of a histogram per pool, over Grafana's rate interval."""
    buckets = sel(spec, POOL_SEL, "_bucket")
    return targets(
        *[
            (
                f"histogram_quantile({q}, sum by (job, instance, pool, le) "
                f"(rate({buckets}{RATE})))",
                f"p{int(q * 100)} {PER}",
            )
            for q in (0.5, 0.95, 0.99)
        ]
    )


def overview() -> list[Panel]:
    """Four stats: the fullest pool, waiting callers, timeouts and leaks of the last hour."""
    return [
        row("Overview"),
        stat(
            "Highest pool utilization",
            "Checked out / (pool_size + max_overflow), the fullest selected pool. "
            f"{NEAR.alert} fires at {NEAR.value:.0%} for {NEAR.for_}; "
            f"{t.POOL_EXHAUSTED.alert} at 100% with callers waiting.",
            [target(f"max({UTILIZATION})", "utilization")],
            "percentunit",
            thresholds=steps((NEAR.value, "orange"), (1, "red")),
        ),
        stat(
            "Callers waiting",
            "Callers queued for a connection now, all selected pools. Anything above 0 "
            f"means a pool is at capacity ({t.POOL_EXHAUSTED.alert}).",
            [target(f"sum({sel(m.POOL_WAITING, POOL_SEL)})", "waiting")],
            "short",
            thresholds=steps((1, "red")),
        ),
        stat(
            "Pool timeouts (1h)",
            "Checkouts that raised TimeoutError after pool_timeout in the last hour "
            f"({t.POOL_TIMEOUTS.alert} fires on any).",
            [target(f"sum({_increase(m.POOL_TIMEOUTS, '1h')})", "")],
            "short",
            thresholds=steps((1, "red")),
        ),
        stat(
            "Leaks (1h)",
            "Checkouts held past the leak threshold in the last hour; the application log "
            f"names where each was checked out ({t.POOL_CONNECTION_LEAK.alert}).",
            [target(f"sum({_increase(m.POOL_LEAKS, '1h')})", "")],
            "short",
            thresholds=steps((1, "orange")),
        ),
    ]


def connections() -> list[Panel]:
    """Checked out against capacity, utilization, idle, overflow and waiting callers."""
    return [
        row("Connections"),
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
            "Checked out / (pool_size + max_overflow). Dashed lines: "
            f"{NEAR.alert} ({NEAR.value:.0%} for {NEAR.for_}) and exhaustion (100%).",
            [target(UTILIZATION, PER)],
            "percentunit",
            thresholds=steps((NEAR.value, "orange"), (1, "red")),
        ),
        timeseries(
            "Idle connections",
            "Connections open and idle in the pool, ready to be lent.",
            [target(sel(m.POOL_IDLE, POOL_SEL), PER)],
            "short",
            width=8,
        ),
        timeseries(
            "Overflow connections",
            "Connections open beyond pool_size now (closed again when returned).",
            [target(sel(m.POOL_OVERFLOW, POOL_SEL), PER)],
            "short",
            width=8,
        ),
        timeseries(
            "Waiting callers",
            "Callers queued for a connection because the pool is at capacity. Above 0 "
            f"for {t.POOL_EXHAUSTED.for_} with the pool full: {t.POOL_EXHAUSTED.alert}.",
            [target(sel(m.POOL_WAITING, POOL_SEL), PER)],
            "short",
            thresholds=steps((1, "red")),
            width=8,
        ),
    ]


def latency() -> list[Panel]:
    """Checkout wait, hold time and connect time quantiles, and the checkout heatmap."""
    slow = t.POOL_CHECKOUT_SLOW
    return [
        row("Latency"),
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
            f"sum by (le) (increase({sel(m.POOL_CHECKOUT_DURATION, POOL_SEL, '_bucket')}{RATE}))",
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
    ]


def throughput() -> list[Panel]:
    """Checkouts, checkins, timeouts, connect errors, invalidations, leaks, oldest checkout."""
    lagging, burst, leak = (
        t.POOL_CHECKINS_LAGGING,
        t.POOL_INVALIDATION_BURST,
        t.POOL_CONNECTION_LEAK,
    )
    return [
        row("Throughput and errors"),
        timeseries(
            "Checkouts vs checkins",
            f"Connections lent and returned per second. Checkins below checkouts for "
            f"{lagging.for_} with an old checkout: {lagging.alert}.",
            targets(
                (_rate(m.POOL_CHECKOUTS), f"checkouts {PER}"),
                (_rate(m.POOL_CHECKINS), f"checkins {PER}"),
            ),
            "ops",
        ),
        timeseries(
            "Timeouts and connect errors",
            f"Checkouts that gave up after pool_timeout ({t.POOL_TIMEOUTS.alert}) and failed "
            f"attempts to open a connection ({t.POOL_CONNECT_ERRORS.alert}), per second.",
            targets(
                (_rate(m.POOL_TIMEOUTS), f"timeouts {PER}"),
                (_rate(m.POOL_CONNECT_ERRORS), f"connect errors {PER}"),
            ),
            "ops",
        ),
        timeseries(
            "Invalidations by reason",
            "Connections invalidated per 5 minutes (pre_ping, disconnect, soft, explicit). "
            f"More than {burst.number} in {burst.window}: {burst.alert}.",
            [
                target(
                    "sum by (pool, instance, reason) "
                    f"({_increase(m.POOL_INVALIDATIONS, str(burst.window))})",
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
            [target(_increase(m.POOL_LEAKS, str(leak.window)), PER)],
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
    ]


def budget() -> list[Panel]:
    """Every pool's capacity against the usable connections of its server (by pg_server)."""
    pools = f"sum by (pg_server) ({capacity('')})"
    server = f"min by (pg_server) ({usable()})"
    return [
        row("Connection budget (all pools, all workers)"),
        timeseries(
            "Connection budget per server",
            "pool_size + max_overflow summed over every pool of every worker process, "
            "against the server's max_connections minus reserved slots (by the pg_server "
            "label; one server when it is unset). Above the line: "
            f"{t.CONNECTION_BUDGET_EXCEEDED.alert}. Not filtered by the variables above.",
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
    ]


def configuration() -> list[Panel]:
    """pool_size, max_overflow and pool_timeout of each pool, as a table."""
    return [
        row("Configuration"),
        table(
            "Pool configuration",
            "pool_size, max_overflow and pool_timeout of each selected pool, as configured.",
            targets(
                (sel(m.POOL_SIZE, POOL_SEL), "pool_size"),
                (sel(m.POOL_MAX_OVERFLOW, POOL_SEL), "max_overflow"),
                (sel(m.POOL_TIMEOUT_SECONDS, POOL_SEL), "pool_timeout"),
            ),
        ),
    ]


def pool_dashboard() -> dict[str, Any]:
    """The "SQLAlchemy pool" dashboard (metrics of poolwatch.instrument)."""
    name = m.POOL_CHECKED_OUT.name
    return dashboard(
        "poolwatch-sqlalchemy-pool",
        "SQLAlchemy pool",
        "poolwatch: SQLAlchemy connection pools (poolwatch.instrument) — capacity, waits, "
        "leaks, errors and the connection budget.",
        [
            query_variable("job", "Job", f"label_values({name}, job)"),
            query_variable(
                "instance", "Instance", f'label_values({name}{{job=~"$job"}}, instance)'
            ),
            query_variable(
                "pool",
                "Pool",
                f'label_values({name}{{job=~"$job", instance=~"$instance"}}, pool)',
            ),
        ],
        [*overview(), *connections(), *latency(), *throughput(), *budget(), *configuration()],
    )
