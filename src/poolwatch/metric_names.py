"""The metric contract: every metric name poolwatch exports, with its type and HELP text.

Metric names are public API (dashboards, alerts, docs and users' queries depend on
them), so they live here and nowhere else. ``tests/test_metric_contract.py`` checks
that every name here is documented in ``docs/metrics.md`` and that every metric a
dashboard or alert rule references is defined here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """Name, Prometheus type and HELP text of one exported metric."""

    name: str
    type: str  # "gauge" | "counter" | "histogram" | "info"
    help: str
    labels: tuple[str, ...] = ()


# --- in-process pool metrics (poolwatch.instrument) -----------------------------------------

POOL_LABEL = "pool"

POOL_SIZE = MetricSpec(
    "sqlalchemy_pool_size", "gauge", "Configured pool_size of the pool.", (POOL_LABEL,)
)
POOL_MAX_OVERFLOW = MetricSpec(
    "sqlalchemy_pool_max_overflow",
    "gauge",
    "Configured max_overflow: connections the pool may open beyond pool_size.",
    (POOL_LABEL,),
)
POOL_TIMEOUT_SECONDS = MetricSpec(
    "sqlalchemy_pool_timeout_seconds",
    "gauge",
    "Configured pool_timeout: how long a caller waits for a connection before TimeoutError.",
    (POOL_LABEL,),
)
POOL_CHECKED_OUT = MetricSpec(
    "sqlalchemy_pool_checked_out",
    "gauge",
    "Connections lent out to the application now.",
    (POOL_LABEL,),
)
POOL_IDLE = MetricSpec(
    "sqlalchemy_pool_idle", "gauge", "Connections idle in the pool now.", (POOL_LABEL,)
)
POOL_OVERFLOW = MetricSpec(
    "sqlalchemy_pool_overflow",
    "gauge",
    "Connections open beyond pool_size now (never negative).",
    (POOL_LABEL,),
)
POOL_WAITING = MetricSpec(
    "sqlalchemy_pool_waiting",
    "gauge",
    "Callers waiting for a connection because the pool is at capacity.",
    (POOL_LABEL,),
)
# The busiest worker process: in multiprocess mode the gauges above are summed over workers
# (livesum), so one worker's full pool hides in the sum; these are the maximum over workers
# (livemax). In single-process mode they equal this process's own values.
POOL_WORKER_MAX_UTILIZATION = MetricSpec(
    "sqlalchemy_pool_worker_max_utilization_ratio",
    "gauge",
    "Highest checked_out / (pool_size + max_overflow) of any one worker process (0..1).",
    (POOL_LABEL,),
)
POOL_WORKER_MAX_CHECKED_OUT = MetricSpec(
    "sqlalchemy_pool_worker_max_checked_out",
    "gauge",
    "Most connections lent out by any one worker process's pool now.",
    (POOL_LABEL,),
)
POOL_WORKER_MAX_WAITING = MetricSpec(
    "sqlalchemy_pool_worker_max_waiting",
    "gauge",
    "Most callers waiting for a connection in any one worker process now.",
    (POOL_LABEL,),
)
POOL_OLDEST_CHECKOUT_SECONDS = MetricSpec(
    "sqlalchemy_pool_oldest_checkout_seconds",
    "gauge",
    "Age of the longest-held connection currently checked out (0 when none).",
    (POOL_LABEL,),
)
POOL_CHECKOUT_DURATION = MetricSpec(
    "sqlalchemy_pool_checkout_duration_seconds",
    "histogram",
    "Time from asking the pool for a connection to holding one "
    "(queue wait + connect + pre-ping), failed attempts included.",
    (POOL_LABEL,),
)
POOL_HOLD_DURATION = MetricSpec(
    "sqlalchemy_pool_hold_duration_seconds",
    "histogram",
    "Time a connection stayed checked out, from checkout to checkin.",
    (POOL_LABEL,),
)
POOL_CONNECT_DURATION = MetricSpec(
    "sqlalchemy_pool_connect_duration_seconds",
    "histogram",
    "Time to open a new DBAPI connection, failed attempts included.",
    (POOL_LABEL,),
)
POOL_CHECKOUTS = MetricSpec(
    "sqlalchemy_pool_checkouts_total",
    "counter",
    "Connections handed to the application.",
    (POOL_LABEL,),
)
POOL_CHECKINS = MetricSpec(
    "sqlalchemy_pool_checkins_total",
    "counter",
    "Connections returned by the application (including ones reclaimed by the garbage collector).",
    (POOL_LABEL,),
)
POOL_TIMEOUTS = MetricSpec(
    "sqlalchemy_pool_timeouts_total",
    "counter",
    "Checkouts that gave up after pool_timeout (sqlalchemy.exc.TimeoutError).",
    (POOL_LABEL,),
)
POOL_CONNECT_ERRORS = MetricSpec(
    "sqlalchemy_pool_connect_errors_total",
    "counter",
    "Attempts to open a new DBAPI connection that failed.",
    (POOL_LABEL,),
)
POOL_INVALIDATIONS = MetricSpec(
    "sqlalchemy_pool_invalidations_total",
    "counter",
    "Connections invalidated, by reason "
    "(pre_ping, disconnect, soft, explicit, cancelled, timeout, interrupted, error).",
    (POOL_LABEL, "reason"),
)
POOL_LEAKS = MetricSpec(
    "sqlalchemy_pool_leaks_total",
    "counter",
    "Checkouts held longer than the leak threshold (each counted once).",
    (POOL_LABEL,),
)
# Configuration (instrument(through_pgbouncer=...)): pools with 1 are budgeted against
# PgBouncer's max_client_conn instead of PostgreSQL's max_connections.
POOL_THROUGH_PGBOUNCER = MetricSpec(
    "sqlalchemy_pool_through_pgbouncer",
    "gauge",
    "1 when the pool connects through PgBouncer (instrument(through_pgbouncer=True)), else 0.",
    (POOL_LABEL,),
)

# With poolwatch.RouteMiddleware: per route template (bounded: instrument(route_limit=),
# then route="other"; "none" outside any request, "unmatched" before/without a route match).
ROUTE_LABEL = "route"
POOL_ROUTE_CHECKOUT_DURATION = MetricSpec(
    "sqlalchemy_pool_route_checkout_duration_seconds",
    "histogram",
    "Time from asking the pool for a connection to holding one, by the route template "
    "that asked (failed attempts included).",
    (POOL_LABEL, ROUTE_LABEL),
)
POOL_ROUTE_HOLD_DURATION = MetricSpec(
    "sqlalchemy_pool_route_hold_duration_seconds",
    "histogram",
    "Time a connection stayed checked out, by the route template that checked it out.",
    (POOL_LABEL, ROUTE_LABEL),
)
POOL_ROUTE_CHECKED_OUT = MetricSpec(
    "sqlalchemy_pool_route_checked_out",
    "gauge",
    "Connections lent out now, by the route template that checked them out.",
    (POOL_LABEL, ROUTE_LABEL),
)
ROUTE_METRICS: tuple[MetricSpec, ...] = (
    POOL_ROUTE_CHECKOUT_DURATION,
    POOL_ROUTE_HOLD_DURATION,
    POOL_ROUTE_CHECKED_OUT,
)

INSTRUMENTATION_METRICS: tuple[MetricSpec, ...] = (
    POOL_SIZE,
    POOL_MAX_OVERFLOW,
    POOL_TIMEOUT_SECONDS,
    POOL_CHECKED_OUT,
    POOL_IDLE,
    POOL_OVERFLOW,
    POOL_WAITING,
    POOL_WORKER_MAX_UTILIZATION,
    POOL_WORKER_MAX_CHECKED_OUT,
    POOL_WORKER_MAX_WAITING,
    POOL_OLDEST_CHECKOUT_SECONDS,
    POOL_CHECKOUT_DURATION,
    POOL_HOLD_DURATION,
    POOL_CONNECT_DURATION,
    POOL_CHECKOUTS,
    POOL_CHECKINS,
    POOL_TIMEOUTS,
    POOL_CONNECT_ERRORS,
    POOL_INVALIDATIONS,
    POOL_LEAKS,
    POOL_THROUGH_PGBOUNCER,
)

INVALIDATION_REASONS: tuple[str, ...] = (
    "pre_ping",
    "disconnect",
    "soft",
    "explicit",
    "cancelled",
    "timeout",
    "interrupted",
    "error",
)

# Buckets resolve sub-millisecond waits and reach well past the default pool_timeout (30 s).
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
)


# --- standalone exporter metrics (poolwatch-exporter) ---------------------------------------
# Client backends only unless the HELP text says otherwise; label values are bounded (top-N
# per label, the rest folded into "other"). The exporter's own session is never counted.

OTHER_LABEL_VALUE = "other"

PG_UP = MetricSpec(
    "pg_up", "gauge", "1 when the last scrape reached the PostgreSQL server, 0 when it did not."
)
PG_MAX_CONNECTIONS = MetricSpec(
    "pg_max_connections", "gauge", "The server's max_connections setting: the connection ceiling."
)
PG_RESERVED_CONNECTIONS = MetricSpec(
    "pg_reserved_connections",
    "gauge",
    "Connection slots ordinary roles cannot use: superuser_reserved_connections plus "
    "reserved_connections (PostgreSQL 16+).",
)
PG_SESSIONS = MetricSpec(
    "pg_sessions",
    "gauge",
    "Client sessions now, by database, role, application_name and state "
    "(state 'unknown' when the exporter's role may not see it).",
    ("datname", "usename", "application_name", "state"),
)
PG_BACKENDS = MetricSpec(
    "pg_backends",
    "gauge",
    "Server processes now by backend_type (client backends, autovacuum, walsender, ...).",
    ("backend_type",),
)
PG_LOCK_WAITING_SESSIONS = MetricSpec(
    "pg_lock_waiting_sessions",
    "gauge",
    "Client sessions waiting for a heavyweight lock now (wait_event_type = 'Lock').",
    ("datname",),
)
PG_LOCK_WAITING_SESSIONS_BY_APPLICATION = MetricSpec(
    "pg_lock_waiting_sessions_by_application",
    "gauge",
    "Active client sessions waiting for a heavyweight lock now, by application_name (top N, "
    "the rest read 'other').",
    ("datname", "application_name"),
)
PG_LOCK_WAIT_MAX_SECONDS = MetricSpec(
    "pg_lock_wait_max_seconds",
    "gauge",
    "How long the longest current lock wait has lasted (pg_locks.waitstart on PostgreSQL 14+, "
    "else since the waiting statement started).",
    ("datname",),
)
PG_BLOCKED_SESSIONS = MetricSpec(
    "pg_blocked_sessions",
    "gauge",
    "Client sessions blocked by another process now (pg_blocking_pids non-empty).",
    ("datname",),
)
PG_BLOCKING_SESSIONS = MetricSpec(
    "pg_blocking_sessions",
    "gauge",
    "Sessions at the head of a lock-wait chain now: processes (any backend type) that block "
    "a client session without waiting for a lock themselves, by the blocker's database.",
    ("datname",),
)
PG_IDLE_IN_TRANSACTION_SESSIONS = MetricSpec(
    "pg_idle_in_transaction_sessions",
    "gauge",
    "Client sessions idle in transaction (aborted ones included) now.",
    ("datname", "application_name"),
)
PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS = MetricSpec(
    "pg_idle_in_transaction_max_idle_seconds",
    "gauge",
    "How long the longest idle-in-transaction session has been idle (since state_change).",
    ("datname", "application_name"),
)
PG_IDLE_IN_TRANSACTION_MAX_AGE_SECONDS = MetricSpec(
    "pg_idle_in_transaction_max_age_seconds",
    "gauge",
    "Age of the oldest transaction among idle-in-transaction sessions (since xact_start).",
    ("datname", "application_name"),
)
PG_IDLE_IN_TRANSACTION_STALE_SESSIONS = MetricSpec(
    "pg_idle_in_transaction_stale_sessions",
    "gauge",
    "Client sessions idle in transaction for longer than the exporter's stale threshold "
    "(--idle-in-transaction.stale-threshold, 5 s by default).",
    ("datname",),
)
PG_TRANSACTION_MAX_AGE_SECONDS = MetricSpec(
    "pg_transaction_max_age_seconds",
    "gauge",
    "Age of the oldest open transaction (since xact_start), by session state.",
    ("datname", "state"),
)
PG_QUERY_MAX_AGE_SECONDS = MetricSpec(
    "pg_query_max_age_seconds",
    "gauge",
    "How long the longest-running active query has been running (since query_start).",
    ("datname",),
)
EXPORTER_BUILD_INFO = MetricSpec(
    "poolwatch_exporter_build_info",
    "gauge",
    "Always 1; labels say which poolwatch-exporter and Python are running.",
    ("version", "python_version"),
)
EXPORTER_SCRAPE_DURATION = MetricSpec(
    "poolwatch_exporter_scrape_duration_seconds",
    "gauge",
    "Duration of the last database scrape (connect if needed + the one query).",
)
EXPORTER_SCRAPE_ERRORS = MetricSpec(
    "poolwatch_exporter_scrape_errors_total",
    "counter",
    "Database scrapes that failed (server unreachable, timeout, error), skipped ones included.",
)
EXPORTER_QUERIES = MetricSpec(
    "poolwatch_exporter_queries_total",
    "counter",
    "Queries the exporter sent to the server (concurrent HTTP scrapes share one).",
)
EXPORTER_CONNECTIONS_OPENED = MetricSpec(
    "poolwatch_exporter_connections_opened_total",
    "counter",
    "Database connections the exporter opened (1 plus one per reconnect).",
)
EXPORTER_SNAPSHOT_AGE = MetricSpec(
    "poolwatch_exporter_snapshot_age_seconds",
    "gauge",
    "Age of the database snapshot served (> 0 when served from cache by --scrape.min-interval).",
)
EXPORTER_SEES_ALL_SESSIONS = MetricSpec(
    "poolwatch_exporter_sees_all_sessions",
    "gauge",
    "1 when the exporter's role may see every session's state (superuser, pg_monitor or "
    "pg_read_all_stats), 0 when other roles' sessions are hidden from it.",
)
EXPORTER_HIDDEN_SESSIONS = MetricSpec(
    "poolwatch_exporter_hidden_sessions",
    "gauge",
    "Client sessions whose state the exporter's role may not see (counted as state 'unknown').",
)

EXPORTER_COLLECTOR_SUCCESS = MetricSpec(
    "poolwatch_exporter_collector_success",
    "gauge",
    "1 when the collector turned the last snapshot into its metrics, 0 when it failed "
    "(its metrics are then left out; the other collectors' are not).",
    ("collector",),
)
EXPORTER_COLLECTOR_DURATION = MetricSpec(
    "poolwatch_exporter_collector_duration_seconds",
    "gauge",
    "Time the collector took to turn the last snapshot into its metrics (the query is in "
    "poolwatch_exporter_scrape_duration_seconds).",
    ("collector",),
)
EXPORTER_DEGRADED = MetricSpec(
    "poolwatch_exporter_degraded",
    "gauge",
    "1 when the server answered the last scrape but a catalog was locked, so database and "
    "role names come from the last complete scrape; 0 otherwise.",
)

EXPORTER_BCRYPT_CHECKS = MetricSpec(
    "poolwatch_exporter_bcrypt_checks_total",
    "counter",
    "Basic-auth password checks that ran bcrypt (a credential checked before is answered "
    "from the cache without one); a rise with 401 and 429 answers is someone guessing. "
    "Only with basic_auth_users in --web.config.file.",
)

EXPORTER_PROBE_TARGETS = MetricSpec(
    "poolwatch_exporter_probe_targets",
    "gauge",
    "Targets /probe keeps a scraper for (each with at most one connection); bounded by "
    "probe.max_targets, idle ones are closed after probe.idle_timeout.",
)
EXPORTER_PROBE_CONNECTIONS = MetricSpec(
    "poolwatch_exporter_probe_connections",
    "gauge",
    "Open database connections of /probe targets (at most one per target).",
)
EXPORTER_PROBE_REFUSED = MetricSpec(
    "poolwatch_exporter_probe_refused_total",
    "counter",
    "/probe requests refused before any connection attempt, by reason (not_allowed, "
    "bad_request, unknown_module, too_many_targets).",
    ("reason",),
)
EXPORTER_PROBE_IDLE_CLOSED = MetricSpec(
    "poolwatch_exporter_probe_idle_closed_total",
    "counter",
    "/probe targets closed (connection and scraper) after probe.idle_timeout without a probe.",
)

EXPORTER_METRICS: tuple[MetricSpec, ...] = (
    PG_UP,
    PG_MAX_CONNECTIONS,
    PG_RESERVED_CONNECTIONS,
    PG_SESSIONS,
    PG_BACKENDS,
    PG_LOCK_WAITING_SESSIONS,
    PG_LOCK_WAITING_SESSIONS_BY_APPLICATION,
    PG_LOCK_WAIT_MAX_SECONDS,
    PG_BLOCKED_SESSIONS,
    PG_BLOCKING_SESSIONS,
    PG_IDLE_IN_TRANSACTION_SESSIONS,
    PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS,
    PG_IDLE_IN_TRANSACTION_MAX_AGE_SECONDS,
    PG_IDLE_IN_TRANSACTION_STALE_SESSIONS,
    PG_TRANSACTION_MAX_AGE_SECONDS,
    PG_QUERY_MAX_AGE_SECONDS,
    EXPORTER_BUILD_INFO,
    EXPORTER_SCRAPE_DURATION,
    EXPORTER_SCRAPE_ERRORS,
    EXPORTER_QUERIES,
    EXPORTER_CONNECTIONS_OPENED,
    EXPORTER_SNAPSHOT_AGE,
    EXPORTER_SEES_ALL_SESSIONS,
    EXPORTER_HIDDEN_SESSIONS,
    EXPORTER_COLLECTOR_SUCCESS,
    EXPORTER_COLLECTOR_DURATION,
    EXPORTER_DEGRADED,
)
# Served on /metrics only with basic_auth_users in --web.config.file.
EXPORTER_AUTH_METRICS: tuple[MetricSpec, ...] = (EXPORTER_BCRYPT_CHECKS,)
# Served on /metrics only with --config.file (the /probe side's own metrics).
EXPORTER_PROBE_METRICS: tuple[MetricSpec, ...] = (
    EXPORTER_PROBE_TARGETS,
    EXPORTER_PROBE_CONNECTIONS,
    EXPORTER_PROBE_REFUSED,
    EXPORTER_PROBE_IDLE_CLOSED,
)

# --- exporter: wait events, session lifecycle, connection limits, server role (issue 17) -----

PG_ACTIVE_SESSIONS = MetricSpec(
    "pg_active_sessions",
    "gauge",
    "Active client sessions by what they wait on now (wait_event_type / wait_event; CPU = "
    "not waiting). wait_event keeps the top N events, the rest read 'other'.",
    ("datname", "wait_event_type", "wait_event"),
)


def _db_counter(name: str, help_text: str) -> MetricSpec:
    return MetricSpec(name, "counter", help_text + " (pg_stat_database).", ("datname",))


PG_STAT_DATABASE_DEADLOCKS = _db_counter(
    "pg_stat_database_deadlocks_total", "Deadlocks detected in this database"
)
PG_STAT_DATABASE_SESSIONS = _db_counter(
    "pg_stat_database_sessions_total", "Sessions established to this database (14+)"
)
PG_STAT_DATABASE_SESSIONS_ABANDONED = _db_counter(
    "pg_stat_database_sessions_abandoned_total",
    "Sessions to this database ended because the client went away without closing (14+)",
)
PG_STAT_DATABASE_SESSIONS_FATAL = _db_counter(
    "pg_stat_database_sessions_fatal_total",
    "Sessions to this database ended by a FATAL error, idle_in_transaction_session_timeout "
    "among them (14+)",
)
PG_STAT_DATABASE_SESSIONS_KILLED = _db_counter(
    "pg_stat_database_sessions_killed_total",
    "Sessions to this database ended by an operator (pg_terminate_backend) (14+)",
)
PG_STAT_DATABASE_SESSION_TIME = _db_counter(
    "pg_stat_database_session_time_seconds_total",
    "Time sessions to this database spent connected (14+)",
)
PG_STAT_DATABASE_ACTIVE_TIME = _db_counter(
    "pg_stat_database_active_time_seconds_total",
    "Time sessions to this database spent executing statements (14+)",
)
PG_STAT_DATABASE_IDLE_IN_TRANSACTION_TIME = _db_counter(
    "pg_stat_database_idle_in_transaction_time_seconds_total",
    "Time sessions to this database spent idle in a transaction (14+)",
)

PG_ROLES_CONNECTION_LIMIT = MetricSpec(
    "pg_roles_connection_limit",
    "gauge",
    "CONNECTION LIMIT of a login role that has one (not superusers: the limit does not apply).",
    ("rolname",),
)
PG_ROLES_CONNECTIONS = MetricSpec(
    "pg_roles_connections",
    "gauge",
    "Sessions of a role with a connection limit, as PostgreSQL counts them against it.",
    ("rolname",),
)
PG_DATABASE_CONNECTION_LIMIT = MetricSpec(
    "pg_database_connection_limit",
    "gauge",
    "CONNECTION LIMIT of a database that has one.",
    ("datname",),
)
PG_DATABASE_CONNECTIONS = MetricSpec(
    "pg_database_connections",
    "gauge",
    "Sessions to a database with a connection limit, as PostgreSQL counts them against it.",
    ("datname",),
)
PG_REPLICATION_IS_REPLICA = MetricSpec(
    "pg_replication_is_replica",
    "gauge",
    "1 when the server is a standby (pg_is_in_recovery()), 0 on a primary.",
)
PG_POSTMASTER_START_TIME = MetricSpec(
    "pg_postmaster_start_time_seconds",
    "gauge",
    "When the server started (pg_postmaster_start_time(), Unix seconds).",
)

SERVER_DEPTH_METRICS: tuple[MetricSpec, ...] = (
    PG_ACTIVE_SESSIONS,
    PG_STAT_DATABASE_DEADLOCKS,
    PG_STAT_DATABASE_SESSIONS,
    PG_STAT_DATABASE_SESSIONS_ABANDONED,
    PG_STAT_DATABASE_SESSIONS_FATAL,
    PG_STAT_DATABASE_SESSIONS_KILLED,
    PG_STAT_DATABASE_SESSION_TIME,
    PG_STAT_DATABASE_ACTIVE_TIME,
    PG_STAT_DATABASE_IDLE_IN_TRANSACTION_TIME,
    PG_ROLES_CONNECTION_LIMIT,
    PG_ROLES_CONNECTIONS,
    PG_DATABASE_CONNECTION_LIMIT,
    PG_DATABASE_CONNECTIONS,
    PG_REPLICATION_IS_REPLICA,
    PG_POSTMASTER_START_TIME,
)
EXPORTER_METRICS = EXPORTER_METRICS + SERVER_DEPTH_METRICS


# --- PgBouncer (poolwatch-exporter watching a PgBouncer's admin console) ---------------------
# Names follow prometheus-community/pgbouncer_exporter where the meaning is the same. Series
# carry the exporter target's labels (job, instance, pg_server, ...) like the PostgreSQL side.

PGBOUNCER_POOL_LABELS = ("database", "user")
PGBOUNCER_DATABASE_LABELS = ("name", "host", "port", "database", "force_user", "pool_mode")


def _pool(name: str, help_text: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help_text, PGBOUNCER_POOL_LABELS)


def _database(name: str, help_text: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help_text, PGBOUNCER_DATABASE_LABELS)


def _stat(name: str, help_text: str) -> MetricSpec:
    return MetricSpec(name, "counter", help_text, ("database",))


def _plain(name: str, help_text: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help_text)


PGBOUNCER_UP = MetricSpec(
    "pgbouncer_up",
    "gauge",
    "1 when the last scrape of PgBouncer's admin console succeeded, 0 when it did not.",
)
PGBOUNCER_VERSION_INFO = MetricSpec(
    "pgbouncer_version_info", "gauge", "PgBouncer's version (SHOW VERSION); always 1.", ("version",)
)
PGBOUNCER_POOLS_CLIENT_ACTIVE = _pool(
    "pgbouncer_pools_client_active_connections",
    "Client connections linked to a server connection or idle with no queries waiting "
    "(SHOW POOLS cl_active).",
)
PGBOUNCER_POOLS_CLIENT_WAITING = _pool(
    "pgbouncer_pools_client_waiting_connections",
    "Client connections that sent a query and wait for a server connection "
    "(SHOW POOLS cl_waiting).",
)
PGBOUNCER_POOLS_CLIENT_ACTIVE_CANCEL = _pool(
    "pgbouncer_pools_client_active_cancel_connections",
    "Client connections that forwarded a cancel request to the server "
    "(SHOW POOLS cl_active_cancel_req).",
)
PGBOUNCER_POOLS_CLIENT_WAITING_CANCEL = _pool(
    "pgbouncer_pools_client_waiting_cancel_connections",
    "Client connections whose cancel request waits to be forwarded "
    "(SHOW POOLS cl_waiting_cancel_req).",
)
PGBOUNCER_POOLS_SERVER_ACTIVE = _pool(
    "pgbouncer_pools_server_active_connections",
    "Server connections linked to a client (SHOW POOLS sv_active).",
)
PGBOUNCER_POOLS_SERVER_IDLE = _pool(
    "pgbouncer_pools_server_idle_connections",
    "Server connections unused and ready for a client (SHOW POOLS sv_idle).",
)
PGBOUNCER_POOLS_SERVER_USED = _pool(
    "pgbouncer_pools_server_used_connections",
    "Server connections idle longer than server_check_delay, to be checked before reuse "
    "(SHOW POOLS sv_used).",
)
PGBOUNCER_POOLS_SERVER_TESTING = _pool(
    "pgbouncer_pools_server_testing_connections",
    "Server connections running server_reset_query or server_check_query (SHOW POOLS sv_tested).",
)
PGBOUNCER_POOLS_SERVER_LOGIN = _pool(
    "pgbouncer_pools_server_login_connections",
    "Server connections being logged in (SHOW POOLS sv_login).",
)
PGBOUNCER_POOLS_SERVER_ACTIVE_CANCEL = _pool(
    "pgbouncer_pools_server_active_cancel_connections",
    "Server connections forwarding a cancel request (SHOW POOLS sv_active_cancel).",
)
PGBOUNCER_POOLS_SERVER_BEING_CANCELED = _pool(
    "pgbouncer_pools_server_being_canceled_connections",
    "Server connections whose query a cancel request targets (SHOW POOLS sv_being_canceled).",
)
PGBOUNCER_POOLS_CLIENT_MAXWAIT = _pool(
    "pgbouncer_pools_client_maxwait_seconds",
    "How long the oldest waiting client has waited (SHOW POOLS maxwait + maxwait_us / 1e6).",
)
PGBOUNCER_POOLS_INFO = MetricSpec(
    "pgbouncer_pools_info",
    "gauge",
    "The pool mode of each pool (SHOW POOLS pool_mode); always 1.",
    (*PGBOUNCER_POOL_LABELS, "pool_mode"),
)
PGBOUNCER_DATABASES_POOL_SIZE = _database(
    "pgbouncer_databases_pool_size",
    "Maximum server connections per user pool of this database (SHOW DATABASES pool_size).",
)
PGBOUNCER_DATABASES_RESERVE_POOL = _database(
    "pgbouncer_databases_reserve_pool",
    "Extra server connections per pool allowed when clients wait (SHOW DATABASES reserve_pool).",
)
PGBOUNCER_DATABASES_MAX_CONNECTIONS = _database(
    "pgbouncer_databases_max_connections",
    "Maximum server connections for this database, max_db_connections (0 = unlimited).",
)
PGBOUNCER_DATABASES_CURRENT_CONNECTIONS = _database(
    "pgbouncer_databases_current_connections",
    "Server connections open for this database now (SHOW DATABASES current_connections).",
)
PGBOUNCER_DATABASES_PAUSED = _database(
    "pgbouncer_databases_paused", "1 while the database is paused (PAUSE), else 0."
)
PGBOUNCER_DATABASES_DISABLED = _database(
    "pgbouncer_databases_disabled", "1 while the database is disabled (DISABLE), else 0."
)
PGBOUNCER_STATS_TRANSACTIONS = _stat(
    "pgbouncer_stats_sql_transactions_pooled_total",
    "SQL transactions pooled by PgBouncer (SHOW STATS total_xact_count).",
)
PGBOUNCER_STATS_QUERIES = _stat(
    "pgbouncer_stats_queries_pooled_total",
    "SQL queries pooled by PgBouncer (SHOW STATS total_query_count).",
)
PGBOUNCER_STATS_CLIENT_WAIT = _stat(
    "pgbouncer_stats_client_wait_seconds_total",
    "Time clients spent waiting for a server connection (SHOW STATS total_wait_time).",
)
PGBOUNCER_STATS_QUERIES_DURATION = _stat(
    "pgbouncer_stats_queries_duration_seconds_total",
    "Time spent by PgBouncer actively querying PostgreSQL (SHOW STATS total_query_time).",
)
PGBOUNCER_STATS_SERVER_IN_TRANSACTION = _stat(
    "pgbouncer_stats_server_in_transaction_seconds_total",
    "Time server connections spent in a transaction (SHOW STATS total_xact_time).",
)
PGBOUNCER_STATS_RECEIVED_BYTES = _stat(
    "pgbouncer_stats_received_bytes_total",
    "Network traffic received by PgBouncer from clients (SHOW STATS total_received).",
)
PGBOUNCER_STATS_SENT_BYTES = _stat(
    "pgbouncer_stats_sent_bytes_total",
    "Network traffic sent by PgBouncer to clients (SHOW STATS total_sent).",
)
PGBOUNCER_DATABASES = _plain("pgbouncer_databases", "Databases PgBouncer knows (SHOW LISTS).")
PGBOUNCER_USERS = _plain("pgbouncer_users", "Users PgBouncer knows (SHOW LISTS).")
PGBOUNCER_POOLS = _plain("pgbouncer_pools", "Pools PgBouncer has (SHOW LISTS).")
PGBOUNCER_FREE_CLIENTS = _plain(
    "pgbouncer_free_clients", "Client connection slots allocated but unused (SHOW LISTS)."
)
PGBOUNCER_USED_CLIENTS = _plain(
    "pgbouncer_used_clients", "Client connections in use (SHOW LISTS used_clients)."
)
PGBOUNCER_LOGIN_CLIENTS = _plain(
    "pgbouncer_login_clients", "Client connections logging in (SHOW LISTS login_clients)."
)
PGBOUNCER_FREE_SERVERS = _plain(
    "pgbouncer_free_servers", "Server connection slots allocated but unused (SHOW LISTS)."
)
PGBOUNCER_USED_SERVERS = _plain(
    "pgbouncer_used_servers", "Server connections in use (SHOW LISTS used_servers)."
)
PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS = _plain(
    "pgbouncer_config_max_client_connections",
    "PgBouncer's max_client_conn: the most client connections it accepts.",
)
PGBOUNCER_CONFIG_MAX_USER_CONNECTIONS = _plain(
    "pgbouncer_config_max_user_connections",
    "PgBouncer's max_user_connections: server connections per user (0 = unlimited).",
)
PGBOUNCER_CONFIG_MAX_DB_CONNECTIONS = _plain(
    "pgbouncer_config_max_db_connections",
    "PgBouncer's max_db_connections: server connections per database (0 = unlimited).",
)
PGBOUNCER_CONFIG_DEFAULT_POOL_SIZE = _plain(
    "pgbouncer_config_default_pool_size",
    "PgBouncer's default_pool_size: server connections per pool unless a database sets one.",
)
PGBOUNCER_CONFIG_RESERVE_POOL_SIZE = _plain(
    "pgbouncer_config_reserve_pool_size",
    "PgBouncer's reserve_pool_size: extra server connections per pool when clients wait.",
)
PGBOUNCER_CONFIG_SERVER_IDLE_TIMEOUT = _plain(
    "pgbouncer_config_server_idle_timeout_seconds",
    "PgBouncer's server_idle_timeout: an idle server connection is closed after this (0 = off).",
)
PGBOUNCER_CONFIG_SERVER_LIFETIME = _plain(
    "pgbouncer_config_server_lifetime_seconds",
    "PgBouncer's server_lifetime: an unused server connection older than this is closed.",
)
PGBOUNCER_CONFIG_QUERY_WAIT_TIMEOUT = _plain(
    "pgbouncer_config_query_wait_timeout_seconds",
    "PgBouncer's query_wait_timeout: a client waiting this long for a server is disconnected "
    "(0 = wait forever).",
)
PGBOUNCER_CONFIG_CLIENT_IDLE_TIMEOUT = _plain(
    "pgbouncer_config_client_idle_timeout_seconds",
    "PgBouncer's client_idle_timeout: an idle client connection is closed after this (0 = off).",
)

PGBOUNCER_METRICS: tuple[MetricSpec, ...] = tuple(
    spec
    for name, spec in list(globals().items())
    if name.startswith("PGBOUNCER_") and isinstance(spec, MetricSpec)
)
