"""The exporter rules under failure: restarts, terminated backends, a stalled server,
scrape storms (one query for concurrent scrapes, a minimum interval)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from support import PgTarget, until_async


async def test_server_restart_mid_run_without_restarting_the_exporter(
    exporter_factory, pg: PgTarget
) -> None:
    local = pg.need_local()
    exp = exporter_factory()
    before = await exp.scrape()
    assert before.get("pg_up") == 1
    opened = before.get("poolwatch_exporter_connections_opened_total")
    local.stop_server()
    try:
        down = await exp.scrape()
        assert down.get("pg_up") == 0
        # Down: only the exporter's own metrics, no stale database numbers.
        assert down.total("pg_sessions") == 0
        assert down.get("pg_max_connections") is None
        assert down.get("poolwatch_exporter_scrape_errors_total") >= 1
        again = await exp.scrape()  # backing off: still answers, still down
        assert again.get("pg_up") == 0
    finally:
        local.start_server()
    back = await exp.until(lambda s: s.get("pg_up") == 1)
    assert back.get("pg_max_connections") > 0
    assert back.get("poolwatch_exporter_connections_opened_total") == opened + 1


async def test_backend_terminated_under_the_exporter(exporter_factory, pg: PgTarget) -> None:
    exp = exporter_factory()
    first = await exp.scrape()
    assert first.get("pg_up") == 1
    old_pid = exp.app.database.backend_pid
    admin = await asyncpg.connect(pg.dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        await until_async(
            lambda: admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", old_pid),
            equals=0,
            what="the server to remove the terminated backend",
        )
    finally:
        await admin.close()
    scrape = await exp.scrape()
    # A broken connection is replaced at once and the query retried: no gap in the data.
    assert scrape.get("pg_up") == 1
    assert scrape.get("poolwatch_exporter_connections_opened_total") == 2
    assert scrape.get("poolwatch_exporter_scrape_errors_total") == 0
    assert exp.app.database.backend_pid not in (None, old_pid)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_stalled_server_answers_promptly_with_pg_up_0(exporter_factory, pg: PgTarget) -> None:
    """The exporter's backend is frozen (SIGSTOP): the scrape gives up after the query
    timeout instead of hanging, and the exporter recovers once the server moves again."""
    exp = exporter_factory("--query.timeout", "300ms")
    assert (await exp.scrape()).get("pg_up") == 1
    pid = exp.app.database.backend_pid
    assert pid is not None
    try:
        os.kill(pid, 0)
    except (PermissionError, ProcessLookupError):
        pytest.skip("the server's processes are not on this host or not ours to signal")
    with stopped(pid):
        frozen = await exp.scrape()
    assert frozen.get("pg_up") == 0
    assert frozen.get("poolwatch_exporter_scrape_errors_total") == 1
    back = await exp.until(lambda s: s.get("pg_up") == 1)
    assert back.get("poolwatch_exporter_connections_opened_total") == 2


async def test_ten_concurrent_scrapes_share_one_query(exporter_factory) -> None:
    exp = exporter_factory()
    transport = httpx.ASGITransport(app=exp.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
        responses = await asyncio.gather(*(client.get("/metrics") for _ in range(10)))
        assert {r.status_code for r in responses} == {200}
        after = await client.get("/metrics")
    assert exp.app.scraper.queries == 2  # the ten shared one; the eleventh ran its own
    from conftest import Scrape

    bodies = [Scrape.parse(r.text) for r in responses]
    assert {b.get("poolwatch_exporter_queries_total") for b in bodies} == {1}
    assert len({b.get("poolwatch_exporter_scrape_duration_seconds") for b in bodies}) == 1
    assert Scrape.parse(after.text).get("poolwatch_exporter_queries_total") == 2


async def test_min_interval_serves_the_cached_snapshot(exporter_factory) -> None:
    exp = exporter_factory("--scrape.min-interval", "1h")
    first = await exp.scrape()
    second = await exp.scrape()
    assert first.get("poolwatch_exporter_queries_total") == 1
    assert second.get("poolwatch_exporter_queries_total") == 1
    assert second.get("poolwatch_exporter_snapshot_age_seconds") > 0


async def test_exporter_session_is_read_only_with_server_side_timeouts(
    exporter_factory, pg: PgTarget
) -> None:
    exp = exporter_factory("--query.timeout", "2500ms")
    await exp.scrape()
    admin = await asyncpg.connect(pg.dsn)
    try:
        row = await admin.fetchrow(
            "SELECT state, xact_start FROM pg_stat_activity WHERE pid = $1",
            exp.app.database.backend_pid,
        )
    finally:
        await admin.close()
    assert row["state"] == "idle" and row["xact_start"] is None  # never idle in transaction
    conn = exp.app.database._conn
    assert await conn.fetchval("SHOW statement_timeout") == "2500ms"
    assert await conn.fetchval("SHOW lock_timeout") == "1s"
    assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.execute("CREATE TABLE pw_should_not_exist (x int)")
