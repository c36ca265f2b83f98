"""alerts/budget.rules.yml: the connection budget along the chain app -> PgBouncer -> PostgreSQL.

Three comparisons per server (label ``pg_server``): pools that connect directly against
PostgreSQL's usable connections; pools marked ``through_pgbouncer`` against PgBouncer's
``max_client_conn``; and what PgBouncer may open to the server (plus the direct pools)
against the usable connections. Adding an alert: see ``rules.py``'s docstring.
"""

from __future__ import annotations

from pgbouncer_rules import SERVER_LIMIT
from promql import sel
from rule_yaml import Alert, Group, Record, RuleFile, words
from rules import CAPACITY, NUM, USABLE

from poolwatch import metric_names as m
from poolwatch import thresholds as t

DIRECT = "pg_server:sqlalchemy_pool_capacity:sum"
THROUGH = "pg_server:sqlalchemy_pool_capacity_through_pgbouncer:sum"
MAX_CLIENT = "pg_server:pgbouncer_max_client_connections:sum"
PGB_SERVER = "pg_server:pgbouncer_server_connections_limit:sum"
ALLOWED = "pg_server:pg_connections_allowed:sum"
BUDGET_USABLE = "pg_server:pg_usable_connections:min"

BOUNCED = f"({sel(m.POOL_THROUGH_PGBOUNCER)} == 1)"
SERVER = "{{ with $labels.pg_server }}{{ . }}{{ else }}(no pg_server label){{ end }}"
RIDE_OUT = (
    f"{words(t.CONNECTION_BUDGET_EXCEEDED.for_).capitalize()}: long enough to ride out a "
    "rolling deploy, when old and new workers both report."
)


def lookup(record: str) -> str:
    """The value of ``record`` for the alert's pg_server, in an annotation (empty if none)."""
    return (
        '{{ with printf "' + record + "{pg_server='%s'}\" $labels.pg_server | query }}"
        "{{ . | first | value | humanize }}{{ end }}"
    )


RECORDS = (
    Record(
        DIRECT,
        f"sum by (pg_server) ({CAPACITY} unless {BOUNCED})",
        "Connections the pools that connect to a server directly may open together (pools "
        "instrumented with through_pgbouncer=True are budgeted against PgBouncer instead).",
    ),
    Record(
        THROUGH,
        f"sum by (pg_server) ({CAPACITY} and {BOUNCED})",
        "Client connections the pools that go through PgBouncer may open together.",
    ),
    Record(
        MAX_CLIENT,
        f"sum by (pg_server) ({sel(m.PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS)})",
        "max_client_conn of the PgBouncers in front of a server (several behind one address "
        "add up; watch each PgBouncer with one exporter).",
    ),
    Record(
        PGB_SERVER,
        f"sum by (pg_server) ({SERVER_LIMIT})",
        "Server connections the PgBouncers in front of a server may open to it.",
    ),
    Record(
        BUDGET_USABLE,
        f"min by (pg_server) ({USABLE})",
        "The server's usable connections (min: two exporters on one server count it once).",
    ),
    Record(
        ALLOWED,
        f"sum by (pg_server) (\n  {SERVER_LIMIT}\n    or\n  ({CAPACITY} unless {BOUNCED})\n)\n"
        f"  and on (pg_server)\n{PGB_SERVER}",
        "Connections a server behind PgBouncer may be asked for: PgBouncer's server side plus "
        "the pools that connect directly.",
    ),
)


def _alerts() -> tuple[Alert, ...]:
    over_direct = f"{DIRECT} > on (pg_server) {BUDGET_USABLE}"
    return (
        Alert(
            t.CONNECTION_BUDGET_EXCEEDED,
            f"{DIRECT}\n  > on (pg_server)\n{BUDGET_USABLE}",
            "The pools may open more connections than PostgreSQL allows.",
            f"Every pool connecting directly to PostgreSQL server {SERVER} may open {NUM} "
            "connections together (pool_size + max_overflow summed over all pools and worker "
            f"processes), more than the server's {lookup(BUDGET_USABLE)} usable connections "
            '(max_connections minus reserved). At peak, checkouts fail with "too many '
            'connections".',
            RIDE_OUT + " Pools with through_pgbouncer=True are not counted here.",
        ),
        Alert(
            t.PGBOUNCER_CLIENT_BUDGET_EXCEEDED,
            f"{THROUGH}\n  > on (pg_server)\n{MAX_CLIENT}",
            "The pools may open more client connections than PgBouncer accepts.",
            f"The pools that reach PostgreSQL server {SERVER} through PgBouncer may open {NUM} "
            "client connections together (pool_size + max_overflow summed over all pools and "
            f"worker processes), more than PgBouncer's max_client_conn ({lookup(MAX_CLIENT)}). "
            'At peak PgBouncer refuses them with "no more connections '
            'allowed (max_client_conn)".',
            RIDE_OUT,
        ),
        Alert(
            t.PGBOUNCER_SERVER_BUDGET_EXCEEDED,
            f"({ALLOWED} > on (pg_server) {BUDGET_USABLE})\n"
            f"  unless on (pg_server)\n({over_direct})",
            "PgBouncer's server pools may open more connections than PostgreSQL allows.",
            f"PgBouncer may open {lookup(PGB_SERVER)} server connections to PostgreSQL server "
            f"{SERVER} (pool_size + reserve_pool of each database/user pool, capped by "
            "max_db_connections and max_user_connections); with the pools that connect "
            f"directly that is {NUM}, more than the server's {lookup(BUDGET_USABLE)} usable "
            'connections. At peak PgBouncer\'s server logins fail with "too many connections" '
            "and its clients queue.",
            RIDE_OUT + " Quiet while the direct pools alone exceed the budget "
            f"({t.CONNECTION_BUDGET_EXCEEDED.alert} says so).",
        ),
    )


BUDGET_RULES = RuleFile(
    "budget.rules.yml",
    """\
poolwatch: the connection budget, joining the apps' pools (pool.rules.yml), PgBouncer
(pgbouncer.rules.yml) and the server they connect to (postgres.rules.yml). Load all four
rule files together. Generated by dashboards/generate.py from src/poolwatch/thresholds.py:
change them there.

The budget (seed formula): the sum of pool_size + max_overflow over every pool of every
worker process pointed at a server must stay at or below that server's max_connections minus
its reserved slots. Each worker process scraped on its own exports its own pool series (a
distinct `instance`); in prometheus_client multiprocess mode the size and max_overflow
gauges are already summed over the live workers (livesum). Either way the sums below count
every process.

Pools that go through PgBouncer (instrument(engine, through_pgbouncer=True), exported as
sqlalchemy_pool_through_pgbouncer 1) leave that budget: they are budgeted against
max_client_conn of the PgBouncer with the same `pg_server`, and PgBouncer's server-side
pools (pool_size + reserve_pool per database/user pool, capped by max_db_connections /
max_user_connections) plus the direct pools against the server's usable connections.

Which pools point at which server: the label `pg_server`. Set it to the same value on the app
targets, on the poolwatch-exporter target of the server and on the one of its PgBouncer (see
docs/dashboards.md):
  - one PostgreSQL server: set nothing; everything sums together and joins on no label;
  - several servers: a target label (`static_configs: [{labels: {pg_server: main}}]`) or a
    metric_relabel_configs rule that derives it from the `pool` label.
Pool series whose `pg_server` matches no exporter are not budgeted (there is no ceiling to
compare them with).""",
    (
        Group("poolwatch-budget.rules", RECORDS),
        Group("poolwatch-budget", _alerts()),
    ),
)
