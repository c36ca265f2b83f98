"""Rows of the "PostgreSQL sessions" dashboard for issue 17: what active sessions wait on, how
sessions end (pg_stat_database), per-role / per-database connection limits, the server's role."""

from __future__ import annotations

from typing import Any

from panels import Panel, breakdown, section, stat, steps, target, targets, timeseries, value_text
from promql import PG_DB_SEL, PG_SEL, POOL_SEL, quiet_as_zero, rate, sel

from poolwatch import metric_names as m
from poolwatch import thresholds as t


def connections_used(
    kind: str, title: str, description: str, expr: str, legend: str = "", **look: Any
) -> Panel:
    """``expr`` (a :func:`promql.server_utilization`) as a ``kind`` panel (stat, gauge or
    timeseries) coloured at the warning and critical levels of the connections alert."""
    warn, crit = t.POSTGRES_CONNECTIONS_WARNING, t.POSTGRES_CONNECTIONS_CRITICAL
    queries, levels = [target(expr, legend)], steps((warn.value, "orange"), (crit.value, "red"))
    if kind == "timeseries":
        return timeseries(title, description, queries, "percentunit", thresholds=levels, **look)
    return stat(title, description, queries, "percentunit", kind=kind, thresholds=levels, **look)


def _rate(spec: m.MetricSpec) -> str:
    return f"sum by (datname) ({rate(spec, PG_DB_SEL)})"


def wait_events() -> list[Panel]:
    """Active sessions by wait_event_type, and the top wait events."""
    active = sel(m.PG_ACTIVE_SESSIONS, PG_DB_SEL)
    return section(
        "Wait events",
        timeseries(
            "Active sessions by wait event type",
            "What active sessions (checked-out connections at work) wait on now: CPU = not "
            "waiting, Client = the application does not read or send (it holds the "
            "connection), Lock, LWLock, IO, Timeout (pg_sleep). See the runbook's Wait events.",
            targets(
                (
                    quiet_as_zero(f"sum by (job, instance, wait_event_type) ({active})"),
                    "{{wait_event_type}} {{instance}}",
                ),
            ),
            "short",
            stack=True,
        ),
        breakdown(
            "Top wait events",
            "Active sessions by wait event (top N per scrape, the rest as 'other' under "
            "their type), by database.",
            active,
            "datname, wait_event_type, wait_event",
            "{{wait_event_type}}/{{wait_event}} {{datname}}",
        ),
    )


def session_lifecycle() -> list[Panel]:
    """Sessions opened and ended by cause, deadlocks, time idle in transaction."""
    fatal, deadlocks = t.POSTGRES_SESSIONS_FATAL, t.POSTGRES_DEADLOCKS
    return section(
        "Session lifecycle",
        timeseries(
            "Sessions ended",
            "Sessions per second by how they ended (pg_stat_database, PostgreSQL 14+): fatal "
            "(idle_in_transaction_session_timeout and other FATAL errors; "
            f"{fatal.alert}), killed (pg_terminate_backend), abandoned (client vanished); and "
            "new sessions (churn: NullPool, proxies recycling).",
            targets(
                (_rate(m.PG_STAT_DATABASE_SESSIONS_FATAL), "fatal {{datname}}"),
                (_rate(m.PG_STAT_DATABASE_SESSIONS_KILLED), "killed {{datname}}"),
                (_rate(m.PG_STAT_DATABASE_SESSIONS_ABANDONED), "abandoned {{datname}}"),
                (_rate(m.PG_STAT_DATABASE_SESSIONS), "new {{datname}}"),
            ),
            "ops",
        ),
        timeseries(
            "Deadlocks",
            f"Deadlocks detected per second ({deadlocks.alert} on any in {deadlocks.window}).",
            targets((_rate(m.PG_STAT_DATABASE_DEADLOCKS), "{{datname}}")),
            "ops",
            thresholds=steps((0.0001, "red")),
        ),
        timeseries(
            "Time in sessions",
            "Seconds per second sessions spent executing statements and idle in transaction: "
            "about how many sessions are busy / idle in transaction on average.",
            targets(
                (_rate(m.PG_STAT_DATABASE_ACTIVE_TIME), "active {{datname}}"),
                (
                    _rate(m.PG_STAT_DATABASE_IDLE_IN_TRANSACTION_TIME),
                    "idle in transaction {{datname}}",
                ),
            ),
            "short",
        ),
        across=3,
    )


