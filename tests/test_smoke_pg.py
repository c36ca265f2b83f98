"""The test harness reaches a real PostgreSQL over asyncpg and psycopg."""

from __future__ import annotations

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from support import PgTarget


async def test_asyncpg_reaches_real_server(pg: PgTarget) -> None:
    conn = await asyncpg.connect(pg.dsn)
    try:
        assert await conn.fetchval("select 1") == 1
        assert int(await conn.fetchval("select current_setting('server_version_num')")) >= 120000
    finally:
        await conn.close()


async def test_sqlalchemy_async_engine_on_real_server(pg: PgTarget) -> None:
    engine = create_async_engine(pg.url("asyncpg"))
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("select 2"))).scalar() == 2
    await engine.dispose()


def test_sqlalchemy_sync_engine_psycopg(pg: PgTarget) -> None:
    engine = sa.create_engine(pg.url("psycopg"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select 3")).scalar() == 3
    engine.dispose()
