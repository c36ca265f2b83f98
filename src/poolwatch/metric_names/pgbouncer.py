"""The exporter's PgBouncer metrics, read from PgBouncer's admin console."""

from __future__ import annotations

from poolwatch.metric_names.spec import MetricSpec

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
