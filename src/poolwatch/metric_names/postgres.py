"""The standalone exporter's PostgreSQL metrics and its own (``poolwatch-exporter``)."""

from __future__ import annotations

from poolwatch.metric_names.spec import MetricSpec

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

# --- exporter: wait events, session lifecycle, connection limits, server role ----------------

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
