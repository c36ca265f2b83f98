"""The "PostgreSQL sessions" dashboard (metrics of poolwatch-exporter), one function per row."""

from __future__ import annotations

from typing import Any

from panels import (
    Panel,
    breakdown,
    chained_variables,
    count_stat,
    dashboard,
    section,
    stat,
    steps,
    table,
    target,
    targets,
    timeseries,
    up_down,
)
from promql import PG_DB_SEL, PG_SEL, quiet_as_zero, rate, sel, server_utilization, sessions, usable
from server_panels import connections_used, server_rows

from poolwatch import metric_names as m
from poolwatch import thresholds as t

PER_DB = "{{datname}} {{instance}}"
USABLE = f"({usable(PG_SEL)})"
SESSIONS = sessions(PG_SEL)
USED = server_utilization(PG_SEL)
WARN, CRIT = t.POSTGRES_CONNECTIONS_WARNING, t.POSTGRES_CONNECTIONS_CRITICAL


def _db(spec: m.MetricSpec) -> str:
    """``spec`` filtered by the variables, 0 per reachable server when it has no series."""
    return quiet_as_zero(sel(spec, PG_DB_SEL))


def _sum(spec: m.MetricSpec, agg: str = "sum") -> str:
    """``agg`` of ``spec`` over the selected databases, 0 when the server is quiet."""
    return quiet_as_zero(f"{agg}({sel(spec, PG_DB_SEL)})", aggregated=True)


def overview() -> list[Panel]:
    """Reachability, connections used, headroom and stale idle-in-transaction sessions."""
    idle_tx = t.POSTGRES_IDLE_IN_TRANSACTION
    return section(
        "Overview",
        stat(
            "PostgreSQL reachable",
            "pg_up: 1 when the exporter's last query reached the server "
            f"({t.POSTGRES_DOWN.alert} after {t.POSTGRES_DOWN.for_} at 0).",
            [target(f"min({sel(m.PG_UP, PG_SEL)})", "")],
            "none",
            **up_down(),
        ),
        connections_used(
            "gauge",
            "Connections used",
            f"Client sessions / (max_connections - reserved). {WARN.alert}: warning at "
            f"{WARN.value:.0%} for {WARN.for_}, critical at {CRIT.value:.0%} for {CRIT.for_}.",
            f"max({USED})",
        ),
        stat(
            "Headroom",
            "Connections ordinary roles can still open: max_connections - reserved - "
            "client sessions now.",
            [target(f"min({USABLE} - {SESSIONS})", "")],
            "short",
            thresholds=steps((5, "orange"), (20, "green"), base="red"),
        ),
        count_stat(
            "Stale idle in transaction",
            "Sessions idle in transaction longer than the exporter's stale threshold "
            f"(5 s by default). {idle_tx.alert}: above 0 for {idle_tx.for_}.",
            _sum(m.PG_IDLE_IN_TRANSACTION_STALE_SESSIONS),
            "red",
        ),
    )


def _by(label: str, what: str, description: str) -> Panel:
    return breakdown(f"Sessions by {what}", description, sel(m.PG_SESSIONS, PG_DB_SEL), label)


def session_panels() -> list[Panel]:
    """Sessions by state, database and application; headroom; ratio; server processes."""
    return section(
        "Sessions",
        _by(
            "state",
            "state",
            "Client sessions by state (active, idle, idle in transaction, ...; 'unknown' when "
            "the exporter's role may not see them).",
        ),
        _by("datname", "database", "Client sessions by database."),
        _by(
            "application_name",
            "application",
            "Client sessions by application_name (top N, the rest as 'other').",
        ),
        timeseries(
            "Headroom to max_connections",
            "Client sessions against max_connections and max_connections - reserved "
            f"(what ordinary roles may use). {WARN.alert} fires at {WARN.value:.0%} / "
            f"{CRIT.value:.0%} of the usable connections (dashed on the ratio panel).",
            targets(
                (SESSIONS, "sessions {{instance}}"),
                (USABLE, "usable {{instance}}"),
                (sel(m.PG_MAX_CONNECTIONS, PG_SEL), "max_connections {{instance}}"),
            ),
            "short",
        ),
        connections_used(
            "timeseries",
            "Connections used (ratio)",
            f"Client sessions / (max_connections - reserved). {WARN.alert}: "
            f"{WARN.value:.0%} warning, {CRIT.value:.0%} critical.",
            USED,
            "{{instance}}",
        ),
        timeseries(
            "Server processes by type",
            "Every server process by backend_type: client backends plus autovacuum workers, "
            "WAL senders, background workers (these have their own slots).",
            [target(sel(m.PG_BACKENDS, PG_SEL), "{{backend_type}} {{instance}}")],
            "short",
            stack=True,
        ),
        across=3,
    )


