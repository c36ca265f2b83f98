"""The "Connection chain" dashboard: app pools -> PgBouncer -> PostgreSQL for one server.

Every tier is selected by the label ``pg_server`` (docs/dashboards.md): the app's pools, the
PgBouncer and the PostgreSQL server of one chain carry the same value (or none, for a single
server). The first row puts each tier's queue side by side, so the tier that is the
bottleneck is the one whose stat is not green.
"""

from __future__ import annotations

from typing import Any

from budget_rules import ALLOWED, BUDGET_USABLE, DIRECT, MAX_CLIENT, PGB_SERVER, THROUGH
from panels import (
    Panel,
    breakdown,
    count_stat,
    dashboard,
    query_variable,
    section,
    stat,
    steps,
    target,
    targets,
    timeseries,
)
from promql import PGB_REAL, capacity, quiet_as_zero, rate, sel, server_utilization, usable
from server_panels import connections_used

from poolwatch import metric_names as m
from poolwatch import thresholds as t

SERVER = 'pg_server=~"$pg_server"'
APP = f'{SERVER}, job=~"$job", pool=~"$pool"'
PGB = f"{SERVER}, {PGB_REAL}"
PGB_DB = f'{SERVER}, name!="pgbouncer"'
PER_POOL = "{{pool}}"
PER_PGB_POOL = "{{database}}/{{user}}"
SLOW, PGB_SLOW = t.POOL_CHECKOUT_SLOW, t.PGBOUNCER_WAIT_SLOW
WARN, CRIT = t.POSTGRES_CONNECTIONS_WARNING, t.POSTGRES_CONNECTIONS_CRITICAL


def _checkout_p95(by: str) -> str:
    buckets = rate(m.POOL_CHECKOUT_DURATION, APP, "_bucket")
    return f"histogram_quantile(0.95, sum by ({by}) ({buckets}))"


def bottleneck() -> list[Panel]:
    """One stat per tier's queue: the tier that is not green is the bottleneck."""
    waiting = f"sum({sel(m.POOL_WAITING, APP)})"
    lock_waits = quiet_as_zero(
        f"sum({sel(m.PG_LOCK_WAITING_SESSIONS, SERVER)})", SERVER, aggregated=True
    )
    return section(
        "Where is the wait? (app -> PgBouncer -> PostgreSQL)",
        count_stat(
            "App: callers waiting",
            "Callers queued for a connection in the app's pools "
            f"({t.POOL_EXHAUSTED.alert}). 0 while PgBouncer queues: the wait moved there.",
            waiting,
            "red",
        ),
        stat(
            "App: checkout wait p95",
            f"95th percentile checkout wait of the app's pools ({SLOW.alert}: above "
            f"{SLOW.value:g} s for {SLOW.for_}).",
            [target(_checkout_p95("le"), "")],
            "s",
            thresholds=steps((SLOW.value, "red")),
        ),
        count_stat(
            "PgBouncer: clients waiting",
            "Clients queued in PgBouncer for a server connection "
            f"({t.PGBOUNCER_CLIENTS_WAITING.alert}).",
            f"sum({sel(m.PGBOUNCER_POOLS_CLIENT_WAITING, PGB)})",
            "orange",
        ),
        stat(
            "PgBouncer: longest wait now",
            f"The oldest waiting client in PgBouncer ({PGB_SLOW.alert}: above "
            f"{PGB_SLOW.value:g} s for {PGB_SLOW.for_}).",
            [target(f"max({sel(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT, PGB)})", "")],
            "s",
            thresholds=steps((PGB_SLOW.value, "red")),
        ),
        connections_used(
            "stat",
            "PostgreSQL: connections used",
            f"Client sessions / usable connections ({WARN.alert}: {WARN.value:.0%} / "
            f"{CRIT.value:.0%}).",
            f"max({server_utilization(SERVER)})",
        ),
        count_stat(
            "PostgreSQL: lock waits",
            "Sessions waiting for a lock: a server-side wait that holds PgBouncer's server "
            f"connections ({t.POSTGRES_LOCK_WAITS.alert}).",
            lock_waits,
            "orange",
        ),
        across=6,
    )


def app_tier() -> list[Panel]:
    """The app's pools, summed over worker processes: checked out, capacity, waits."""
    return section(
        "1. App pools (poolwatch.instrument)",
        timeseries(
            "App: checked out vs capacity",
            "Connections lent out per pool against pool_size + max_overflow, summed over "
            "worker processes.",
            targets(
                (f"sum by (pool) ({sel(m.POOL_CHECKED_OUT, APP)})", f"checked out {PER_POOL}"),
                (f"sum by (pool) ({capacity(APP)})", f"capacity {PER_POOL}"),
            ),
            "short",
        ),
        timeseries(
            "App: callers waiting",
            "Callers waiting for a pooled connection, per pool.",
            [target(f"sum by (pool) ({sel(m.POOL_WAITING, APP)})", PER_POOL)],
            "short",
        ),
        timeseries(
            "App: checkout wait p95 per pool",
            f"95th percentile checkout wait per pool. Dashed: {SLOW.alert}.",
            [target(_checkout_p95("pool, le"), PER_POOL)],
            "s",
            thresholds=steps((SLOW.value, "red")),
        ),
        across=3,
    )


