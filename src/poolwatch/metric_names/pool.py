"""In-process pool metrics, exported by ``poolwatch.instrument()``."""

from __future__ import annotations

from poolwatch.metric_names.spec import MetricSpec

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
