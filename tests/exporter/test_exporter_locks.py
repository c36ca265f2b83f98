"""Lock waits and blocking from real row locks."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from conftest import Scrape, Sessions
from poolwatch.exporter.collectors import build_sql, collect_all
from poolwatch.exporter.database import Features


def render(families: list) -> str:
    class One:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    return generate_latest(registry).decode()


async def test_k_sessions_blocked_on_a_row_lock_held_by_one(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    k = 4
    exp = exporter_factory()
    holder, *waiters = await sessions.open(k + 1, app="locker")
    await holder.execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)")
    await holder.execute("BEGIN; SELECT * FROM t WHERE id = 1 FOR UPDATE")
    # FOR SHARE waiters queue on the holder's transaction only (their tuple locks do not
    # conflict with each other), so exactly one session blocks all K.
    for conn in waiters:
        sessions.background(conn.execute("SELECT * FROM t WHERE id = 1 FOR SHARE"))
    db = {"datname": database}
    scrape = await exp.until(
        lambda s: (
            s.get("pg_lock_waiting_sessions", **db) == k
            and (s.get("pg_lock_wait_max_seconds", **db) or 0) > 0
        )
    )
    assert scrape.get("pg_blocked_sessions", **db) == k
    assert scrape.get("pg_blocking_sessions", **db) == 1
    assert (
        scrape.get(
            "pg_sessions", **db, usename="postgres", application_name="locker", state="active"
        )
        == k
    )
    assert scrape.get("pg_transaction_max_age_seconds", **db, state="idle in transaction") > 0

    # The statement built for servers without pg_locks.waitstart (12, 13) or without
    # backend_type gives the same answers on this server.
    old = Features(
        version_num=120000,
        has_backend_type=False,
        has_waitstart=False,
        has_reserved_connections=False,
    )
    (observer,) = await sessions.open(1, app="observer")
    row = await observer.fetchrow(build_sql(old))
    fallback = Scrape.parse(render(collect_all(row, 10)))
    for name in ("pg_lock_waiting_sessions", "pg_blocked_sessions", "pg_blocking_sessions"):
        assert fallback.get(name, **db) == scrape.get(name, **db), name
    assert fallback.get("pg_lock_wait_max_seconds", **db) > 0

    await holder.execute("ROLLBACK")
    released = await exp.until(lambda s: s.get("pg_lock_waiting_sessions", **db) is None)
    assert released.get("pg_blocked_sessions", **db) is None
    assert released.get("pg_blocking_sessions", **db) is None


async def test_update_waiters_queue_behind_one_head(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    # UPDATE waiters take the tuple lock in turn: pg_blocking_pids() names the first waiter
    # as a blocker of the ones behind it. Still one transaction holds everyone up.
    k = 3
    exp = exporter_factory()
    holder, *waiters = await sessions.open(k + 1, app="updater")
    await holder.execute("CREATE TABLE u (id int PRIMARY KEY, v int); INSERT INTO u VALUES (1, 0)")
    await holder.execute("BEGIN; UPDATE u SET v = v + 1 WHERE id = 1")
    for conn in waiters:
        sessions.background(conn.execute("UPDATE u SET v = v + 1 WHERE id = 1"))
    db = {"datname": database}
    scrape = await exp.until(lambda s: s.get("pg_lock_waiting_sessions", **db) == k)
    assert scrape.get("pg_blocked_sessions", **db) == k
    assert scrape.get("pg_blocking_sessions", **db) == 1
    await holder.execute("ROLLBACK")
    await exp.until(lambda s: s.get("pg_lock_waiting_sessions", **db) is None)


async def test_lock_waiters_are_counted_under_their_application_name(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    # The per-pool row of the pool dashboard reads this: which application's sessions wait.
    exp = exporter_factory()
    (holder,) = await sessions.open(1, app="holder")
    (waiter,) = await sessions.open(1, app="checkout-api/primary")
    (bystander,) = await sessions.open(1, app="reports")
    await holder.execute("CREATE TABLE w (id int PRIMARY KEY); INSERT INTO w VALUES (1)")
    await holder.execute("BEGIN; SELECT * FROM w WHERE id = 1 FOR UPDATE")
    await bystander.execute("BEGIN; SELECT 1")
    sessions.background(waiter.execute("SELECT * FROM w WHERE id = 1 FOR UPDATE"))
    name = "pg_lock_waiting_sessions_by_application"
    db = {"datname": database}
    scrape = await exp.until(
        lambda s: s.get(name, **db, application_name="checkout-api/primary") == 1
    )
    assert scrape.total(name) == 1  # nobody else waits: no other series, or 0
    assert scrape.get(name, **db, application_name="holder") is None
    assert scrape.get(name, **db, application_name="reports") is None
    assert scrape.get("pg_lock_waiting_sessions", **db) == 1

    await holder.execute("ROLLBACK")
    released = await exp.until(lambda s: s.total(name) == 0)
    assert released.get(name, **db, application_name="checkout-api/primary") is None
