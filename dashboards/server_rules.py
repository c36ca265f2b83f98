"""alerts/server.rules.yml: long transactions and queries, sessions ended by the server,
deadlocks, per-role / per-database connection limits, restarts and role changes (issue 17).

The same four steps as every alert (see ``rules.py``); the series come from the exporter's
``transactions``, ``database_stats``, ``limits`` and ``server`` collectors.
"""

from __future__ import annotations

from rule_yaml import Alert, Group, RuleFile, lab, words

from poolwatch import metric_names as m
from poolwatch import thresholds as t

EXPORTER = f"exporter {lab('instance')}, job {lab('job')}"
ON_DB = f"database {lab('datname')} ({EXPORTER})"
COUNT = '{{ printf "%.0f" $value }}'
PCT = "{{ $value | humanizePercentage }}"
DURATION = "{{ $value | humanizeDuration }}"
# The server's role now, looked up from the description (the alert's value is a change count).
_ROLE_NOW = (
    '{{ with printf "' + m.PG_REPLICATION_IS_REPLICA.name + "{instance='%s',job='%s'}\" "
    "$labels.instance $labels.job | query }}{{ if eq (. | first | value) 1.0 }}a standby"
    "{{ else }}the primary{{ end }}{{ end }}"
)


def _increase(spec: m.MetricSpec, th: t.Threshold) -> str:
    return f"increase({spec.name}[{th.window}]) > {th.number}"


def _near_limit(th: t.Threshold, used: m.MetricSpec, limit: m.MetricSpec, what: str) -> Alert:
    label = used.labels[0]
    return Alert(
        th,
        f"{used.name} / ({limit.name} > 0) >= {th.number}",
        f"A {what} is near its own connection limit.",
        f"{what.capitalize()} {lab(label)} has {PCT} of its CONNECTION LIMIT in use ({EXPORTER}); "
        f'at 100 % new sessions fail with "too many connections for {what}", before '
        "max_connections is reached.",
    )


def _alerts() -> tuple[Alert, ...]:
    long_tx, long_query = t.POSTGRES_LONG_TRANSACTION, t.POSTGRES_LONG_QUERY
    fatal, deadlocks = t.POSTGRES_SESSIONS_FATAL, t.POSTGRES_DEADLOCKS
    restarted, changed = t.POSTGRES_RESTARTED, t.POSTGRES_ROLE_CHANGED
    return (
        Alert(
            long_tx,
            f"max without (state) ({m.PG_TRANSACTION_MAX_AGE_SECONDS.name}) > {long_tx.number}",
            f"A transaction has been open for more than {words(int(long_tx.value or 0))}.",
            f"The oldest transaction on {ON_DB} has been open for {DURATION}: it holds a pooled "
            "connection, its locks, and vacuum's cleanup horizon.",
        ),
        Alert(
            long_query,
            f"{m.PG_QUERY_MAX_AGE_SECONDS.name} > {long_query.number}",
            f"A statement has been running for more than {words(int(long_query.value or 0))}.",
            f"The longest-running statement on {ON_DB} has been active for {DURATION}, longer "
            f"than the recommended statement_timeout of {words(int(long_query.value or 0))}: "
            "the timeout is not in force for that session.",
        ),
        Alert(
            fatal,
            _increase(m.PG_STAT_DATABASE_SESSIONS_FATAL, fatal),
            "The server ended sessions with a FATAL error (idle_in_transaction_session_timeout).",
            f"{COUNT} sessions to {ON_DB} were ended by a FATAL error in the last "
            f"{words(str(fatal.window))}; idle_in_transaction_session_timeout is the usual one: "
            "the timeout works, but something leaves transactions open.",
        ),
        Alert(
            deadlocks,
            _increase(m.PG_STAT_DATABASE_DEADLOCKS, deadlocks),
            "Transactions deadlocked.",
            f"{COUNT} deadlocks were detected on {ON_DB} in the last "
            f"{words(str(deadlocks.window))}; each held two pooled connections for "
            "deadlock_timeout and failed one transaction.",
        ),
        _near_limit(
            t.POSTGRES_ROLE_CONNECTION_LIMIT,
            m.PG_ROLES_CONNECTIONS,
            m.PG_ROLES_CONNECTION_LIMIT,
            "role",
        ),
        _near_limit(
            t.POSTGRES_DATABASE_CONNECTION_LIMIT,
            m.PG_DATABASE_CONNECTIONS,
            m.PG_DATABASE_CONNECTION_LIMIT,
            "database",
        ),
        Alert(
            restarted,
            f"changes({m.PG_POSTMASTER_START_TIME.name}[{restarted.window}]) > {restarted.number}",
            "PostgreSQL restarted (or another server now answers).",
            f"The start time of the server behind {EXPORTER} changed in the last "
            f"{words(str(restarted.window))}: it restarted, or a fail-over pointed the exporter at "
            "another server. Every pooled connection to it was dropped.",
            "Read next to PoolwatchPoolInvalidationBurst: the pools' invalidations explained.",
        ),
        Alert(
            changed,
            f"changes({m.PG_REPLICATION_IS_REPLICA.name}[{changed.window}]) > {changed.number}",
            "PostgreSQL changed role between primary and standby.",
            f"The server behind {EXPORTER} changed role in the last {words(str(changed.window))} "
            f"and is now {_ROLE_NOW}: a fail-over or a switch-over. Pools pointed at it may "
            "be writing to a standby, or be cut off from the new primary.",
        ),
    )


SERVER_RULES = RuleFile(
    "server.rules.yml",
    """\
poolwatch: alert rules for the PostgreSQL server's transactions, session ends, connection
limits and role (poolwatch-exporter). Generated by dashboards/generate.py from
src/poolwatch/thresholds.py: change them there.

Series carry the exporter target's labels (`job`, `instance`, any target labels) plus the
metric's own (`datname`, `rolname`). The session counters need PostgreSQL 14+.""",
    (Group("poolwatch-server", _alerts()),),
)
