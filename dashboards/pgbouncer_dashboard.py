"""The "PgBouncer" dashboard (poolwatch-exporter watching PgBouncer), one function per row."""

from __future__ import annotations

from typing import Any

from panels import (
    Panel,
    chained_variables,
    count_stat,
    dashboard,
    query_variable,
    section,
    settings_table,
    stat,
    steps,
    target,
    targets,
    timeseries,
    up_down,
)
from promql import PGB_REAL, rate, sel

from poolwatch import metric_names as m
from poolwatch import thresholds as t

PGB_SEL = 'job=~"$job", instance=~"$instance"'
# SHOW POOLS and SHOW STATS call PgBouncer's database `database`, SHOW DATABASES `name`.
POOLS_SEL = f'{PGB_SEL}, database=~"$database", {PGB_REAL}'
DATABASES_SEL = f'{PGB_SEL}, name=~"$database", name!="pgbouncer"'
PER_POOL = "{{database}}/{{user}} {{instance}}"
PER_DB = "{{name}} {{instance}}"
SLOW, NEAR = t.PGBOUNCER_WAIT_SLOW, t.PGBOUNCER_CLIENT_CONNECTIONS
CLIENTS_USED = (
    f"{sel(m.PGBOUNCER_USED_CLIENTS, PGB_SEL)} / "
    f"({sel(m.PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS, PGB_SEL)} > 0)"
)


def queue_wait(selector: str) -> str:
    """Mean time a transaction waited for a server connection, per database."""
    wait = rate(m.PGBOUNCER_STATS_CLIENT_WAIT, selector)
    xacts = rate(m.PGBOUNCER_STATS_TRANSACTIONS, selector)
    return f"{wait} / ({xacts} > 0)"


def overview() -> list[Panel]:
    """Reachability, clients waiting, the longest wait, client connections used."""
    down = t.PGBOUNCER_DOWN
    return section(
        "Overview",
        stat(
            "PgBouncer reachable",
            "pgbouncer_up: 1 when the exporter's last read of the admin console succeeded "
            f"({down.alert} after {down.for_} at 0 or absent).",
            [target(f"min({sel(m.PGBOUNCER_UP, PGB_SEL)})", "")],
            "none",
            **up_down(),
        ),
        count_stat(
            "Clients waiting now",
            "Clients queued in PgBouncer for a server connection, all selected pools "
            f"({t.PGBOUNCER_CLIENTS_WAITING.alert}: above 0 for "
            f"{t.PGBOUNCER_CLIENTS_WAITING.for_}).",
            f"sum({sel(m.PGBOUNCER_POOLS_CLIENT_WAITING, POOLS_SEL)})",
            "orange",
        ),
        stat(
            "Longest wait now",
            "The oldest waiting client of any selected pool (maxwait + maxwait_us). "
            f"{SLOW.alert}: above {SLOW.value:g} s for {SLOW.for_}.",
            [target(f"max({sel(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT, POOLS_SEL)})", "")],
            "s",
            thresholds=steps((SLOW.value, "red")),
        ),
        stat(
            "Client connections used",
            "SHOW LISTS used_clients / max_client_conn, the fullest selected PgBouncer. "
            f"{NEAR.alert}: {NEAR.value:.0%} for {NEAR.for_}.",
            [target(f"max({CLIENTS_USED})", "")],
            "percentunit",
            thresholds=steps((NEAR.value, "orange"), (1, "red")),
            kind="gauge",
        ),
    )


def pools() -> list[Panel]:
    """SHOW POOLS: clients active and waiting, the longest wait, server connections."""
    return section(
        "Pools (SHOW POOLS)",
        timeseries(
            "Clients active",
            "Client connections linked to a server connection or idle without a query "
            "(cl_active), per pool (database/user).",
            [target(sel(m.PGBOUNCER_POOLS_CLIENT_ACTIVE, POOLS_SEL), PER_POOL)],
            "short",
            width=8,
        ),
        timeseries(
            "Clients waiting",
            "Clients that sent a query and wait for a server connection (cl_waiting): the "
            "queue the application's checkout wait does not show "
            f"({t.PGBOUNCER_CLIENTS_WAITING.alert}).",
            [target(sel(m.PGBOUNCER_POOLS_CLIENT_WAITING, POOLS_SEL), PER_POOL)],
            "short",
            thresholds=steps((1, "orange")),
            width=8,
        ),
        timeseries(
            "Longest wait (maxwait)",
            "How long the oldest waiting client of each pool has waited, with microseconds. "
            f"Dashed: {SLOW.alert} ({SLOW.value:g} s for {SLOW.for_}).",
            [target(sel(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT, POOLS_SEL), PER_POOL)],
            "s",
            thresholds=steps((SLOW.value, "red")),
            width=8,
        ),
        timeseries(
            "Server connections",
            "Server connections per pool: active (linked to a client), idle (ready), used "
            "(idle past server_check_delay, checked before reuse), against the database's "
            f"pool_size ({t.PGBOUNCER_SERVER_POOL_SATURATED.alert}: active at pool_size for "
            f"{t.PGBOUNCER_SERVER_POOL_SATURATED.for_}).",
            targets(
                (sel(m.PGBOUNCER_POOLS_SERVER_ACTIVE, POOLS_SEL), f"active {PER_POOL}"),
                (sel(m.PGBOUNCER_POOLS_SERVER_IDLE, POOLS_SEL), f"idle {PER_POOL}"),
                (sel(m.PGBOUNCER_POOLS_SERVER_USED, POOLS_SEL), f"used {PER_POOL}"),
                (sel(m.PGBOUNCER_DATABASES_POOL_SIZE, DATABASES_SEL), f"pool_size {PER_DB}"),
            ),
            "short",
            width=24,
        ),
    )


