"""instrument(application_name=...): the pool's server sessions carry a bounded name, set
the way each driver takes it, never over one the user chose; the exporter's
per-application_name series then name the pool (real asyncpg and psycopg connections)."""

from __future__ import annotations

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from conftest import with_database
from poolwatch.instrumentation.appname import bounded
from support import PgTarget


async def test_a_session_idle_in_transaction_is_named_after_its_pool(
    exporter_factory, pg: PgTarget, database: str, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(with_database(pg.url(), database), pool_size=2)
    poolwatch.instrument(
        engine,
        name="primary",
        application_name="checkout-api/primary",
        registry=registry,
    )
    exp = exporter_factory()
    try:
        async with engine.connect() as conn:
            await conn.begin()
            assert await conn.scalar(text("SELECT current_setting('application_name')")) == (
                "checkout-api/primary"
            )
            scrape = await exp.until(
                lambda s: (
                    s.get(
                        "pg_idle_in_transaction_sessions",
                        datname=database,
                        application_name="checkout-api/primary",
                    )
                    == 1
                )
            )
            assert scrape.total("pg_sessions", datname=database) == 1
            await conn.rollback()
    finally:
        await engine.dispose()


async def test_a_name_the_user_set_wins_and_connect_args_stay_theirs(
    pg: PgTarget, database: str, registry: CollectorRegistry
) -> None:
    settings = {"application_name": "mine", "jit": "off"}
    engine = create_async_engine(
        with_database(pg.url(), database), connect_args={"server_settings": settings}
    )
    poolwatch.instrument(engine, name="p", application_name=True, registry=registry)
    plain = create_async_engine(
        with_database(pg.url(), database), connect_args={"server_settings": {"jit": "off"}}
    )
    poolwatch.instrument(plain, name="plain", application_name=True, registry=registry)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_setting('application_name')")) == "mine"
        async with plain.connect() as conn:
            assert await conn.scalar(text("SELECT current_setting('application_name')")) == "plain"
            assert await conn.scalar(text("SELECT current_setting('jit')")) == "off"
        assert settings == {"application_name": "mine", "jit": "off"}
    finally:
        await engine.dispose()
        await plain.dispose()


def test_psycopg_service_name_options_and_uninstrument(
    pg: PgTarget, database: str, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    monkeypatch.delenv("PGAPPNAME", raising=False)
    url = with_database(pg.url("psycopg"), database)
    engine = create_engine(url, pool_size=1)
    handle = poolwatch.instrument(engine, name="worker", application_name=True, registry=registry)
    with_options = create_engine(url, connect_args={"options": "-c application_name=opt"})
    poolwatch.instrument(with_options, name="o", application_name="ignored", registry=registry)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT current_setting('application_name')")) == (
                "billing/worker"
            )
        with with_options.connect() as conn:
            assert conn.scalar(text("SELECT current_setting('application_name')")) == "opt"
        handle.close()
        engine.dispose()
        with engine.connect() as conn:  # a new connection after uninstrument: not named
            assert conn.scalar(text("SELECT current_setting('application_name')")) == ""
    finally:
        engine.dispose()
        with_options.dispose()


def test_names_are_bounded_as_postgresql_stores_them() -> None:
    assert bounded("checkout-api/primary") == "checkout-api/primary"
    assert bounded("x" * 100) == "x" * 63
    assert bounded("café\tbar") == "caf??bar"
    assert len(bounded("é" * 100).encode()) == 63


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
async def test_behind_pgbouncer_the_server_session_carries_the_pools_name(
    pgbouncer_factory, pg: PgTarget, pool_mode: str, registry: CollectorRegistry
) -> None:
    """PgBouncer tracks application_name as a startup parameter: the server connection
    serving a client takes that client's name (in transaction mode when it is assigned to
    the client's transaction, and it keeps it while idle in PgBouncer's pool)."""
    bouncer = pgbouncer_factory(pool_mode=pool_mode, default_pool_size=2)
    engines = {
        name: create_async_engine(bouncer.url(), connect_args={"statement_cache_size": 0})
        for name in ("svc-a/primary", "svc-b/primary")
    }
    for name, engine in engines.items():
        poolwatch.instrument(engine, name=name, application_name=name, registry=registry)
    admin = await asyncpg.connect(pg.dsn)
    try:
        conns = {name: await engine.connect() for name, engine in engines.items()}
        for conn in conns.values():
            await conn.begin()
            await conn.execute(text("SELECT 1"))
        rows = await admin.fetch(
            "SELECT application_name, count(*) AS n FROM pg_stat_activity"
            " WHERE state = 'idle in transaction' AND application_name LIKE 'svc-%'"
            " GROUP BY 1 ORDER BY 1"
        )
        assert [(r["application_name"], r["n"]) for r in rows] == [
            ("svc-a/primary", 1),
            ("svc-b/primary", 1),
        ]
        for conn in conns.values():
            await conn.rollback()
            await conn.close()
    finally:
        await admin.close()
        for engine in engines.values():
            await engine.dispose()
