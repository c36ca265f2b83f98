"""The pool and PostgreSQL rule files; ``generate.py`` writes them to ``alerts/*.rules.yml``
(the PgBouncer file is ``pgbouncer_rules.py``, the connection budget ``budget_rules.py``, the
server's own alerts ``server_rules.py``).

Adding an alert (the same four steps for every one):

1. an entry in ``src/poolwatch/thresholds.py`` (name, severity, ``for:``, value, window);
2. an ``Alert`` here (or in ``pgbouncer_rules.py`` / ``budget_rules.py`` /
   ``server_rules.py``) built from that entry, its PromQL from ``metric_names`` via ``promql``;
3. its promtool test in ``alerts/tests/`` (quiet one evaluation before ``for:``, firing with
   exact labels and annotations at the next);
4. a ``## <AlertName>`` section in ``docs/runbook.md`` (the ``runbook_url`` anchor).

Then run ``python dashboards/generate.py`` and commit the regenerated YAML with the change.
"""

from __future__ import annotations

from promql import sel, sessions, usable
from rule_yaml import Alert, Group, Record, RuleFile, lab, words

from poolwatch import metric_names as m
from poolwatch import thresholds as t
from poolwatch.thresholds import Threshold

# Recording rules (level:metric:operations), referenced by the alerts below.
CAPACITY = "pool:sqlalchemy_pool_capacity"
UTILIZATION = "pool:sqlalchemy_pool_utilization:ratio"
WORKER_UTILIZATION = "pool:sqlalchemy_pool_worker_utilization:max"
P95_WINDOW = "2m"
CHECKOUT_P95 = f"pool:sqlalchemy_pool_checkout_duration_seconds:p95_rate{P95_WINDOW}"
SESSIONS = "instance:pg_sessions:sum"
USABLE = "instance:pg_usable_connections"
CONNECTIONS_USED = "instance:pg_connections_used:ratio"

POOL_AT = f"{lab('pool')} on {lab('instance')} (job {lab('job')})"
ON_DB = f"sessions on database {lab('datname')} (exporter {lab('instance')})"
SERVER_AT = f"The server behind {lab('instance')} (job {lab('job')})"
COUNT = '{{ printf "%.0f" $value }}'
NUM = "{{ $value | humanize }}"
PCT = "{{ $value | humanizePercentage }}"
DURATION = "{{ $value | humanizeDuration }}"


def _increase(spec: m.MetricSpec, th: Threshold) -> str:
    return f"increase({spec.name}[{th.window}]) > {th.number}"


# --- alerts/pool.rules.yml -------------------------------------------------------------------

POOL_RECORDS = (
    Record(
        CAPACITY,
        f"{sel(m.POOL_SIZE)} + {sel(m.POOL_MAX_OVERFLOW)}\n  or\n{sel(m.POOL_SIZE)} + Inf",
        "Connections a pool may hold at most: pool_size + max_overflow. A pool with unlimited "
        f"overflow (max_overflow=-1) exports no {m.POOL_MAX_OVERFLOW.name}: its capacity is +Inf.",
    ),
    Record(
        UTILIZATION,
        f"{m.POOL_CHECKED_OUT.name} / ({CAPACITY} > 0)",
        "Fraction of the capacity lent out now (0..1).",
    ),
    Record(
        WORKER_UTILIZATION,
        f"{m.POOL_WORKER_MAX_UTILIZATION.name}\n  or\n{UTILIZATION}",
        "The busiest worker process's fraction of its capacity lent out (0..1): in "
        "multiprocess mode the gauges above are summed over workers, and one worker's full "
        "pool hides in the sum. Pools without the per-worker gauge (unbounded overflow) fall "
        "back to the summed ratio.",
    ),
    Record(
        CHECKOUT_P95,
        f"histogram_quantile(0.95, rate({m.POOL_CHECKOUT_DURATION.name}_bucket[{P95_WINDOW}]))",
        "95th percentile of the checkout wait (queue + connect + pre-ping) over "
        f"{words(P95_WINDOW)}.",
    ),
)