def idle_in_transaction() -> list[Panel]:
    """Idle-in-transaction sessions, how long they have idled, and the stale ones."""
    idle_tx = t.POSTGRES_IDLE_IN_TRANSACTION

    def longest(spec: m.MetricSpec) -> str:
        return quiet_as_zero(f"max by (datname) ({sel(spec, PG_DB_SEL)})", aggregated=True)

    return section(
        "Idle in transaction",
        timeseries(
            "Idle in transaction sessions",
            "Sessions holding a transaction open while doing nothing, by database and "
            "application: each pins a pooled connection and its locks.",
            [target(_db(m.PG_IDLE_IN_TRANSACTION_SESSIONS), "{{datname}} {{application_name}}")],
            "short",
        ),
        timeseries(
            "Longest idle in transaction",
            "The longest idle-in-transaction session: idle for (since its last statement) "
            "and its transaction's age (since BEGIN).",
            targets(
                (longest(m.PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS), "idle for {{datname}}"),
                (longest(m.PG_IDLE_IN_TRANSACTION_MAX_AGE_SECONDS), "transaction age {{datname}}"),
            ),
            "s",
        ),
        timeseries(
            "Stale idle in transaction",
            "Sessions idle in transaction past the exporter's stale threshold. Above 0 for "
            f"{idle_tx.for_}: {idle_tx.alert}.",
            [target(_db(m.PG_IDLE_IN_TRANSACTION_STALE_SESSIONS), PER_DB)],
            "short",
            thresholds=steps((1, "red")),
        ),
        across=3,
    )


def locks() -> list[Panel]:
    """Lock waits, the longest one, blocked and blocking sessions."""
    waits, blocked = t.POSTGRES_LOCK_WAITS, t.POSTGRES_BLOCKED_SESSIONS
    return section(
        "Locks",
        timeseries(
            "Lock waits",
            f"Sessions waiting for a lock. {waits.number} or more for {waits.for_}: {waits.alert}.",
            [target(_db(m.PG_LOCK_WAITING_SESSIONS), PER_DB)],
            "short",
            thresholds=steps((waits.value, "orange")),
        ),
        timeseries(
            "Longest lock wait",
            "How long the longest current lock wait has lasted.",
            [target(_db(m.PG_LOCK_WAIT_MAX_SECONDS), PER_DB)],
            "s",
        ),
        timeseries(
            "Blocked vs blocking",
            "Sessions blocked by another process, and the distinct processes blocking them. "
            f"Blocked sessions for {blocked.for_}: {blocked.alert}.",
            targets(
                (_db(m.PG_BLOCKED_SESSIONS), "blocked {{datname}} {{instance}}"),
                (_db(m.PG_BLOCKING_SESSIONS), "blocking {{datname}} {{instance}}"),
            ),
            "short",
            thresholds=steps((1, "orange")),
        ),
        across=3,
    )


def long_running() -> list[Panel]:
    """The oldest open transaction and the longest-running query."""
    return section(
        "Long-running work",
        timeseries(
            "Longest transaction",
            "Age of the oldest open transaction, by the state of its session.",
            [target(_db(m.PG_TRANSACTION_MAX_AGE_SECONDS), "{{datname}} {{state}}")],
            "s",
        ),
        timeseries(
            "Longest query",
            "How long the longest-running active query has been running.",
            [target(_db(m.PG_QUERY_MAX_AGE_SECONDS), PER_DB)],
            "s",
        ),
    )


def exporter_health() -> list[Panel]:
    """The exporter's scrape duration, errors, visibility and build."""
    errors = rate(m.EXPORTER_SCRAPE_ERRORS, PG_SEL)
    return section(
        "Exporter health",
        timeseries(
            "Exporter scrape duration",
            "Duration of the exporter's last database scrape (connect if needed + one query).",
            [target(sel(m.EXPORTER_SCRAPE_DURATION, PG_SEL), "{{instance}}")],
            "s",
            width=8,
        ),
        timeseries(
            "Exporter errors and targets",
            "Failed database scrapes per second, and whether Prometheus reaches the "
            f"exporter (up; {t.EXPORTER_DOWN.alert} after {t.EXPORTER_DOWN.for_} at 0).",
            targets(
                (errors, "scrape errors/s {{instance}}"), (f"up{{{PG_SEL}}}", "up {{instance}}")
            ),
            "short",
            width=8,
        ),
        timeseries(
            "Exporter visibility",
            "Whether the exporter's role sees every session's state (1), and the sessions "
            "it may not see (counted as state 'unknown'). Grant pg_monitor to fix.",
            targets(
                (sel(m.EXPORTER_SEES_ALL_SESSIONS, PG_SEL), "sees all {{instance}}"),
                (sel(m.EXPORTER_HIDDEN_SESSIONS, PG_SEL), "hidden {{instance}}"),
            ),
            "short",
            width=8,
        ),
        table(
            "Exporter",
            "Exporter version, queries sent, connections opened, age of the snapshot served.",
            targets(
                (sel(m.EXPORTER_BUILD_INFO, PG_SEL), "build"),
                (sel(m.EXPORTER_QUERIES, PG_SEL), "queries"),
                (sel(m.EXPORTER_CONNECTIONS_OPENED, PG_SEL), "connections"),
                (sel(m.EXPORTER_SNAPSHOT_AGE, PG_SEL), "snapshot age"),
            ),
        ),
    )


def postgres_dashboard() -> dict[str, Any]:
    """The "PostgreSQL sessions" dashboard (metrics of poolwatch-exporter)."""
    return dashboard(
        "poolwatch-postgresql-sessions",
        "PostgreSQL sessions",
        "poolwatch: PostgreSQL sessions (poolwatch-exporter) — connections against "
        "max_connections, idle in transaction, lock waits, long transactions.",
        chained_variables(m.PG_UP.name, "datname", "Database", m.PG_SESSIONS.name),
        [
            *overview(),
            *session_panels(),
            *idle_in_transaction(),
            *locks(),
            *long_running(),
            *server_rows(),
            *exporter_health(),
        ],
    )
