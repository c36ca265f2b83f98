"""Wait events, pg_stat_database session counters, connection limits and the server's role:
exact values from real sessions on a real server.

pg_stat_database is written by each backend with a delay (at exit for the session counters,
within about a second of going idle for deadlocks), so the counter tests poll with a
deadline. Each test works in its own fresh database, so the counters start at 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import asyncpg
import pytest

from conftest import Scrape, Sessions, with_database
from support import PgTarget


def _counter(scrape: Scrape, name: str, database: str) -> float | None:
    return scrape.get(f"pg_stat_database_{name}_total", datname=database)


async def sleep_twice(sessions: Sessions) -> None:
    """Two sessions (application "sleepy") active in pg_sleep."""
    for conn in await sessions.open(2, app="sleepy"):
        sessions.background(conn.execute("SELECT pg_sleep(60)"))


async def row_lock_waiter(sessions: Sessions) -> Any:
    """A session (application "locks") waiting on a row lock; returns the holder, whose open
    transaction holds the lock."""
    holder, waiter = await sessions.open(2, app="locks")
    await holder.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    await holder.execute("BEGIN; UPDATE t SET id = 1 WHERE id = 1")
    sessions.background(waiter.execute("UPDATE t SET id = 1 WHERE id = 1"))
    return holder


async def test_pg_sleep_a_client_not_reading_and_a_lock_waiter_by_wait_event(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    exp = exporter_factory()
    await sleep_twice(sessions)
    # A client that stops reading a large result: the server fills the socket, then waits.
    (reader,) = await sessions.open(1, app="slow-reader")
    reader._transport.pause_reading()  # what a worker stuck in other work looks like
    # simple query protocol: fetch() would first wait for a Parse reply it never reads
    sessions.background(reader.execute("SELECT repeat('x', 1000) FROM generate_series(1, 100000)"))
    holder = await row_lock_waiter(sessions)

    db = {"datname": database}

    def settled(s: Scrape) -> bool:
        return (
            s.get("pg_active_sessions", **db, wait_event_type="Timeout", wait_event="PgSleep") == 2
            and s.get(
                "pg_active_sessions", **db, wait_event_type="Client", wait_event="ClientWrite"
            )
            == 1
            and s.get(
                "pg_active_sessions", **db, wait_event_type="Lock", wait_event="transactionid"
            )
            == 1
        )

    scrape = await exp.until(settled)
    # Nothing else is active in this database: the series add up to the active sessions.
    assert scrape.total("pg_active_sessions", **db) == 4
    assert scrape.total("pg_sessions", **db, state="active") == 4
    # The holder is idle in transaction: waiting for its client, but not an active session.
    assert (
        scrape.get(
            "pg_sessions",
            **db,
            usename="postgres",
            application_name="locks",
            state="idle in transaction",
        )
        == 1
    )
    await holder.execute("ROLLBACK")


async def test_top_n_folds_rare_wait_events_into_other_under_their_type(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    exp = exporter_factory("--labels.top-n", "1")
    await sleep_twice(sessions)
    holder = await row_lock_waiter(sessions)
    db = {"datname": database}
    scrape = await exp.until(
        lambda s: s.get("pg_active_sessions", **db, wait_event_type="Lock", wait_event="other") == 1
    )
    assert (
        scrape.get("pg_active_sessions", **db, wait_event_type="Timeout", wait_event="PgSleep") == 2
    )
    assert (
        scrape.get("pg_active_sessions", **db, wait_event_type="Lock", wait_event="transactionid")
        is None
    )
    await holder.execute("ROLLBACK")


async def test_session_counters_fatal_killed_abandoned_and_sessions(
    exporter_factory, pg: PgTarget, sessions: Sessions, database: str
) -> None:
    exp = exporter_factory()
    first = await exp.scrape()
    if first.get("pg_stat_database_sessions_total", datname=database) is None:
        pytest.skip("pg_stat_database has no session counters before PostgreSQL 14")
    for name in ("sessions", "sessions_fatal", "sessions_killed", "sessions_abandoned"):
        assert _counter(first, name, database) == 0, name

    timed_out, killed, abandoned, kept = await sessions.open(4)
    # idle_in_transaction_session_timeout ends the session with FATAL: sessions_fatal.
    await timed_out.execute("SET idle_in_transaction_session_timeout = '100ms'; BEGIN; SELECT 1")
    # pg_terminate_backend: sessions_killed.
    admin = await asyncpg.connect(pg.dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", killed.get_server_pid())
    finally:
        await admin.close()
    # A client whose socket closes without a Terminate message (a killed worker, a dropped
    # connection): sessions_abandoned. (asyncpg's own terminate() is not that: PostgreSQL 18
    # counts a session it ends in none of the three, checked here.)
    abandoned._transport.abort()

    def counted(s: Scrape) -> bool:
        return all(
            _counter(s, name, database) == 1
            for name in ("sessions_fatal", "sessions_killed", "sessions_abandoned")
        )

    began = time.monotonic()  # before BEGIN: the server's idle interval lies inside
    await kept.execute("BEGIN; SELECT 1")
    scrape = await exp.until(counted)
    assert _counter(scrape, "sessions", database) == 4
    assert _counter(scrape, "deadlocks", database) == 0
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
        await timed_out.fetchval("SELECT 1")
    assert timed_out.is_closed()
    # PostgreSQL adds idle-in-transaction time when the session leaves that state: the
    # timed-out session never did, so its time is not in the counter (observed on PG 18).
    assert _counter(scrape, "idle_in_transaction_time_seconds", database) == 0
    await kept.execute("COMMIT")
    held = time.monotonic() - began
    scrape = await exp.until(
        lambda s: (_counter(s, "idle_in_transaction_time_seconds", database) or 0) > 0
    )
    idle_tx = _counter(scrape, "idle_in_transaction_time_seconds", database)
    assert idle_tx is not None and 0 < idle_tx <= held, (idle_tx, held)
    active = _counter(scrape, "active_time_seconds", database)
    assert active is not None and active > 0


async def test_a_deadlock_between_two_sessions_is_counted(
    exporter_factory, sessions: Sessions, database: str
) -> None:
    exp = exporter_factory()
    first, second = await sessions.open(2)
    await first.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)"
    )
    assert _counter(await exp.scrape(), "deadlocks", database) == 0
    await first.execute("BEGIN; UPDATE t SET v = 1 WHERE id = 1")
    await second.execute("BEGIN; UPDATE t SET v = 2 WHERE id = 2")
    one = asyncio.ensure_future(first.execute("UPDATE t SET v = 1 WHERE id = 2"))
    two = asyncio.ensure_future(second.execute("UPDATE t SET v = 2 WHERE id = 1"))
    results = await asyncio.gather(one, two, return_exceptions=True)
    assert sum(isinstance(r, asyncpg.DeadlockDetectedError) for r in results) == 1, results
    for conn in (first, second):
        await conn.execute("ROLLBACK")
    scrape = await exp.until(lambda s: _counter(s, "deadlocks", database) == 1)
    assert _counter(scrape, "deadlocks", database) == 1


async def test_a_role_at_its_connection_limit_reads_100_percent(
    exporter_factory, pg: PgTarget, sessions: Sessions, database: str
) -> None:
    role = "pw_limited_" + uuid.uuid4().hex[:6]
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 3")
    await admin.execute(f'ALTER DATABASE "{database}" CONNECTION LIMIT 5')
    await admin.execute(f"CREATE ROLE {role}_nolimit LOGIN")
    try:
        dsn = with_database(pg.dsn, database, role)
        await sessions.open(3, dsn=dsn)
        await sessions.open(1, dsn=with_database(pg.dsn, database, f"{role}_nolimit"))
        with pytest.raises(asyncpg.TooManyConnectionsError, match="too many connections for role"):
            await sessions.open(1, dsn=dsn)
        scrape = await exp_scrape(exporter_factory)
        assert scrape.get("pg_roles_connection_limit", rolname=role) == 3
        assert scrape.get("pg_roles_connections", rolname=role) == 3
        ratio = scrape.get("pg_roles_connections", rolname=role) / scrape.get(
            "pg_roles_connection_limit", rolname=role
        )
        assert ratio == 1.0
        # Only roles with a limit are exported (bounded), superusers never.
        assert scrape.get("pg_roles_connection_limit", rolname=f"{role}_nolimit") is None
        assert scrape.get("pg_roles_connection_limit", rolname="postgres") is None
        assert scrape.get("pg_database_connection_limit", datname=database) == 5
        assert scrape.get("pg_database_connections", datname=database) == 4
        assert scrape.get("pg_database_connection_limit", datname="postgres") is None
    finally:
        await sessions.close()
        sessions.conns.clear()
        sessions.tasks.clear()
        await admin.execute(f"DROP ROLE {role}; DROP ROLE {role}_nolimit")
        await admin.close()


async def exp_scrape(exporter_factory) -> Scrape:
    return await exporter_factory().scrape()


async def test_server_role_and_start_time(exporter_factory, pg: PgTarget) -> None:
    scrape = await exporter_factory().scrape()
    admin = await asyncpg.connect(pg.dsn)
    try:
        started = await admin.fetchval(
            "SELECT extract(epoch FROM pg_postmaster_start_time())::float8"
        )
        in_recovery = await admin.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await admin.close()
    assert scrape.get("pg_postmaster_start_time_seconds") == started
    assert scrape.get("pg_replication_is_replica") == (1.0 if in_recovery else 0.0) == 0.0