def _pool_alerts() -> tuple[Alert, ...]:
    lagging, oldest = t.POOL_CHECKINS_LAGGING, m.POOL_OLDEST_CHECKOUT_SECONDS.name
    slow = t.POOL_CHECKOUT_SLOW
    return (
        Alert(
            t.POOL_NEAR_CAPACITY,
            f"{WORKER_UTILIZATION} >= {t.POOL_NEAR_CAPACITY.number}",
            "Connection pool is near capacity.",
            f"Pool {POOL_AT} has {PCT} of pool_size + max_overflow checked out (in its "
            "busiest worker process).",
        ),
        Alert(
            t.POOL_EXHAUSTED,
            f"{m.POOL_WAITING.name} > {t.POOL_EXHAUSTED.number}",
            "Connection pool is exhausted and callers are waiting.",
            f"Pool {POOL_AT} has every connection (pool_size + max_overflow) checked out and "
            f"{NUM} callers queue for one; they fail with TimeoutError after pool_timeout.",
            "Callers wait only when their pool has every connection (pool_size + max_overflow) "
            "checked out, so waiters are the signal of an exhausted pool. (Not checked_out >= "
            "capacity: in multiprocess mode the gauges are summed over workers, and one worker's "
            "full pool hides in the sum while its callers still wait.)",
        ),
        Alert(
            slow,
            f"{CHECKOUT_P95} > {slow.number}",
            f"Waiting for a pooled connection takes longer than {slow.value * 1000:g} ms.",
            f"The 95th percentile checkout wait of pool {POOL_AT} is {DURATION} over the last "
            f"{words(P95_WINDOW)}.",
        ),
        Alert(
            t.POOL_TIMEOUTS,
            _increase(m.POOL_TIMEOUTS, t.POOL_TIMEOUTS),
            "Checkouts are failing with pool timeouts.",
            f"{COUNT} checkouts from pool {POOL_AT} gave up after pool_timeout in the last "
            f"{words(str(t.POOL_TIMEOUTS.window))} (sqlalchemy.exc.TimeoutError).",
        ),
        Alert(
            lagging,
            "(\n"
            f"  increase({m.POOL_CHECKOUTS.name}[{lagging.window}])\n"
            f"    - increase({m.POOL_CHECKINS.name}[{lagging.window}]) >= 1\n"
            "  and\n"
            f"  {oldest} > {lagging.number}\n"
            ")\n"
            "  or\n"
            f"{oldest} > {t.POOL_STUCK_CHECKOUT_SECONDS}",
            "Connections are checked out faster than they are returned.",
            f"Pool {POOL_AT} has returned fewer connections than it lent out and has held one "
            f"for more than {words(int(lagging.value or 0))} (or for more than "
            f"{words(t.POOL_STUCK_CHECKOUT_SECONDS)}), for {words(lagging.for_)}: a session is "
            "probably not being closed.",
            f"Checkins lag checkouts: over {words(str(lagging.window))} at least one more "
            "connection was lent out than returned while some connection has been held for "
            f"more than {words(int(lagging.value or 0))} (a load ramp has short checkouts, a "
            "leak has one that never comes back); and, once the stuck checkout has left that "
            f"window, a connection held for over {words(t.POOL_STUCK_CHECKOUT_SECONDS)}. This "
            "is the leak alert for pools instrumented without leak_threshold.",
        ),
        Alert(
            t.POOL_CONNECTION_LEAK,
            _increase(m.POOL_LEAKS, t.POOL_CONNECTION_LEAK),
            "Connections were held past the leak threshold.",
            f"{COUNT} checkouts from pool {POOL_AT} were held longer than the leak threshold in "
            f"the last {words(str(t.POOL_CONNECTION_LEAK.window))}; the application log names "
            "where each was checked out.",
        ),
        Alert(
            t.POOL_CONNECT_ERRORS,
            _increase(m.POOL_CONNECT_ERRORS, t.POOL_CONNECT_ERRORS),
            "The pool cannot open new database connections.",
            f"{COUNT} attempts by pool {POOL_AT} to open a database connection failed in the "
            f"last {words(str(t.POOL_CONNECT_ERRORS.window))}.",
        ),
        Alert(
            t.POOL_INVALIDATION_BURST,
            _increase(m.POOL_INVALIDATIONS, t.POOL_INVALIDATION_BURST),
            "Many pooled connections were invalidated.",
            f"Pool {POOL_AT} invalidated {COUNT} connections (reason {lab('reason')}) in the "
            f"last {words(str(t.POOL_INVALIDATION_BURST.window))}. pre_ping or disconnect: the "
            "server restarted, failed over, or something between drops connections; cancelled "
            "or timeout: requests were cancelled or timed out in the middle of a query.",
        ),
    )


POOL_FILE_HEADER = """\
poolwatch: alert and recording rules for SQLAlchemy connection pools (poolwatch.instrument).

Load with Prometheus `rule_files: [".../alerts/*.rules.yml"]`. Every alert has `for:`, a
`severity` label (critical | warning | info), a `summary`, a templated `description` and a
`runbook_url` into docs/runbook.md. Generated by dashboards/generate.py from the thresholds in
src/poolwatch/thresholds.py (the dashboards draw the same values): change them there.

Series carry the labels Prometheus gives the scraped app (`job`, `instance`, any target
labels such as `pg_server`) plus `pool` (the name given to instrument()). A worker process
scraped on its own exports its own series (its own `instance`); in prometheus_client
multiprocess mode one scrape reports the pool gauges summed over the live workers (livesum).
Either way, a sum over series counts every worker."""

