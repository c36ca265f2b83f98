"""Each PostgreSQL collector fed plain rows, shaped as the scrape statement returns them
(no database)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import pytest

from poolwatch.exporter.collectors import REGISTRY, build_sql
from poolwatch.exporter.collectors.connections import ConnectionsCollector
from poolwatch.exporter.collectors.locks import LocksCollector
from poolwatch.exporter.collectors.sessions import SessionsCollector
from poolwatch.exporter.collectors.snapshot import Names, PgSnapshot
from poolwatch.exporter.collectors.transactions import TransactionsCollector
from poolwatch.exporter.database import Features
from poolwatch.exporter.exposition import Family
from poolwatch.exporter.target import CollectorRunner

CLIENT = "client backend"
PG18 = Features(
    version_num=180000, has_backend_type=True, has_waitstart=True, has_reserved_connections=True
)


def session(
    db: str | None,
    user: str | None,
    app: str,
    state: str | None,
    n: int,
    *,
    backend: str = CLIENT,
    state_age: float | None = 1.0,
    xact_age: float | None = None,
    query_age: float | None = None,
    over: int = 0,
    wait: tuple[str | None, str | None] = (None, None),
    datid: int | None = 5,
    usesysid: int | None = 10,
) -> list[Any]:
    """One row of the ``sessions`` column."""
    return [
        *(db, user, app, state, backend, n, state_age, xact_age, query_age, over),
        *wait,
        *(datid, usesysid),
    ]


def row(sessions: list[list[Any]], **columns: Any) -> dict[str, Any]:
    """A result row: JSON text columns, as asyncpg hands them over."""
    base: dict[str, Any] = {
        "max_connections": 100,
        "reserved_connections": 3,
        "sees_all_sessions": True,
        "lock_wait": None,
        "blocking": None,
    }
    base.update(columns)
    base["sessions"] = json.dumps(sessions)
    for key in ("lock_wait", "blocking"):
        if base[key] is not None:
            base[key] = json.dumps(base[key])
    return base


def samples(families: Iterable[Family]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    out = {}
    for fam in families:
        for values, value in fam.points:
            out[(fam.sample_name, tuple(sorted(zip(fam.label_names, values, strict=True))))] = value
    return out


def get(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def sessions(found: dict[Any, float], datname: str, usename: str, app: str, state: str) -> Any:
    """The pg_sessions sample of one (database, role, application, state)."""
    labels = {"datname": datname, "usename": usename, "application_name": app, "state": state}
    return get(found, "pg_sessions", **labels)


def run(collector: Any, snapshot: PgSnapshot) -> dict[Any, float]:
    return samples(collector.collect(snapshot, snapshot.fold))


def test_connections_reports_both_settings() -> None:
    found = run(ConnectionsCollector(), PgSnapshot.from_row(row([], max_connections=250), 10))
    assert get(found, "pg_max_connections") == 250
    assert get(found, "pg_reserved_connections") == 3


def test_sessions_by_labels_with_folding_hidden_and_backends() -> None:
    snap = PgSnapshot.from_row(
        row(
            [
                session("shop", "app", "web", "idle", 5),
                session("shop", "app", "web", "active", 2),
                session("shop", "app", "cron", "idle", 1),
                session("shop", "other_role", "psql", None, 4),  # hidden from the role
                session(None, None, "", None, 1, backend="autovacuum launcher", datid=None),
            ],
            sees_all_sessions=False,
        ),
        top_n=2,
    )
    found = run(SessionsCollector(), snap)
    assert sessions(found, "shop", "app", "web", "idle") == 5
    # top 2 applications by sessions are web (7) and psql (4): cron folds into "other"
    assert sessions(found, "shop", "app", "other", "idle") == 1
    assert sessions(found, "shop", "other_role", "psql", "unknown") == 4
    assert sum(v for (n, _), v in found.items() if n == "pg_sessions") == 12
    assert get(found, "pg_backends", backend_type=CLIENT) == 12
    assert get(found, "pg_backends", backend_type="autovacuum launcher") == 1
    assert get(found, "poolwatch_exporter_hidden_sessions") == 4
    assert get(found, "poolwatch_exporter_sees_all_sessions") == 0


def test_transactions_ages_and_stale_counts() -> None:
    snap = PgSnapshot.from_row(
        row(
            [
                session(
                    "shop",
                    "app",
                    "web",
                    "idle in transaction",
                    3,
                    state_age=7.5,
                    xact_age=9.0,
                    over=2,
                ),
                session(
                    "shop",
                    "app",
                    "web",
                    "idle in transaction (aborted)",
                    1,
                    state_age=2.0,
                    xact_age=20.0,
                ),
                session("shop", "app", "web", "active", 2, xact_age=4.0, query_age=3.5),
                session("shop", "app", "web", "idle", 4, state_age=-0.1),  # clamps to 0
            ]
        ),
        10,
    )
    found = run(TransactionsCollector(), snap)
    key = {"datname": "shop", "application_name": "web"}
    assert get(found, "pg_idle_in_transaction_sessions", **key) == 4
    assert get(found, "pg_idle_in_transaction_max_idle_seconds", **key) == 7.5
    assert get(found, "pg_idle_in_transaction_max_age_seconds", **key) == 20.0
    assert get(found, "pg_idle_in_transaction_stale_sessions", datname="shop") == 2
    assert get(found, "pg_transaction_max_age_seconds", datname="shop", state="active") == 4.0
    assert get(found, "pg_transaction_max_age_seconds", datname="shop", state="idle") is None
    assert get(found, "pg_query_max_age_seconds", datname="shop") == 3.5


def test_locks_per_database_folded_like_the_sessions() -> None:
    snap = PgSnapshot.from_row(
        row(
            [session("shop", "app", "web", "active", 5), session("crm", "app", "web", "idle", 1)],
            lock_wait=[["shop", 4, 3, 2.5, 5], ["crm", 1, 1, -0.2, 6]],
            blocking=[["shop", 1, 5], ["crm", 2, 6]],
        ),
        top_n=1,
    )
    found = run(LocksCollector(), snap)
    assert get(found, "pg_lock_waiting_sessions", datname="shop") == 4
    assert get(found, "pg_lock_waiting_sessions", datname="other") == 1  # crm is folded
    assert get(found, "pg_blocked_sessions", datname="shop") == 3
    assert get(found, "pg_lock_wait_max_seconds", datname="shop") == 2.5
    assert get(found, "pg_lock_wait_max_seconds", datname="other") == 0.0
    assert get(found, "pg_blocking_sessions", datname="other") == 2


def test_lock_waiters_by_application_name_folded_like_the_sessions() -> None:
    lock = ("Lock", "transactionid")
    snap = PgSnapshot.from_row(
        row(
            [
                session("shop", "app", "web", "active", 3, wait=lock),
                session("shop", "app", "web", "active", 2, wait=("IO", "DataFileRead")),
                session("shop", "app", "cron", "active", 1, wait=lock),
                session("shop", "app", "psql", "active", 1, wait=("Lock", "relation")),
                session("shop", "app", "web", "idle in transaction", 4),
            ]
        ),
        top_n=1,  # web (9 sessions) is kept
    )
    found = run(LocksCollector(), snap)
    name = "pg_lock_waiting_sessions_by_application"
    assert get(found, name, datname="shop", application_name="web") == 3
    assert get(found, name, datname="shop", application_name="other") == 2  # cron + psql
    assert {key for key in found if key[0] == name} == {
        (name, (("application_name", "web"), ("datname", "shop"))),
        (name, (("application_name", "other"), ("datname", "shop"))),
    }


def test_a_degraded_row_is_named_from_the_last_complete_one() -> None:
    complete = PgSnapshot.from_row(
        row([session("shop", "app", "web", "idle", 3, datid=16384, usesysid=16385)]), 10
    )
    names = Names.from_sessions(complete.sessions_raw)
    degraded = PgSnapshot.from_row(
        row(
            [
                session(None, None, "web", "idle", 3, datid=16384, usesysid=16385),
                session(None, None, "web", "idle", 1, datid=99, usesysid=16385),  # never seen
            ],
            lock_wait=[[None, 2, 2, 1.0, 16384]],
        ),
        10,
        degraded=True,
        names=names,
    )
    assert degraded.degraded
    found = run(SessionsCollector(), degraded)
    assert sessions(found, "shop", "app", "web", "idle") == 3
    assert sessions(found, "oid:99", "app", "web", "idle") == 1
    locks = run(LocksCollector(), degraded)
    assert get(locks, "pg_lock_waiting_sessions", datname="shop") == 2


def test_the_degraded_statement_reads_neither_locked_catalog() -> None:
    full = build_sql(PG18)
    ids_only = build_sql(PG18, names=False)
    assert "pg_database" in full and "pg_roles" in full
    for catalog in ("pg_database", "pg_roles", "pg_authid", "pg_has_role"):
        assert catalog not in ids_only, catalog
    # same columns, same order: the collectors read both alike
    columns = [c for c in REGISTRY.values() if c.columns(PG18, True).strip()]
    for collector in columns:
        assert collector.columns(PG18, False).count(" AS ") == collector.columns(PG18, True).count(
            " AS "
        ), collector.name


class Broken:
    """A collector with a bug: yields one family, then raises."""

    name = "broken"

    def collect(self, snapshot: PgSnapshot, fold: Any) -> Iterable[Family]:
        yield from ConnectionsCollector().collect(snapshot, fold)
        raise KeyError("no such column")


def test_runner_isolates_a_raising_collector_and_logs_per_transition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    snap = PgSnapshot.from_row(row([session("shop", "app", "web", "idle", 2)]), 10)
    broken = Broken()
    runner = CollectorRunner([broken, SessionsCollector()])
    caplog.set_level(logging.INFO, logger="poolwatch.exporter.collectors")
    for _ in range(3):
        found = samples(runner.run(snap))
    assert get(found, "poolwatch_exporter_collector_success", collector="broken") == 0
    assert get(found, "poolwatch_exporter_collector_success", collector="sessions") == 1
    assert get(found, "poolwatch_exporter_collector_duration_seconds", collector="broken") >= 0
    assert get(found, "pg_max_connections") is None  # its partial output is dropped
    assert sessions(found, "shop", "app", "web", "idle") == 2
    failed = [r for r in caplog.records if "collector failed" in r.getMessage()]
    assert len(failed) == 1  # once, not once per scrape
    broken.collect = ConnectionsCollector().collect  # type: ignore[method-assign]
    found = samples(runner.run(snap))
    assert get(found, "poolwatch_exporter_collector_success", collector="broken") == 1
    assert get(found, "pg_max_connections") == 100
    assert [r for r in caplog.records if "works again" in r.getMessage()]