def pgbouncer_tier() -> list[Panel]:
    """PgBouncer's pools: clients active and waiting, the longest wait, server connections."""
    return section(
        "2. PgBouncer pools",
        timeseries(
            "PgBouncer: clients active / waiting",
            "Client connections per PgBouncer pool (database/user): active (cl_active) and "
            "queued for a server connection (cl_waiting).",
            targets(
                (sel(m.PGBOUNCER_POOLS_CLIENT_ACTIVE, PGB), f"active {PER_PGB_POOL}"),
                (sel(m.PGBOUNCER_POOLS_CLIENT_WAITING, PGB), f"waiting {PER_PGB_POOL}"),
            ),
            "short",
        ),
        timeseries(
            "PgBouncer: longest wait",
            f"The oldest waiting client per pool (maxwait + maxwait_us). Dashed: {PGB_SLOW.alert}.",
            [target(sel(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT, PGB), PER_PGB_POOL)],
            "s",
            thresholds=steps((PGB_SLOW.value, "red")),
        ),
        timeseries(
            "PgBouncer: server connections vs pool_size",
            "Server connections per pool, active (linked to a client) and idle, against the "
            "database's pool_size: active at pool_size means the pool is saturated "
            f"({t.PGBOUNCER_SERVER_POOL_SATURATED.alert}).",
            targets(
                (sel(m.PGBOUNCER_POOLS_SERVER_ACTIVE, PGB), f"active {PER_PGB_POOL}"),
                (sel(m.PGBOUNCER_POOLS_SERVER_IDLE, PGB), f"idle {PER_PGB_POOL}"),
                (sel(m.PGBOUNCER_DATABASES_POOL_SIZE, PGB_DB), "pool_size {{name}}"),
            ),
            "short",
        ),
        across=3,
    )


def postgres_tier() -> list[Panel]:
    """PostgreSQL's sessions, by state and by application, against the usable slots."""
    return section(
        "3. PostgreSQL sessions",
        timeseries(
            "PostgreSQL: sessions by state",
            "Client sessions by state against the usable connections (max_connections minus "
            "reserved). Behind PgBouncer in transaction mode most are 'idle' between "
            "transactions.",
            targets(
                (f"sum by (state) ({sel(m.PG_SESSIONS, SERVER)})", "{{state}}"),
                (f"min({usable(SERVER)})", "usable"),
            ),
            "short",
        ),
        breakdown(
            "PostgreSQL: sessions by application",
            "Client sessions by application_name: PgBouncer's server connections against the "
            "pools that connect directly.",
            sel(m.PG_SESSIONS, SERVER),
            "application_name",
        ),
    )


def budget() -> list[Panel]:
    """The three budgets of the chain (recording rules of alerts/budget.rules.yml)."""
    rec = f"{{{SERVER}}}"

    def ratio(title: str, description: str, used: str, limit: str) -> Panel:
        return stat(
            title,
            description,
            [target(f"{used}{rec} / on (pg_server) ({limit}{rec} > 0)", "{{pg_server}}")],
            "percentunit",
            thresholds=steps((0.9, "orange"), (1.001, "red")),
            kind="gauge",
            width=8,
        )

    return section(
        "Budget (needs alerts/budget.rules.yml)",
        ratio(
            "Direct pools / usable connections",
            "pool_size + max_overflow of the pools that connect directly, summed over workers, "
            f"/ the server's usable connections. Above 100%: {t.CONNECTION_BUDGET_EXCEEDED.alert}.",
            DIRECT,
            BUDGET_USABLE,
        ),
        ratio(
            "Pools through PgBouncer / max_client_conn",
            "pool_size + max_overflow of the pools instrumented with through_pgbouncer=True, "
            "summed over workers, / PgBouncer's max_client_conn. Above 100%: "
            f"{t.PGBOUNCER_CLIENT_BUDGET_EXCEEDED.alert}.",
            THROUGH,
            MAX_CLIENT,
        ),
        ratio(
            "PgBouncer + direct pools / usable connections",
            "What PgBouncer may open to the server (pool_size + reserve_pool per pool, capped "
            "by max_db_connections / max_user_connections) plus the direct pools, / the "
            f"server's usable connections. Above 100%: {t.PGBOUNCER_SERVER_BUDGET_EXCEEDED.alert}.",
            ALLOWED,
            BUDGET_USABLE,
        ),
        timeseries(
            "Budget per tier",
            "Each budget's demand against its ceiling, per server: direct pools and "
            "PgBouncer's server side against the usable connections, the pools through "
            "PgBouncer against max_client_conn.",
            targets(
                (f"{DIRECT}{rec}", "direct pools {{pg_server}}"),
                (f"{THROUGH}{rec}", "pools through PgBouncer {{pg_server}}"),
                (f"{MAX_CLIENT}{rec}", "max_client_conn {{pg_server}}"),
                (f"{PGB_SERVER}{rec}", "PgBouncer server side {{pg_server}}"),
                (f"{BUDGET_USABLE}{rec}", "usable on server {{pg_server}}"),
            ),
            "short",
            width=24,
        ),
    )


def chain_variables() -> list[dict[str, Any]]:
    """Server (pg_server), then the app's job and pool on that server."""
    size = m.POOL_CHECKED_OUT.name
    return [
        query_variable("pg_server", "Server", f"label_values({m.PG_UP.name}, pg_server)"),
        query_variable("job", "App job", f"label_values({size}{{{SERVER}}}, job)"),
        query_variable("pool", "Pool", f'label_values({size}{{{SERVER}, job=~"$job"}}, pool)'),
    ]


def chain_dashboard() -> dict[str, Any]:
    """The "Connection chain" dashboard for one server (label pg_server)."""
    return dashboard(
        "poolwatch-connection-chain",
        "Connection chain",
        "poolwatch: one server's chain, app pools -> PgBouncer -> PostgreSQL, side by side: "
        "the tier whose queue is not green is the bottleneck; and the chain's budgets.",
        chain_variables(),
        [*bottleneck(), *app_tier(), *pgbouncer_tier(), *postgres_tier(), *budget()],
        tags=("pgbouncer",),
    )