POOL_RULES = RuleFile(
    "pool.rules.yml",
    POOL_FILE_HEADER,
    (
        Group("poolwatch-pool.rules", POOL_RECORDS),
        Group(
            "poolwatch-pool",
            _pool_alerts(),
            "Counts in descriptions are rounded: increase() extrapolates to the window's edges.",
        ),
    ),
)

# --- alerts/postgres.rules.yml ---------------------------------------------------------------

POSTGRES_RECORDS = (
    Record(
        SESSIONS,
        sessions(),
        "Client sessions on the server now (every database, role, application and state).",
    ),
    Record(
        USABLE,
        usable(),
        "Connections ordinary roles may open: max_connections minus the reserved slots.",
    ),
    Record(
        CONNECTIONS_USED,
        f"{SESSIONS} / ({USABLE} > 0)",
        "Fraction of the usable connections in use now (can pass 1 with superuser sessions).",
    ),
)


def _too_many_connections(th: Threshold) -> Alert:
    return Alert(
        th,
        f"{CONNECTIONS_USED} >= {th.number}",
        "PostgreSQL is running out of connection slots.",
        f"{SERVER_AT} has {PCT} of its usable connections (max_connections minus reserved) in use.",
    )


def _postgres_alerts() -> tuple[Alert, ...]:
    down, idle_tx = t.EXPORTER_DOWN, t.POSTGRES_IDLE_IN_TRANSACTION
    waits, blocked = t.POSTGRES_LOCK_WAITS, t.POSTGRES_BLOCKED_SESSIONS
    return (
        Alert(
            down,
            f'up{{job="poolwatch-exporter"}} == {down.number}\n'
            "  or\n"
            f"(up == {down.number} and on (job, instance) "
            f"present_over_time({m.EXPORTER_BUILD_INFO.name}[1d]))",
            "Prometheus cannot scrape poolwatch-exporter.",
            f"Target {lab('instance')} of job {lab('job')} has been down for "
            f"{words(down.for_)}: the PostgreSQL session metrics and alerts for its server are "
            "blind.",
            "The job name from docs/exporter.md and docs/dashboards.md, or any target that "
            "served exporter metrics in the last day (so a differently named job keeps "
            "alerting through a long outage).",
        ),
        Alert(
            t.POSTGRES_DOWN,
            f"{m.PG_UP.name} == {t.POSTGRES_DOWN.number}",
            "poolwatch-exporter cannot reach PostgreSQL.",
            f"The exporter {lab('instance')} (job {lab('job')}) has failed to query its "
            f"PostgreSQL server for {words(t.POSTGRES_DOWN.for_)}: the server is down, "
            "unreachable, refusing the exporter's role, or too slow to answer.",
        ),
        _too_many_connections(t.POSTGRES_CONNECTIONS_WARNING),
        _too_many_connections(t.POSTGRES_CONNECTIONS_CRITICAL),
        Alert(
            idle_tx,
            f"{m.PG_IDLE_IN_TRANSACTION_STALE_SESSIONS.name} > {idle_tx.number}",
            "Sessions sit idle inside an open transaction.",
            f"{NUM} {ON_DB} have been idle in transaction longer than the exporter's stale "
            f"threshold (5 s by default), for {words(idle_tx.for_)}: they hold a pooled "
            "connection and their locks while doing nothing.",
        ),
        Alert(
            waits,
            f"{m.PG_LOCK_WAITING_SESSIONS.name} >= {waits.number}",
            "Several sessions are waiting for locks.",
            f"{NUM} {ON_DB} are waiting for a lock, for {words(waits.for_)}; each holds a "
            "pooled connection while it waits.",
        ),
        Alert(
            blocked,
            f"{m.PG_BLOCKED_SESSIONS.name} > {blocked.number}",
            f"Sessions have been blocked by other sessions for {words(blocked.for_)}.",
            f"{NUM} {ON_DB} are blocked by another session, and there have been blocked "
            f"sessions at every evaluation for {words(blocked.for_)}.",
        ),
    )


POSTGRES_RULES = RuleFile(
    "postgres.rules.yml",
    """\
poolwatch: alert and recording rules for PostgreSQL sessions (poolwatch-exporter).
Generated by dashboards/generate.py from src/poolwatch/thresholds.py: change them there.

Series carry the exporter target's labels (`job`, `instance`, and any target labels such
as `pg_server`) plus the metric's own (`datname`, ...). One exporter watches one server.""",
    (
        Group("poolwatch-postgres.rules", POSTGRES_RECORDS),
        Group("poolwatch-postgres", _postgres_alerts()),
    ),
)
