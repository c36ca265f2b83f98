"""The demo's evaluation of the server alerts (alerts/server.rules.yml), fed plain text
expositions as the exporter serves them (no server): each fires at the table's value and not
below it; counters and changes compare the latest scrape with the run's first one."""

from __future__ import annotations

import pytest

from poolwatch import metric_names as m
from poolwatch import thresholds as t
from poolwatch.demo.metrics import AlertRule, Samples, Snapshot, firing, load_rules

DB = "app"


def pg(*lines: str) -> Snapshot:
    """A snapshot whose exporter scrape is ``lines`` (the app side is empty)."""
    text = "".join(f"{line}\n" for line in lines)
    return Snapshot(0.0, Samples(), Samples.parse(text))


def counter(spec: m.MetricSpec, value: float, datname: str = DB) -> str:
    """A counter's TYPE line and sample, as the exporter writes them."""
    return f'# TYPE {spec.name.removesuffix("_total")} counter\n{spec.name}{{datname="{datname}"}} {value}'


def rule(threshold: t.Threshold) -> AlertRule:
    (found,) = [r for r in load_rules()[0] if r.name == threshold.alert]
    assert (found.severity, found.for_) == (threshold.severity, threshold.for_)
    return found


def test_every_server_alert_is_evaluated() -> None:
    assert {r.name for r in load_rules()[0]} >= {th.alert for th in t.SERVER}


@pytest.mark.parametrize(
    ("threshold", "spec", "labels", "what"),
    [
        (
            t.POSTGRES_LONG_TRANSACTION,
            m.PG_TRANSACTION_MAX_AGE_SECONDS,
            'state="idle in transaction"',
            "a transaction open",
        ),
        (t.POSTGRES_LONG_QUERY, m.PG_QUERY_MAX_AGE_SECONDS, "", "a statement running"),
    ],
)
def test_ages_fire_above_the_threshold_in_the_demo_database(
    threshold: t.Threshold, spec: m.MetricSpec, labels: str, what: str
) -> None:
    check = rule(threshold).check
    limit = threshold.value or 0
    extra = f",{labels}" if labels else ""

    def age(seconds: float, datname: str = DB) -> Snapshot:
        return pg(f'{spec.name}{{datname="{datname}"{extra}}} {seconds}')

    assert check(age(limit + 1), age(0), DB) == f"{what} for {limit + 1:.0f} s > {limit:g} s"
    assert check(age(limit), age(0), DB) is None  # the rule says >, not >=
    assert check(age(limit + 1, datname="elsewhere"), age(0), DB) is None


def test_long_transaction_takes_the_oldest_of_any_state() -> None:
    check = rule(t.POSTGRES_LONG_TRANSACTION).check
    limit = t.POSTGRES_LONG_TRANSACTION.value or 0
    spec = m.PG_TRANSACTION_MAX_AGE_SECONDS.name
    now = pg(
        f'{spec}{{datname="{DB}",state="active"}} 1',
        f'{spec}{{datname="{DB}",state="idle in transaction"}} {limit + 5}',
    )
    assert check(now, pg(), DB) == f"a transaction open for {limit + 5:.0f} s > {limit:g} s"


@pytest.mark.parametrize(
    ("threshold", "spec"),
    [
        (t.POSTGRES_SESSIONS_FATAL, m.PG_STAT_DATABASE_SESSIONS_FATAL),
        (t.POSTGRES_DEADLOCKS, m.PG_STAT_DATABASE_DEADLOCKS),
    ],
)
def test_counters_fire_on_an_increase_since_the_first_scrape(
    threshold: t.Threshold, spec: m.MetricSpec
) -> None:
    check = rule(threshold).check
    first = pg(counter(spec, 7))
    assert check(pg(counter(spec, 7)), first, DB) is None  # years of history: no increase
    why = check(pg(counter(spec, 9)), first, DB)
    assert why is not None and why.startswith("2 ")
    # A counter below the first scrape's is a reset (the server restarted): all of it counts.
    why = check(pg(counter(spec, 1)), first, DB)
    assert why is not None and why.startswith("1 ")
    assert check(pg(counter(spec, 0)), first, DB) is None
    # Another database's increase is not the demo's; one scrape alone is no increase.
    assert check(pg(counter(spec, 9, datname="other")), pg(counter(spec, 7, "other")), DB) is None
    assert check(pg(counter(spec, 9)), pg(), DB) is None
    assert check(pg(), first, DB) is None