def limits_and_role() -> list[Panel]:
    """Per-role / per-database connection limits used, the server's role and start time."""
    role, db = t.POSTGRES_ROLE_CONNECTION_LIMIT, t.POSTGRES_DATABASE_CONNECTION_LIMIT
    roles = (
        f"{sel(m.PG_ROLES_CONNECTIONS, PG_SEL)} / ({sel(m.PG_ROLES_CONNECTION_LIMIT, PG_SEL)} > 0)"
    )
    dbs = (
        f"{sel(m.PG_DATABASE_CONNECTIONS, PG_SEL)}"
        f" / ({sel(m.PG_DATABASE_CONNECTION_LIMIT, PG_SEL)} > 0)"
    )
    return section(
        "Connection limits and server",
        timeseries(
            "Connection limits used",
            "Sessions / CONNECTION LIMIT of each role and database that has one (they refuse "
            f"logins before max_connections does). {role.alert} / {db.alert}: "
            f"{role.value:.0%} for {role.for_}.",
            targets((roles, "role {{rolname}}"), (dbs, "database {{datname}}")),
            "percentunit",
            thresholds=steps((role.value or 0.9, "orange"), (1.0, "red")),
        ),
        stat(
            "Server up since",
            "When the server started (pg_postmaster_start_time). "
            f"{t.POSTGRES_RESTARTED.alert} when it moves.",
            targets((f"max({sel(m.PG_POSTMASTER_START_TIME, PG_SEL)}) * 1000", "")),
            "dateTimeFromNow",
        ),
        stat(
            "Server role",
            f"Primary or standby (pg_is_in_recovery). {t.POSTGRES_ROLE_CHANGED.alert} when it "
            "changes.",
            targets((f"max({sel(m.PG_REPLICATION_IS_REPLICA, PG_SEL)})", "")),
            "none",
            mappings=value_text("PRIMARY", "STANDBY"),
        ),
    )


def server_rows() -> list[Panel]:
    """The three rows, in dashboard order."""
    return [*wait_events(), *session_lifecycle(), *limits_and_role()]


# The server sessions of the selected pools: instrument(application_name=...) names them
# "<service>/<pool>" or "<pool>". No job/instance filter: they come from the exporter's job.
POOL_SESSIONS_SEL = 'application_name=~"(.+/)?($pool)"'


def pool_sessions() -> list[Panel]:
    """For the pool dashboard: checked out in the app vs the pool's sessions on the server."""
    return section(
        "Server sessions of the pool",
        timeseries(
            "Checked out vs server sessions",
            "Connections the pool has lent out (app side) next to the server sessions named "
            "after it, by state, and those of them waiting on a lock (needs "
            "instrument(application_name=...)): idle in transaction here is a checked-out "
            "connection the application is not using; waiting on locks, one held up by "
            "another session's transaction.",
            targets(
                (f"sum by (pool) ({sel(m.POOL_CHECKED_OUT, POOL_SEL)})", "checked out {{pool}}"),
                (
                    f"sum by (application_name, state) ({sel(m.PG_SESSIONS, POOL_SESSIONS_SEL)})",
                    "{{state}} {{application_name}}",
                ),
                (
                    "sum by (application_name) "
                    f"({sel(m.PG_LOCK_WAITING_SESSIONS_BY_APPLICATION, POOL_SESSIONS_SEL)})",
                    "waiting on locks {{application_name}}",
                ),
            ),
            "short",
            width=12,
        ),
        timeseries(
            "Idle in transaction, by pool",
            "The pool's server sessions idle in transaction, and the longest idle time: the "
            "runbook's 'sessions idle in transaction belong to pool X'.",
            targets(
                (
                    f"sum by (application_name) "
                    f"({sel(m.PG_IDLE_IN_TRANSACTION_SESSIONS, POOL_SESSIONS_SEL)})",
                    "sessions {{application_name}}",
                ),
                (
                    f"max by (application_name) "
                    f"({sel(m.PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS, POOL_SESSIONS_SEL)})",
                    "longest idle (s) {{application_name}}",
                ),
            ),
            "short",
            width=12,
        ),
    )
