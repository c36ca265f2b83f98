"""Session counts, idle-in-transaction ages and stale counts, label folding: exact values
from real sessions on a real server."""

from __future__ import annotations

import contextlib

import asyncpg

from conftest import Sessions


async def test_idle_and_idle_in_transaction_counts_ages_and_stale(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    n_idle, m_iit = 4, 3
    threshold = 1.0
    exp = exporter_factory("--idle-in-transaction.stale-threshold", f"{threshold}s")
    await sessions.open(n_idle, app="web")
    in_tx = await sessions.open(m_iit, app="worker")
    for conn in in_tx:
        await conn.execute("BEGIN; SELECT 1")

    first = await exp.scrape()
    assert first.get("pg_up") == 1
    db = {"datname": database}
    assert (
        first.get("pg_sessions", **db, usename="postgres", application_name="web", state="idle")
        == n_idle
    )
    assert (
        first.get(
            "pg_sessions",
            **db,
            usename="postgres",
            application_name="worker",
            state="idle in transaction",
        )
        == m_iit
    )
    assert first.total("pg_sessions", **db) == n_idle + m_iit
    labels = {**db, "application_name": "worker"}
    assert first.get("pg_idle_in_transaction_sessions", **labels) == m_iit
    idle1 = first.get("pg_idle_in_transaction_max_idle_seconds", **labels)
    age1 = first.get("pg_idle_in_transaction_max_age_seconds", **labels)
    assert idle1 is not None and age1 is not None
    assert age1 >= idle1 >= 0  # the transaction began before its last statement ended
    # The stale count agrees with the ages it is derived from.
    stale1 = first.get("pg_idle_in_transaction_stale_sessions", **db)
    if idle1 <= threshold:
        assert stale1 == 0
    assert first.get("pg_transaction_max_age_seconds", **db, state="idle in transaction") == age1

    # Later scrapes see the ages grow (polled: how soon they do is not the point).
    await exp.until(
        lambda s: (
            s.get("pg_idle_in_transaction_max_idle_seconds", **labels) > idle1
            and s.get("pg_idle_in_transaction_max_age_seconds", **labels) > age1
        ),
        what="the idle-in-transaction ages to grow",
    )

    crossed = await exp.until(
        lambda s: s.get("pg_idle_in_transaction_stale_sessions", **db) == m_iit
    )
    assert crossed.get("pg_idle_in_transaction_max_idle_seconds", **labels) > threshold
    # Idle sessions are not in a transaction: no transaction age for them.
    assert crossed.get("pg_transaction_max_age_seconds", **db, state="idle") is None

    # Commit one: the counts follow.
    await in_tx[0].execute("COMMIT")
    after = await exp.scrape()
    assert after.get("pg_idle_in_transaction_sessions", **labels) == m_iit - 1
    assert (
        after.get("pg_sessions", **db, usename="postgres", application_name="worker", state="idle")
        == 1
    )


async def test_active_query_age_and_aborted_transactions(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    exp = exporter_factory()
    sleeper, aborted = await sessions.open(2, app="batch")
    sessions.background(sleeper.execute("SELECT pg_sleep(60)"))
    await aborted.execute("BEGIN")
    with contextlib.suppress(asyncpg.DivisionByZeroError):
        await aborted.execute("SELECT 1/0")
    db = {"datname": database}
    scrape = await exp.until(
        lambda s: (
            s.get("pg_sessions", **db, usename="postgres", application_name="batch", state="active")
            == 1
            and (s.get("pg_query_max_age_seconds", **db) or 0) > 0
        )
    )
    assert (
        scrape.get(
            "pg_sessions",
            **db,
            usename="postgres",
            application_name="batch",
            state="idle in transaction (aborted)",
        )
        == 1
    )
    # Aborted transactions hold their connection too: counted as idle in transaction.
    assert scrape.get("pg_idle_in_transaction_sessions", **db, application_name="batch") == 1
    assert scrape.get("pg_transaction_max_age_seconds", **db, state="active") > 0


async def test_application_names_beyond_top_n_fold_into_other(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    exp = exporter_factory("--labels.top-n", "3")
    sizes = {"big": 5, "mid": 4, "small": 3}
    for app, n in sizes.items():
        await sessions.open(n, app=app)
    tail = [f"tail-{i}" for i in range(6)]
    for app in tail:
        await sessions.open(1, app=app)
    scrape = await exp.scrape()
    db = {"datname": database}
    apps = {dict(ls)["application_name"] for ls in scrape.series("pg_sessions", **db)}
    assert apps == {"big", "mid", "small", "other"}
    for app, n in sizes.items():
        assert scrape.total("pg_sessions", **db, application_name=app) == n
    assert scrape.total("pg_sessions", **db, application_name="other") == len(tail)
    assert scrape.total("pg_sessions", **db) == sum(sizes.values()) + len(tail)
    # The same folding applies to the idle-in-transaction metric's application_name.
    tail_conn = sessions.conns[-1]
    await tail_conn.execute("BEGIN; SELECT 1")
    scrape = await exp.scrape()
    assert scrape.get("pg_idle_in_transaction_sessions", **db, application_name="other") == 1


async def test_settings_backends_and_the_exporter_itself(
    exporter_factory, pg, sessions: Sessions
) -> None:
    exp = exporter_factory()
    (conn,) = await sessions.open(1)
    expected_max = int(await conn.fetchval("SHOW max_connections"))
    expected_reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
    extra = await conn.fetchval("SELECT current_setting('reserved_connections', true)")
    expected_reserved += int(extra or 0)
    scrape = await exp.scrape()
    assert scrape.get("pg_max_connections") == expected_max
    assert scrape.get("pg_reserved_connections") == expected_reserved
    backends = await conn.fetch(
        "SELECT backend_type, count(*) AS n FROM pg_stat_activity WHERE pid <> $1 GROUP BY 1",
        exp.app.database.backend_pid,
    )
    by_type = {r["backend_type"]: r["n"] for r in backends}
    # Background processes are stable; client backends: at least ours.
    assert scrape.get("pg_backends", backend_type="checkpointer") == by_type["checkpointer"]
    assert scrape.get("pg_backends", backend_type="client backend") >= 1
    # The exporter's own session is never counted, and it is named and read-only.
    me = await conn.fetchrow(
        "SELECT application_name, backend_type FROM pg_stat_activity WHERE pid = $1",
        exp.app.database.backend_pid,
    )
    assert me["application_name"] == "poolwatch-exporter"
    assert scrape.total("pg_sessions", application_name="poolwatch-exporter") == 0
    for name in ("pg_up", "poolwatch_exporter_sees_all_sessions", "poolwatch_exporter_build_info"):
        assert scrape.total(name) == 1
    assert scrape.get("poolwatch_exporter_hidden_sessions") == 0
