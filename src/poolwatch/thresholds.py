"""Alert thresholds: the one table alerts, dashboards, the demo and the tests read.

``alerts/*.rules.yml`` are generated from this table by ``dashboards/generate.py`` (a test
checks the committed files match), the dashboards draw the same values as panel thresholds,
and ``poolwatch demo`` evaluates them on the scraped series. To change a threshold, change it
here and run ``python dashboards/generate.py``.

Example::

    >>> from poolwatch import thresholds
    >>> thresholds.POOL_NEAR_CAPACITY.value, thresholds.POOL_NEAR_CAPACITY.for_
    (0.85, '2m')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """One alert (or one severity of it): what it compares with, for how long, how loud.

    ``value`` is the number the alert's expression compares with (``None`` when it compares
    two series); ``window`` is the range of its ``increase()``, when it has one.
    """

    alert: str
    severity: str  # "critical" | "warning" | "info"
    for_: str
    value: float | None = None
    window: str | None = None

    @property
    def number(self) -> str:
        """``value`` as PromQL and the dashboards write it (``0.85``, ``3``, ``0.5``)."""
        if self.value is None:
            raise ValueError(f"{self.alert} has no threshold value")
        return format(self.value, "g")


# --- pools (alerts/pool.rules.yml) -----------------------------------------------------------

POOL_NEAR_CAPACITY = Threshold("PoolwatchPoolNearCapacity", "warning", "2m", 0.85)
POOL_EXHAUSTED = Threshold("PoolwatchPoolExhausted", "critical", "1m", 0)
POOL_CHECKOUT_SLOW = Threshold("PoolwatchPoolCheckoutSlow", "warning", "2m", 0.5)
POOL_TIMEOUTS = Threshold("PoolwatchPoolTimeouts", "warning", "1m", 0, "5m")
# value: the oldest checkout (seconds) that makes a checkin lag a probable leak.
POOL_CHECKINS_LAGGING = Threshold("PoolwatchPoolCheckinsLagging", "warning", "5m", 60, "15m")
# PoolwatchPoolCheckinsLagging also fires on one checkout held this long, lag or not.
POOL_STUCK_CHECKOUT_SECONDS = 600
POOL_CONNECTION_LEAK = Threshold("PoolwatchPoolConnectionLeak", "warning", "1m", 0, "10m")
POOL_CONNECT_ERRORS = Threshold("PoolwatchPoolConnectErrors", "warning", "1m", 0, "5m")
POOL_INVALIDATION_BURST = Threshold("PoolwatchPoolInvalidationBurst", "info", "1m", 5, "5m")

# --- PostgreSQL (alerts/postgres.rules.yml) --------------------------------------------------

EXPORTER_DOWN = Threshold("PoolwatchExporterDown", "warning", "2m", 0)
POSTGRES_DOWN = Threshold("PoolwatchPostgresDown", "critical", "1m", 0)
POSTGRES_CONNECTIONS_WARNING = Threshold(
    "PoolwatchPostgresTooManyConnections", "warning", "5m", 0.8
)
POSTGRES_CONNECTIONS_CRITICAL = Threshold(
    "PoolwatchPostgresTooManyConnections", "critical", "2m", 0.9
)
POSTGRES_IDLE_IN_TRANSACTION = Threshold("PoolwatchPostgresIdleInTransaction", "warning", "2m", 0)
POSTGRES_LOCK_WAITS = Threshold("PoolwatchPostgresLockWaits", "warning", "2m", 3)
POSTGRES_BLOCKED_SESSIONS = Threshold("PoolwatchPostgresBlockedSessions", "warning", "5m", 0)

# --- the connection budget (alerts/budget.rules.yml) -----------------------------------------

# Long enough to ride out a rolling deploy, when old and new workers both report.
CONNECTION_BUDGET_EXCEEDED = Threshold("PoolwatchConnectionBudgetExceeded", "warning", "15m")

# --- PgBouncer (alerts/pgbouncer.rules.yml) -------------------------------------------------

PGBOUNCER_DOWN = Threshold("PoolwatchPgBouncerDown", "critical", "1m", 0)
PGBOUNCER_CLIENTS_WAITING = Threshold("PoolwatchPgBouncerClientsWaiting", "warning", "2m", 0)
# The same bound as the app's checkout wait (seeds: > 500 ms sustained > 2 m): the queue
# moved into PgBouncer, the patience of the caller did not.
PGBOUNCER_WAIT_SLOW = Threshold(
    "PoolwatchPgBouncerWaitSlow", "warning", POOL_CHECKOUT_SLOW.for_, POOL_CHECKOUT_SLOW.value
)
PGBOUNCER_SERVER_POOL_SATURATED = Threshold(
    "PoolwatchPgBouncerServerPoolSaturated", "warning", "5m"
)
PGBOUNCER_CLIENT_CONNECTIONS = Threshold(
    "PoolwatchPgBouncerClientConnectionsNearLimit", "warning", "5m", 0.85
)

# --- the chain budget (alerts/budget.rules.yml) ----------------------------------------------

PGBOUNCER_CLIENT_BUDGET_EXCEEDED = Threshold(
    "PoolwatchPgBouncerClientBudgetExceeded", "warning", CONNECTION_BUDGET_EXCEEDED.for_
)
PGBOUNCER_SERVER_BUDGET_EXCEEDED = Threshold(
    "PoolwatchPgBouncerServerBudgetExceeded", "warning", CONNECTION_BUDGET_EXCEEDED.for_
)

ALL: tuple[Threshold, ...] = (
    POOL_NEAR_CAPACITY,
    POOL_EXHAUSTED,
    POOL_CHECKOUT_SLOW,
    POOL_TIMEOUTS,
    POOL_CHECKINS_LAGGING,
    POOL_CONNECTION_LEAK,
    POOL_CONNECT_ERRORS,
    POOL_INVALIDATION_BURST,
    EXPORTER_DOWN,
    POSTGRES_DOWN,
    POSTGRES_CONNECTIONS_WARNING,
    POSTGRES_CONNECTIONS_CRITICAL,
    POSTGRES_IDLE_IN_TRANSACTION,
    POSTGRES_LOCK_WAITS,
    POSTGRES_BLOCKED_SESSIONS,
    CONNECTION_BUDGET_EXCEEDED,
    PGBOUNCER_DOWN,
    PGBOUNCER_CLIENTS_WAITING,
    PGBOUNCER_WAIT_SLOW,
    PGBOUNCER_SERVER_POOL_SATURATED,
    PGBOUNCER_CLIENT_CONNECTIONS,
    PGBOUNCER_CLIENT_BUDGET_EXCEEDED,
    PGBOUNCER_SERVER_BUDGET_EXCEEDED,
)

# --- the server's sessions, limits and role (alerts/server.rules.yml) ------------------------

# 5 minutes: a request's transaction lasts milliseconds; pgMonitor warns on idle-in-transaction
# time past 300 s. Past this, the transaction holds a pooled connection, its locks and vacuum's
# horizon.
POSTGRES_LONG_TRANSACTION = Threshold("PoolwatchPostgresLongTransaction", "warning", "1m", 300)
# The seeds' statement_timeout (30 s): an active statement older than that means the timeout is
# not in force for that session (pgMonitor's 12 h / 24 h suit reporting jobs, not a pool).
POSTGRES_LONG_QUERY = Threshold("PoolwatchPostgresLongQuery", "warning", "1m", 30)
# Sessions ended by a FATAL error (idle_in_transaction_session_timeout among them).
POSTGRES_SESSIONS_FATAL = Threshold(
    "PoolwatchPostgresSessionsEndedByTimeout", "warning", "1m", 0, "10m"
)
POSTGRES_DEADLOCKS = Threshold("PoolwatchPostgresDeadlocks", "warning", "1m", 0, "10m")
POSTGRES_ROLE_CONNECTION_LIMIT = Threshold(
    "PoolwatchPostgresRoleNearConnectionLimit", "warning", "5m", 0.9
)
POSTGRES_DATABASE_CONNECTION_LIMIT = Threshold(
    "PoolwatchPostgresDatabaseNearConnectionLimit", "warning", "5m", 0.9
)
# window: how long a restart or a role change stays on the alert board.
POSTGRES_RESTARTED = Threshold("PoolwatchPostgresRestarted", "info", "1m", 0, "15m")
POSTGRES_ROLE_CHANGED = Threshold("PoolwatchPostgresRoleChanged", "warning", "1m", 0, "15m")

SERVER: tuple[Threshold, ...] = (
    POSTGRES_LONG_TRANSACTION,
    POSTGRES_LONG_QUERY,
    POSTGRES_SESSIONS_FATAL,
    POSTGRES_DEADLOCKS,
    POSTGRES_ROLE_CONNECTION_LIMIT,
    POSTGRES_DATABASE_CONNECTION_LIMIT,
    POSTGRES_RESTARTED,
    POSTGRES_ROLE_CHANGED,
)
ALL = ALL + SERVER
