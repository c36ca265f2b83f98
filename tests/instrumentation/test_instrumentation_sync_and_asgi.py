"""A sync Engine under threads (psycopg), and a real FastAPI app: the pool-exhaustion guide's verification,
route names in leak reports, and /metrics served off the event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import poolwatch
from support import PgTarget, until, until_async, until_pool_sample
from support import pool_sample as value


def test_sync_engine_with_threads(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = sa.create_engine(pg.url("psycopg"), pool_size=2, max_overflow=1, pool_timeout=0.3)
    poolwatch.instrument(engine, name="sync", registry=registry)
    release = threading.Event()
    holding = threading.Barrier(4)
    errors: list[BaseException] = []

    def hold_one() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
            holding.wait()
            release.wait(10)

    def wait_one() -> None:
        try:
            with engine.connect():
                pass
        except BaseException as exc:
            errors.append(exc)

    holders = [threading.Thread(target=hold_one) for _ in range(3)]
    for t in holders:
        t.start()
    holding.wait()
    assert value(registry, "sqlalchemy_pool_checked_out", "sync") == 3
    assert value(registry, "sqlalchemy_pool_overflow", "sync") == 1
    waiter = threading.Thread(target=wait_one)
    waiter.start()
    waiter.join()
    assert len(errors) == 1 and isinstance(errors[0], PoolTimeoutError)
    assert value(registry, "sqlalchemy_pool_timeouts_total", "sync") == 1
    release.set()
    for t in holders:
        t.join()
    assert value(registry, "sqlalchemy_pool_checked_out", "sync") == 0
    assert value(registry, "sqlalchemy_pool_idle", "sync") == engine.pool.checkedin()  # type: ignore[attr-defined]

    # many threads hammering a small pool: counters balance exactly afterwards
    def work() -> None:
        for _ in range(25):
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("select 1"))
            except PoolTimeoutError:
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert value(registry, "sqlalchemy_pool_checked_out", "sync") == 0
    assert value(registry, "sqlalchemy_pool_waiting", "sync") == 0
    assert value(registry, "sqlalchemy_pool_checkouts_total", "sync") == value(
        registry, "sqlalchemy_pool_checkins_total", "sync"
    )
    engine.dispose()


@pytest.mark.parametrize("close", [True, False], ids=["dispose", "dispose-close-false"])
def test_sync_invalidations_equal_sqlalchemys_through_disposes(
    pg: PgTarget, registry: CollectorRegistry, close: bool
) -> None:
    # As for an AsyncEngine (test_instrumentation_pool.py): one set of poolwatch listeners
    # per pool whatever dispose() does, and uninstrument() unhooks every pool.
    engine = sa.create_engine(pg.url("psycopg"), pool_size=2, pool_pre_ping=True)
    seen: list[BaseException | None] = []
    sa.event.listen(engine, "invalidate", lambda dbapi, record, exc: seen.append(exc))
    handle = poolwatch.instrument(engine, name="sync-redo", registry=registry)
    pools = [engine.pool]
    try:
        for round_ in range(1, 6):
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
                conn.invalidate()
            assert len(seen) == round_ and seen[-1] is None
            assert (
                value(
                    registry, "sqlalchemy_pool_invalidations_total", "sync-redo", reason="explicit"
                )
                == round_
            )
            engine.dispose(close=close)
            assert engine.pool is not pools[-1]
            pools.append(engine.pool)
        with engine.connect():
            pass
        assert value(registry, "sqlalchemy_pool_checkouts_total", "sync-redo") == 6
        listeners = handle.tracker.pool_listeners
        assert listeners is not None
        for pool in pools:
            for name, fn in listeners.items():
                assert list(getattr(pool.dispatch, name)).count(fn) == 1
        handle.close()
        for pool in pools:
            assert "_poolwatch_original_class" not in type(pool).__dict__
            assert not hasattr(pool._invoke_creator, "__wrapped__")
            for name, fn in listeners.items():
                assert fn not in getattr(pool.dispatch, name)
        with engine.connect() as conn:
            conn.invalidate()
        assert len(seen) == 6
    finally:
        engine.dispose()


class App:
    """A FastAPI app whose handlers use a yield-scoped AsyncSession (the guide's step 1)."""

    def __init__(self, url: str, registry: CollectorRegistry, leak_threshold: float | None) -> None:
        self.engine = create_async_engine(url, pool_size=5, max_overflow=5, pool_timeout=10)
        self.handle = poolwatch.instrument(
            self.engine, name="app", registry=registry, leak_threshold=leak_threshold
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.leaked: list[AsyncSession] = []
        app = FastAPI()

        async def get_session() -> AsyncIterator[AsyncSession]:
            async with self.sessions() as session:
                yield session

        @app.get("/items/{item_id}")
        async def item(
            item_id: int, session: AsyncSession = Depends(get_session)
        ) -> dict[str, int]:
            row = await session.execute(sa.text("select :v + 0"), {"v": item_id})
            await asyncio.sleep(0.001)
            return {"id": int(row.scalar_one())}

        @app.get("/leak/{n}")
        async def leak(n: int) -> dict[str, str]:
            session = self.sessions()  # a session kept beyond its request (the guide's leak)
            await session.execute(sa.text("select 1"))
            self.leaked.append(session)
            return {"ok": "leaked"}

        @app.get("/forget")
        async def forget(request: Request) -> dict[str, str]:
            # a connection parked on the request and never closed: only the garbage
            # collector can give it back
            request.state.conn = await self.engine.connect()
            return {"ok": "forgotten"}

        app.add_route("/metrics", poolwatch.metrics_app(registry))
        app.add_middleware(poolwatch.RouteMiddleware)
        self.app = app


@pytest.fixture
def client_app(pg: PgTarget, registry: CollectorRegistry) -> Iterator[App]:
    app = App(pg.url(), registry, leak_threshold=0.3)
    yield app
    app.handle.close()


async def test_connections_return_to_baseline_under_load(
    client_app: App, registry: CollectorRegistry
) -> None:
    transport = httpx.ASGITransport(app=client_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        before = client_app.engine.pool.checkedout()  # type: ignore[attr-defined]
        responses = await asyncio.gather(*(client.get(f"/items/{i}") for i in range(250)))
        assert all(r.status_code == 200 for r in responses)
        assert [r.json()["id"] for r in responses] == list(range(250))
        assert client_app.engine.pool.checkedout() == before  # type: ignore[attr-defined]
        assert value(registry, "sqlalchemy_pool_checked_out", "app") == before
        checkouts = value(registry, "sqlalchemy_pool_checkouts_total", "app")
        assert checkouts is not None and checkouts >= 250
        assert checkouts == value(registry, "sqlalchemy_pool_checkins_total", "app")
        # 250 concurrent requests on 10 connections: some waited, none timed out
        assert value(registry, "sqlalchemy_pool_timeouts_total", "app") == 0
        waited = value(registry, "sqlalchemy_pool_checkout_duration_seconds_count", "app")
        assert waited == checkouts
        # the scrape endpoint serves the same numbers
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert f'sqlalchemy_pool_checkouts_total{{pool="app"}} {checkouts}' in scrape.text
    await client_app.engine.dispose()


@pytest.mark.filterwarnings("ignore:The garbage collector is trying to clean up")
async def test_connection_forgotten_on_the_request_is_still_collected(
    client_app: App, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    # Leak detection must not keep what a leaked connection hangs on (the request's scope
    # reaches it through request.state): SQLAlchemy's garbage-collection cleanup still
    # gives the connection back, and poolwatch says so.
    caplog.set_level(logging.WARNING, logger="poolwatch")
    transport = httpx.ASGITransport(app=client_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/forget")).status_code == 200
    gc.collect()
    await until_async(
        lambda: client_app.engine.pool.checkedout(),  # type: ignore[attr-defined]
        equals=0,
        what="SQLAlchemy's garbage-collection cleanup to return the connection",
    )
    assert value(registry, "sqlalchemy_pool_checked_out", "app") == 0
    assert any("without being returned" in r.getMessage() for r in caplog.records)
    await client_app.engine.dispose()


async def test_leak_report_names_the_route_template(
    client_app: App, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="poolwatch")
    transport = httpx.ASGITransport(app=client_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/leak/12345")).status_code == 200
        await until_pool_sample(registry, "sqlalchemy_pool_leaks_total", "app", 1)
    report = next(r.getMessage() for r in caplog.records if "leak threshold" in r.getMessage())
    assert "(route GET /leak/{n})" in report
    assert "12345" not in report  # the template, never the raw path
    # httpx's in-process transport runs the request in the test's own task, so the holder
    # is that task (under uvicorn the request task has finished: "which finished without
    # returning it", as the demo shows).
    assert "held by task '" in report and __file__ in report
    for session in client_app.leaked:
        await session.close()
    assert value(registry, "sqlalchemy_pool_checked_out", "app") == 0
    await client_app.engine.dispose()


async def test_metrics_app_renders_off_the_event_loop(registry: CollectorRegistry) -> None:
    seen: list[str] = []

    class ThreadProbe:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            seen.append(threading.current_thread().name)
            yield GaugeMetricFamily("probe", "which thread rendered the scrape", value=1)

    registry.register(ThreadProbe())  # type: ignore[arg-type]
    seen.clear()
    transport = httpx.ASGITransport(app=poolwatch.metrics_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        plain = await client.get("/", headers={"accept-encoding": "identity"})
        om = await client.get(
            "/", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
        zipped = await client.get("/", headers={"accept-encoding": "gzip"})
        post = await client.post("/")
    assert plain.status_code == 200 and "probe 1.0" in plain.text
    assert plain.headers["content-type"].startswith("text/plain")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert zipped.headers.get("content-encoding") == "gzip" and "probe 1.0" in zipped.text
    assert post.status_code == 405
    assert seen and threading.main_thread().name not in seen


def test_sync_leak_names_the_holding_thread(
    pg: PgTarget, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine(pg.url("psycopg"), pool_size=2)
    poolwatch.instrument(engine, name="sync-leak", registry=registry, leak_threshold=0.2)
    caplog.set_level(logging.WARNING, logger="poolwatch")
    release = threading.Event()

    def slow_job() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
            while not release.is_set():  # holds the connection while "working"
                release.wait(0.01)

    worker = threading.Thread(target=slow_job, name="report-worker")
    worker.start()
    try:
        until(
            lambda: value(registry, "sqlalchemy_pool_leaks_total", "sync-leak"),
            equals=1,
            what="the held connection to be counted as a leak",
            interval=0.01,
        )
    finally:
        release.set()
        worker.join()
    report = next(r.getMessage() for r in caplog.records if "leak threshold" in r.getMessage())
    assert "held by thread 'report-worker', now at " in report
    assert f"{__file__}:" in report and " in slow_job" in report
    engine.dispose()
