"""Reconnect discipline behind a catalog lock, and the reserved-slot set-up (PostgreSQL 16+),
on a real exporter process and a real server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import Scrape, with_database
from poolwatch.embedded import EmbeddedPostgresUnavailable, start_local_postgres
from support import PgTarget, skip_or_fail, until_async

pytestmark = pytest.mark.timeout(120)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "exporter.md"

# pg_stat_activity joins pg_authid, which the test locks: read the function underneath.
# A backend still starting has no role yet (usesysid NULL) and, over a Unix socket, no port.
BACKENDS = """
SELECT pid, state FROM pg_stat_get_activity(NULL)
WHERE backend_type = 'client backend'
  AND (usesysid = $1 OR usesysid IS NULL) AND NOT pid = ANY($2::int[])
"""


@pytest.fixture
async def monitor_role(pg: PgTarget) -> AsyncIterator[int]:
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(
            "DROP ROLE IF EXISTS pw_reconnect; CREATE ROLE pw_reconnect LOGIN; "
            "GRANT pg_monitor TO pw_reconnect"
        )
        yield int(await admin.fetchval("SELECT oid FROM pg_roles WHERE rolname = 'pw_reconnect'"))
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pw_reconnect'"
        )
        await admin.execute("DROP ROLE IF EXISTS pw_reconnect")
        await admin.close()


async def test_one_exporter_backend_at_most_while_pg_authid_is_locked(
    pg: PgTarget, spawn, monitor_role: int
) -> None:
    dsn = with_database(pg.dsn, "postgres", user="pw_reconnect")
    sub = spawn("--dsn", dsn, "--query.timeout", "1s", "--scrape.min-interval", "0")
    # bounded: a statement of ours stuck behind the lock must fail, not hang the suite
    guard = {"statement_timeout": "10s"}
    admin = await asyncpg.connect(pg.dsn, server_settings=guard)
    if await admin.fetchval("SELECT current_setting('server_version_num')::int") < 160000:
        await admin.close()
        # checked on Debian's 15.18: the blocked backend exists but is not listed
        pytest.skip(
            "PostgreSQL < 16 does not list a backend blocked in start-up in pg_stat_activity"
        )
    locker = await asyncpg.connect(pg.dsn, server_settings=guard)
    mine = [admin.get_server_pid(), locker.get_server_pid()]
    # pg_terminate_backend looks the target's role up in pg_authid's cache: fill it now
    await admin.fetchval("SELECT pg_get_userbyid($1)", monitor_role)
    seen: list[list[tuple[int, str]]] = []
    async with httpx.AsyncClient(base_url=sub.base_url, timeout=10) as client:
        assert Scrape.parse((await client.get("/metrics")).text).get("pg_up") == 1
        ((exporter_pid, _),) = await admin.fetch(BACKENDS, monitor_role, mine)
        before = Scrape.parse((await client.get("/metrics")).text)
        try:
            await locker.execute("BEGIN; LOCK TABLE pg_authid IN ACCESS EXCLUSIVE MODE")
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", exporter_pid)

            async def scrapes() -> list[float]:
                took = []
                for _ in range(6):  # ~8 s of scrapes: 3-4 reconnect rounds with the old code
                    start = time.monotonic()
                    response = await client.get("/metrics")
                    took.append(time.monotonic() - start)
                    assert response.status_code == 200
                    await asyncio.sleep(0.25)
                return took

            scraping = asyncio.ensure_future(scrapes())
            while not scraping.done():
                rows = await admin.fetch(BACKENDS, monitor_role, mine)
                seen.append([(r["pid"], r["state"]) for r in rows])
                await asyncio.sleep(0.05)
            took = await scraping
        finally:
            await locker.execute("ROLLBACK")
        back = await _until_up(client)
    await admin.close()
    await locker.close()
    assert max(len(s) for s in seen) <= 1, [s for s in seen if len(s) > 1][:3]
    # the scenario really happened: the exporter's attempt sat in start-up behind the lock
    assert any(state == "starting" for s in seen for _, state in s), seen[-3:]
    assert max(took) < 3.0, took  # a scrape waits the connect timeout (1 s), not longer
    # the one attempt that waited behind the lock is the connection the exporter now uses
    opened = "poolwatch_exporter_connections_opened_total"
    assert back.get(opened) == before.get(opened) + 1
    assert "Traceback" not in sub.stop()


async def _until_up(client: httpx.AsyncClient) -> Scrape:
    async def scrape() -> Scrape:
        return Scrape.parse((await client.get("/metrics")).text)

    return await until_async(
        scrape, holds=lambda s: s.get("pg_up") == 1, timeout=20, interval=0.1, what="pg_up 1"
    )


def _reserved_sql_from_docs() -> str:
    match = re.search(r"```sql\n([^`]*pg_use_reserved_connections[^`]*)```", DOCS.read_text())
    assert match, "docs/exporter.md must show the reserved-slot GRANT as a ```sql block"
    return match.group(1)


async def test_reserved_slot_lets_the_exporter_in_when_max_connections_is_exhausted(
    pg: PgTarget, spawn
) -> None:
    if pg.local is None:
        pytest.skip("needs an embedded PostgreSQL 16+ (POOLWATCH_TEST_DSN points elsewhere)")
    try:
        server = start_local_postgres()  # its own temporary directory, deleted by stop()
    except EmbeddedPostgresUnavailable as exc:
        skip_or_fail(str(exc))
        return
    hogs: list[asyncpg.Connection] = []
    try:
        admin = await asyncpg.connect(server.dsn())
        if await admin.fetchval("SELECT current_setting('server_version_num')::int") < 160000:
            await admin.close()
            pytest.skip("reserved_connections needs PostgreSQL 16+")
        # reserved_connections takes a restart, not a reload
        await admin.execute("ALTER SYSTEM SET max_connections = 12")
        await admin.execute("ALTER SYSTEM SET superuser_reserved_connections = 2")
        await admin.execute("ALTER SYSTEM SET reserved_connections = 2")
        await admin.close()
        server.restart()
        admin = await asyncpg.connect(server.dsn())
        await admin.execute(
            "CREATE ROLE pw_app LOGIN; CREATE ROLE pw_nogrant LOGIN; "
            "CREATE ROLE pw_exporter LOGIN; GRANT pg_monitor TO pw_exporter"
        )
        await admin.execute(_reserved_sql_from_docs().replace("poolwatch_exporter", "pw_exporter"))
        await admin.close()
        with pytest.raises(asyncpg.TooManyConnectionsError):
            for _ in range(12):  # ordinary roles get 12 - 2 - 2 = 8 slots
                hogs.append(await asyncpg.connect(server.dsn(user="pw_app")))
        assert len(hogs) == 8
        with pytest.raises(asyncpg.TooManyConnectionsError, match="reserved"):
            await asyncpg.connect(server.dsn(user="pw_nogrant"))  # the bound is real
        sub = spawn("--dsn", server.dsn(user="pw_exporter"))
        with httpx.Client(base_url=sub.base_url) as client:
            scrape = Scrape.parse(client.get("/metrics").text)
        assert scrape.get("pg_up") == 1
        assert scrape.get("pg_max_connections") == 12
        assert "Traceback" not in sub.stop()
    finally:
        for conn in hogs:
            conn.terminate()
        with contextlib.suppress(Exception):  # restarted by pg_ctl: stop it the same way
            server.stop_server()
        server.stop()