@pytest.mark.parametrize(
    ("threshold", "used", "limit", "label"),
    [
        (
            t.POSTGRES_ROLE_CONNECTION_LIMIT,
            m.PG_ROLES_CONNECTIONS,
            m.PG_ROLES_CONNECTION_LIMIT,
            "rolname",
        ),
        (
            t.POSTGRES_DATABASE_CONNECTION_LIMIT,
            m.PG_DATABASE_CONNECTIONS,
            m.PG_DATABASE_CONNECTION_LIMIT,
            "datname",
        ),
    ],
)
def test_a_role_or_database_near_its_own_limit(
    threshold: t.Threshold, used: m.MetricSpec, limit: m.MetricSpec, label: str
) -> None:
    check = rule(threshold).check
    at = threshold.value or 0
    cap = 20
    n = round(cap * at)  # 18 of 20 = 90 %

    def sessions(k: float, name: str = "svc", of: float = cap) -> list[str]:
        return [f'{limit.name}{{{label}="{name}"}} {of}', f'{used.name}{{{label}="{name}"}} {k}']

    what = "role" if label == "rolname" else "database"
    assert (
        check(pg(*sessions(n)), pg(), DB) == f"{label} svc: {n / cap:.0%} of its CONNECTION LIMIT"
    )
    assert check(pg(*sessions(n - 1)), pg(), DB) is None, what
    # The fullest one is named; a limit of 0 (none) or -1 is not a limit.
    both = pg(*sessions(n - 1), *sessions(cap, name="batch"))
    assert check(both, pg(), DB) == f"{label} batch: 100% of its CONNECTION LIMIT"
    assert check(pg(*sessions(5, of=0)), pg(), DB) is None


@pytest.mark.parametrize(
    ("threshold", "spec", "before", "after", "why"),
    [
        (
            t.POSTGRES_RESTARTED,
            m.PG_POSTMASTER_START_TIME,
            1.7e9,
            1.7e9 + 600,
            "the server's start time moved",
        ),
        (
            t.POSTGRES_ROLE_CHANGED,
            m.PG_REPLICATION_IS_REPLICA,
            0,
            1,
            "the server changed role (primary / standby)",
        ),
    ],
)
def test_a_restart_or_role_change_between_the_first_scrape_and_now(
    threshold: t.Threshold, spec: m.MetricSpec, before: float, after: float, why: str
) -> None:
    check = rule(threshold).check
    assert check(pg(f"{spec.name} {after}"), pg(f"{spec.name} {before}"), DB) == why
    assert check(pg(f"{spec.name} {before}"), pg(f"{spec.name} {before}"), DB) is None
    # The exporter down at either scrape: no change seen (as changes() over a gap).
    assert check(pg(f"{spec.name} {after}"), pg(), DB) is None
    assert check(pg(), pg(f"{spec.name} {before}"), DB) is None


def test_a_quiet_server_fires_no_server_alert() -> None:
    quiet = pg(
        f'{m.PG_TRANSACTION_MAX_AGE_SECONDS.name}{{datname="{DB}",state="active"}} 0.2',
        f'{m.PG_QUERY_MAX_AGE_SECONDS.name}{{datname="{DB}"}} 0.1',
        counter(m.PG_STAT_DATABASE_SESSIONS_FATAL, 3),
        counter(m.PG_STAT_DATABASE_DEADLOCKS, 1),
        f'{m.PG_ROLES_CONNECTION_LIMIT.name}{{rolname="svc"}} 20',
        f'{m.PG_ROLES_CONNECTIONS.name}{{rolname="svc"}} 2',
        f"{m.PG_POSTMASTER_START_TIME.name} 1.7e9",
        f"{m.PG_REPLICATION_IS_REPLICA.name} 0",
    )
    server = {th.alert for th in t.SERVER}
    assert [r.name for r, _ in firing(load_rules()[0], quiet, quiet, DB) if r.name in server] == []
