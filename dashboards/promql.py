"""PromQL pieces the dashboards and the alert rules share, built from metric_names."""

from __future__ import annotations

from poolwatch import metric_names as m

# Grafana variable filters (the dashboards' job -> instance -> pool / datname variables).
POOL_SEL = 'job=~"$job", instance=~"$instance", pool=~"$pool"'
PG_SEL = 'job=~"$job", instance=~"$instance"'
PG_DB_SEL = 'job=~"$job", instance=~"$instance", datname=~"$datname"'
RATE = "[$__rate_interval]"  # Grafana's window for rate() and increase() on panels


def sel(spec: m.MetricSpec, selector: str | None = None, suffix: str = "") -> str:
    """``name{selector}`` (the bare name for ``None``); ``suffix``: such as ``_bucket``."""
    name = spec.name + suffix
    return name if selector is None else f"{name}{{{selector}}}"


def rate(spec: m.MetricSpec, selector: str | None = None, suffix: str = "") -> str:
    """Per-second rate of a counter over Grafana's rate interval."""
    return f"rate({sel(spec, selector, suffix)}{RATE})"


def increase(
    spec: m.MetricSpec, selector: str | None = None, window: str = RATE, suffix: str = ""
) -> str:
    """Increase of a counter over ``window`` (a bracketed range; Grafana's by default)."""
    return f"increase({sel(spec, selector, suffix)}{window})"


def capacity(selector: str | None = None) -> str:
    """pool_size + max_overflow per pool series (+Inf for unlimited overflow)."""
    size = sel(m.POOL_SIZE, selector)
    return f"{size} + {sel(m.POOL_MAX_OVERFLOW, selector)} or {size} + Inf"


def utilization(selector: str | None = None) -> str:
    """Checked out / capacity per pool series: in multiprocess mode, over all workers."""
    return f"{sel(m.POOL_CHECKED_OUT, selector)} / ({capacity(selector)})"


def busiest_worker_utilization(selector: str | None = None) -> str:
    """The busiest worker process's utilization per pool series (multiprocess mode sums the
    gauges over workers, where one full pool hides); the summed ratio where the
    ``worker_max`` gauge is missing (older poolwatch, unbounded pools)."""
    return f"{sel(m.POOL_WORKER_MAX_UTILIZATION, selector)} or {utilization(selector)}"


def usable(selector: str | None = None) -> str:
    """Connections ordinary roles may open: max_connections minus the reserved slots."""
    return f"{sel(m.PG_MAX_CONNECTIONS, selector)} - {sel(m.PG_RESERVED_CONNECTIONS, selector)}"


def sessions(selector: str | None = None) -> str:
    """Client sessions per server (every database, role, application and state)."""
    return f"sum without ({', '.join(m.PG_SESSIONS.labels)}) ({sel(m.PG_SESSIONS, selector)})"


def server_utilization(selector: str | None = None) -> str:
    """Client sessions / usable connections per server (what
    PoolwatchPostgresTooManyConnections watches)."""
    return f"{sessions(selector)} / ({usable(selector)})"


def quiet_as_zero(expr: str, selector: str = PG_SEL, *, aggregated: bool = False) -> str:
    """``expr``, or 0 for an exporter that reached its server and found nothing to report.

    The lock, transaction and idle-in-transaction families have no series on a quiet server;
    0 reads better there than "No data", while a server the exporter cannot reach (pg_up 0)
    or a missing exporter still shows no data. ``aggregated``: ``expr`` has no labels left.
    """
    up = f"({sel(m.PG_UP, selector)} == 1)"
    if aggregated:
        return f"{expr} or on () 0 * max{up}"
    return f"{expr} or on (job, instance) 0 * {up}"


# --- PgBouncer ------------------------------------------------------------------------------

# PgBouncer's admin console is a pseudo-database (pool "pgbouncer"/"pgbouncer" in SHOW POOLS,
# pool_size 2 in SHOW DATABASES) with no PostgreSQL connections behind it.
PGB_REAL = 'database!="pgbouncer"'


def as_pool_database(expr: str) -> str:
    """A SHOW DATABASES series keyed like SHOW POOLS: its ``name`` becomes ``database``.

    (pgbouncer_databases_* carry both: ``name`` is PgBouncer's database, which SHOW POOLS
    calls ``database``; their own ``database`` is the PostgreSQL database behind it.)
    """
    return f'label_replace({expr}, "database", "$1", "name", "(.*)")'


def min_capped(expr: str, cap: str, on: str) -> str:
    """min(``expr``, ``cap``) per series of ``expr``, matched ``on`` labels; ``expr`` where
    there is no ``cap`` (PgBouncer's 0 = unlimited, filtered out of ``cap`` by the caller)."""
    minus = f"- on ({on}) group_left ()" if on else "-"
    return f"{expr}\n  -\nclamp_min(\n  {expr}\n    {minus}\n  ({cap}),\n  0\n)\n  or\n{expr}"