def clients_and_queue() -> list[Panel]:
    """Client connections against max_client_conn; the mean queue wait per transaction."""
    return section(
        "Clients and queue",
        timeseries(
            "Clients vs max_client_conn",
            "Client connections in use (SHOW LISTS used_clients) against max_client_conn. "
            f"{NEAR.alert} at {NEAR.value:.0%} for {NEAR.for_}; at 100% PgBouncer refuses "
            "new clients.",
            targets(
                (sel(m.PGBOUNCER_USED_CLIENTS, PGB_SEL), "used {{instance}}"),
                (
                    sel(m.PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS, PGB_SEL),
                    "max_client_conn {{instance}}",
                ),
            ),
            "short",
        ),
        timeseries(
            "Mean queue wait per transaction",
            "rate(client_wait_seconds_total) / rate(sql_transactions_pooled_total): how long "
            "a transaction waited for a server connection on average, per database.",
            [target(queue_wait(f'{PGB_SEL}, database=~"$database"'), "{{database}} {{instance}}")],
            "s",
        ),
    )


def databases() -> list[Panel]:
    """SHOW DATABASES: pool_size against server connections open, and the settings."""
    return section(
        "Databases (SHOW DATABASES)",
        timeseries(
            "Databases: pool_size vs current connections",
            "Server connections open per database (current_connections) against pool_size "
            "(per user pool) and max_db_connections (0 = unlimited, not drawn).",
            targets(
                (
                    sel(m.PGBOUNCER_DATABASES_CURRENT_CONNECTIONS, DATABASES_SEL),
                    f"current {PER_DB}",
                ),
                (sel(m.PGBOUNCER_DATABASES_POOL_SIZE, DATABASES_SEL), f"pool_size {PER_DB}"),
                (
                    f"{sel(m.PGBOUNCER_DATABASES_MAX_CONNECTIONS, DATABASES_SEL)} > 0",
                    f"max_db_connections {PER_DB}",
                ),
            ),
            "short",
        ),
        settings_table(
            "Database settings",
            "pool_size, reserve_pool and max_db_connections of each database (0 = unlimited).",
            DATABASES_SEL,
            {
                "pool_size": m.PGBOUNCER_DATABASES_POOL_SIZE,
                "reserve_pool": m.PGBOUNCER_DATABASES_RESERVE_POOL,
                "max_db_connections": m.PGBOUNCER_DATABASES_MAX_CONNECTIONS,
            },
            width=12,
            height=8,
        ),
    )


def variables() -> list[dict[str, Any]]:
    """Job and Instance of the exporters reporting pgbouncer_up, then PgBouncer's databases
    (without the admin console)."""
    job, instance, _ = chained_variables(m.PGBOUNCER_UP.name, "database", "", "")
    pools = sel(m.PGBOUNCER_POOLS_CLIENT_ACTIVE, f"{PGB_SEL}, {PGB_REAL}")
    return [
        job,
        instance,
        query_variable("database", "Database", f"label_values({pools}, database)"),
    ]


def pgbouncer_dashboard() -> dict[str, Any]:
    """The "PgBouncer" dashboard (poolwatch-exporter's PgBouncer metrics)."""
    return dashboard(
        "poolwatch-pgbouncer",
        "PgBouncer",
        "poolwatch: PgBouncer (poolwatch-exporter) — clients waiting and the longest wait per "
        "pool, server connections against pool_size, clients against max_client_conn.",
        variables(),
        [*overview(), *pools(), *clients_and_queue(), *databases()],
        tags=("pgbouncer",),
    )
