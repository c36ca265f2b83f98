"""alerts/pgbouncer.rules.yml: PgBouncer's pools, clients and health (poolwatch-exporter).

The server-side limit records here (what PgBouncer may open to PostgreSQL) feed the chain
budget in ``budget_rules.py``. Adding an alert: see ``rules.py``'s docstring.
"""

from __future__ import annotations

from promql import PGB_REAL, as_pool_database, min_capped, sel
from rule_yaml import Alert, Group, Record, RuleFile, lab, words

from poolwatch import metric_names as m
from poolwatch import thresholds as t

CLIENTS_USED = "instance:pgbouncer_client_connections_used:ratio"
POOL_LIMIT = "database_user:pgbouncer_server_connections:limit"
DATABASE_LIMIT = "database:pgbouncer_server_connections:limit"
USER_LIMIT = "user:pgbouncer_server_connections:limit"
SERVER_LIMIT = "instance:pgbouncer_server_connections:limit"

POOL_AT = f"{lab('database')}/{lab('user')} (exporter {lab('instance')}, job {lab('job')})"
PGB_AT = f"The PgBouncer watched by {lab('instance')} (job {lab('job')})"
NUM = "{{ $value | humanize }}"
PCT = "{{ $value | humanizePercentage }}"
DURATION = "{{ $value | humanizeDuration }}"
# Pool series keyed like SHOW DATABASES after as_pool_database().
BY_DATABASE = "job, instance, database"


RECORDS = (
    Record(
        CLIENTS_USED,
        f"{sel(m.PGBOUNCER_USED_CLIENTS)}\n  /\n"
        f"({sel(m.PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS)} > 0)",
        "Fraction of max_client_conn in use (SHOW LISTS used_clients / max_client_conn).",
    ),
    Record(
        POOL_LIMIT,
        f"0 * {sel(m.PGBOUNCER_POOLS_SERVER_ACTIVE, PGB_REAL)}\n"
        f"  + on ({BY_DATABASE}) group_left ()\n"
        + as_pool_database(
            f"{sel(m.PGBOUNCER_DATABASES_POOL_SIZE)} + {sel(m.PGBOUNCER_DATABASES_RESERVE_POOL)}"
        ),
        "Server connections one PgBouncer pool (database, user) may open: its database's "
        "pool_size + reserve_pool. Pools exist once a client connected; the admin console "
        "(database pgbouncer) has no server behind it.",
    ),
    Record(
        DATABASE_LIMIT,
        min_capped(
            f"sum without (user) ({POOL_LIMIT})",
            as_pool_database(f"{sel(m.PGBOUNCER_DATABASES_MAX_CONNECTIONS)} > 0"),
            BY_DATABASE,
        ),
        "Per database: its pools' limits summed over users, capped by max_db_connections "
        "(SHOW DATABASES max_connections; 0 = unlimited).",
    ),
    Record(
        USER_LIMIT,
        min_capped(
            f"sum without (database) ({POOL_LIMIT})",
            f"{sel(m.PGBOUNCER_CONFIG_MAX_USER_CONNECTIONS)} > 0",
            "job, instance",
        ),
        "Per user: its pools' limits summed over databases, capped by max_user_connections "
        "(0 = unlimited; per-user overrides in [users] are not exported).",
    ),
    Record(
        SERVER_LIMIT,
        min_capped(
            f"sum without (database) ({DATABASE_LIMIT})", f"sum without (user) ({USER_LIMIT})", ""
        ),
        "Server connections one PgBouncer may open to PostgreSQL: the smaller of the two "
        "capped sums (an upper bound, exact when only one kind of cap is set).",
    ),
)


def _alerts() -> tuple[Alert, ...]:
    down, waiting, slow = t.PGBOUNCER_DOWN, t.PGBOUNCER_CLIENTS_WAITING, t.PGBOUNCER_WAIT_SLOW
    saturated, near = t.PGBOUNCER_SERVER_POOL_SATURATED, t.PGBOUNCER_CLIENT_CONNECTIONS
    up = m.PGBOUNCER_UP.name
    return (
        Alert(
            down,
            f"{up} == {down.number}\n  or\n0 * present_over_time({up}[1d]) unless {up}",
            "poolwatch-exporter cannot read PgBouncer's admin console.",
            f"{PGB_AT} has not answered for {words(down.for_)} (pgbouncer_up 0, or no "
            "pgbouncer_up at all although the exporter reported one in the last day): "
            "PgBouncer is down, refusing the exporter's stats user, or the exporter is gone. "
            "Applications that connect through it get connection errors.",
            "Absent too: a target that reported pgbouncer_up in the last day and stopped "
            "(the exporter died or lost its PgBouncer flags) alerts as well.",
        ),
        Alert(
            waiting,
            f"{sel(m.PGBOUNCER_POOLS_CLIENT_WAITING, PGB_REAL)} > {waiting.number}",
            "Clients queue inside PgBouncer for a server connection.",
            f"{NUM} clients of PgBouncer pool {POOL_AT} wait for a server connection, and "
            f"clients have waited at every evaluation for {words(waiting.for_)}: every "
            "server connection of the pool is busy. The application's own checkout wait "
            "does not show this queue.",
        ),
        Alert(
            slow,
            f"{sel(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT, PGB_REAL)} > {slow.number}",
            f"A client has waited in PgBouncer for longer than {(slow.value or 0) * 1000:g} ms.",
            f"The oldest waiting client of PgBouncer pool {POOL_AT} has waited {DURATION}, "
            f"and the longest wait has stayed above {(slow.value or 0) * 1000:g} ms for "
            f"{words(slow.for_)}. To the application this looks like slow queries.",
        ),
        Alert(
            saturated,
            f"{sel(m.PGBOUNCER_POOLS_SERVER_ACTIVE, PGB_REAL)}\n"
            f"  >= on ({BY_DATABASE}) group_left ()\n"
            + as_pool_database(f"{sel(m.PGBOUNCER_DATABASES_POOL_SIZE)} > 0"),
            "A PgBouncer server pool has every connection of its pool_size in use.",
            f"PgBouncer pool {POOL_AT} has {NUM} server connections linked to clients, all "
            f"of its database's pool_size, for {words(saturated.for_)}: more transactions "
            "queue in PgBouncer (or use the reserve pool).",
            "SHOW POOLS has (database, user); SHOW DATABASES has the pool_size, keyed by "
            "name: label_replace joins them.",
        ),
        Alert(
            near,
            f"{CLIENTS_USED} >= {near.number}",
            "PgBouncer is running out of client connections (max_client_conn).",
            f"{PGB_AT} has {PCT} of max_client_conn in use for {words(near.for_)}; at 100 % it "
            'refuses new clients with "no more connections allowed (max_client_conn)".',
        ),
    )


PGBOUNCER_RULES = RuleFile(
    "pgbouncer.rules.yml",
    """\
poolwatch: alert and recording rules for PgBouncer (poolwatch-exporter watching its admin
console). Generated by dashboards/generate.py from src/poolwatch/thresholds.py: change them
there. budget.rules.yml uses the server-connection limits recorded here.

Series carry the exporter target's labels (`job`, `instance`, and any target labels such
as `pg_server`) plus the metric's own: SHOW POOLS `database`, `user`; SHOW DATABASES `name`
(PgBouncer's database, which SHOW POOLS calls `database`) and `database` (PostgreSQL's).""",
    (
        Group("poolwatch-pgbouncer.rules", RECORDS),
        Group("poolwatch-pgbouncer", _alerts()),
    ),
)
