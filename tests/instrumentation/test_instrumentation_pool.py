"""poolwatch.instrument on a real AsyncEngine over asyncpg: gauges, exhaustion, timeouts,
cancellation, invalidation, leaks, dispose, uninstrument. Real PostgreSQL, no mocks."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import sys
import warnings
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool, StaticPool
from sqlalchemy.util.queue import AsyncAdaptedQueue, QueueCommon

import poolwatch
from poolwatch.instrumentation.listeners import invalidation_reason
from poolwatch.metric_names import INVALIDATION_REASONS
from support import (
    PgTarget,
    pre_ping_finds_a_dead_connection,
    terminate_backend,
    until_async,
    until_pool_sample,
)
from support import hold_connections as hold
from support import pool_sample as value


def assert_gauges_match_pool(registry: CollectorRegistry, engine: AsyncEngine, pool: str) -> None:
    p = engine.pool
    assert value(registry, "sqlalchemy_pool_checked_out", pool) == p.checkedout()  # type: ignore[attr-defined]
    assert value(registry, "sqlalchemy_pool_idle", pool) == p.checkedin()  # type: ignore[attr-defined]
    assert value(registry, "sqlalchemy_pool_overflow", pool) == max(0, p.overflow())  # type: ignore[attr-defined]


async def test_sqlalchemy_version_is_supported() -> None:
    # CI runs this module on SQLAlchemy 2.0 and on 2.1 (see scripts/test.sh).
    major_minor = tuple(int(x) for x in sa.__version__.split(".")[:2])
    assert major_minor in {(2, 0), (2, 1)}


async def test_configuration_and_idle_state(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url(), pool_size=3, max_overflow=2, pool_timeout=7)
    handle = poolwatch.instrument(engine, name="primary", registry=registry)
    try:
        assert handle.name == "primary"
        assert value(registry, "sqlalchemy_pool_size", "primary") == 3
        assert value(registry, "sqlalchemy_pool_max_overflow", "primary") == 2
        assert value(registry, "sqlalchemy_pool_timeout_seconds", "primary") == 7
        # SQLAlchemy's own overflow() is -pool_size before any connection exists; ours never
        # goes below zero.
        assert engine.pool.overflow() == -3  # type: ignore[attr-defined]
        assert value(registry, "sqlalchemy_pool_overflow", "primary") == 0
        assert value(registry, "sqlalchemy_pool_checked_out", "primary") == 0
        conns = await hold(engine, 2)
        assert_gauges_match_pool(registry, engine, "primary")
        assert value(registry, "sqlalchemy_pool_checked_out", "primary") == 2
        assert value(registry, "sqlalchemy_pool_checkouts_total", "primary") == 2
        for conn in conns:
            await conn.close()
        assert_gauges_match_pool(registry, engine, "primary")
        assert value(registry, "sqlalchemy_pool_idle", "primary") == 2
        assert value(registry, "sqlalchemy_pool_checkins_total", "primary") == 2
        # two new DBAPI connections were opened and timed
        assert value(registry, "sqlalchemy_pool_connect_duration_seconds_count", "primary") == 2
        assert value(registry, "sqlalchemy_pool_hold_duration_seconds_count", "primary") == 2
    finally:
        handle.close()
        await engine.dispose()


async def test_default_name_has_no_credentials(pg: PgTarget, registry: CollectorRegistry) -> None:
    url = sa.make_url(pg.url()).set(username="app_user", password="s3cret-pw", port=6543)
    engine = create_async_engine(url)
    handle = poolwatch.instrument(engine, registry=registry)
    try:
        assert handle.name.startswith("postgresql+asyncpg://")
        assert ":6543/" in handle.name
        assert "s3cret-pw" not in handle.name and "app_user" not in handle.name
    finally:
        handle.close()
        await engine.dispose()


class _WrappedQueue(QueueCommon[Any]):
    """An asyncio pool queue poolwatch does not know (it cannot look inside for waiters)."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self._inner: AsyncAdaptedQueue[Any] = AsyncAdaptedQueue(maxsize, use_lifo)
        self.maxsize = maxsize
        self.use_lifo = use_lifo

    def empty(self) -> bool:
        return self._inner.empty()

    def full(self) -> bool:
        return bool(self._inner.full())

    def qsize(self) -> int:
        return int(self._inner.qsize())

    def put_nowait(self, item: Any) -> None:
        self._inner.put_nowait(item)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._inner.put(item, block, timeout)

    def get_nowait(self) -> Any:
        return self._inner.get_nowait()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._inner.get(block, timeout)


class _UnknownQueuePool(AsyncAdaptedQueuePool):
    _queue_class = _WrappedQueue  # type: ignore[assignment]


# Waiters of SQLAlchemy's asyncio queue are counted from the queue itself; a queue of
# another make has them counted by the checkout hook instead. Both must read the same.
@pytest.mark.parametrize("poolclass", [AsyncAdaptedQueuePool, _UnknownQueuePool])
async def test_exhaustion_waiters_and_timeout(
    pg: PgTarget, registry: CollectorRegistry, poolclass: type[AsyncAdaptedQueuePool]
) -> None:
    engine = create_async_engine(
        pg.url(), poolclass=poolclass, pool_size=2, max_overflow=1, pool_timeout=0.5
    )
    poolwatch.instrument(engine, name="tight", registry=registry)
    conns = await hold(engine, 3)
    try:
        waiters = [asyncio.create_task(hold(engine, 1)) for _ in range(2)]
        await until_pool_sample(registry, "sqlalchemy_pool_waiting", "tight", 2)
        assert value(registry, "sqlalchemy_pool_checked_out", "tight") == 3
        assert value(registry, "sqlalchemy_pool_overflow", "tight") == 1
        assert value(registry, "sqlalchemy_pool_idle", "tight") == 0
        assert_gauges_match_pool(registry, engine, "tight")

        results = await asyncio.gather(*waiters, return_exceptions=True)
        # The caller still gets SQLAlchemy's own error, exactly as without poolwatch.
        for result in results:
            assert isinstance(result, PoolTimeoutError)
            assert "QueuePool limit of size 2 overflow 1 reached" in str(result)
        assert value(registry, "sqlalchemy_pool_timeouts_total", "tight") == 2
        assert value(registry, "sqlalchemy_pool_waiting", "tight") == 0
        # Both failed waits are in the checkout histogram, near pool_timeout (0.5 s): above
        # the 0.25 s bucket, within the 1 s one.
        name = "sqlalchemy_pool_checkout_duration_seconds_bucket"
        below = value(registry, name, "tight", le="0.25")
        within = value(registry, name, "tight", le="1.0")
        assert below is not None and within is not None
        assert within - below == 2
        assert value(registry, "sqlalchemy_pool_checkouts_total", "tight") == 3
    finally:
        for conn in conns:
            await conn.close()
        await engine.dispose()


def one_connection_pool(
    pg: PgTarget, registry: CollectorRegistry, poolclass: type[AsyncAdaptedQueuePool], name: str
) -> AsyncEngine:
    """An instrumented engine with room for one connection, waiting up to 30 s."""
    engine = create_async_engine(
        pg.url(), poolclass=poolclass, pool_size=1, max_overflow=0, pool_timeout=30
    )
    poolwatch.instrument(engine, name=name, registry=registry)
    return engine


async def blocked_waiter(
    engine: AsyncEngine, registry: CollectorRegistry, name: str
) -> asyncio.Task[list[Any]]:
    """A task asking ``engine`` for a connection, once the gauge shows it waiting."""
    waiter = asyncio.create_task(hold(engine, 1))
    await until_pool_sample(registry, "sqlalchemy_pool_waiting", name, 1)
    return waiter


@pytest.mark.parametrize("poolclass", [AsyncAdaptedQueuePool, _UnknownQueuePool])
async def test_cancelled_waiter_leaves_waiting_correct(
    pg: PgTarget, registry: CollectorRegistry, poolclass: type[AsyncAdaptedQueuePool]
) -> None:
    engine = one_connection_pool(pg, registry, poolclass, "cancel")
    conns = await hold(engine, 1)
    try:
        waiter = await blocked_waiter(engine, registry, "cancel")
        assert value(registry, "sqlalchemy_pool_waiting", "cancel") == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert value(registry, "sqlalchemy_pool_waiting", "cancel") == 0
        assert value(registry, "sqlalchemy_pool_timeouts_total", "cancel") == 0
        assert value(registry, "sqlalchemy_pool_checked_out", "cancel") == 1
        # A waiter woken by a returned connection stops counting once it has it.
        waiter = await blocked_waiter(engine, registry, "cancel")
        await conns.pop().close()
        conns = await waiter
        assert value(registry, "sqlalchemy_pool_waiting", "cancel") == 0
        assert value(registry, "sqlalchemy_pool_checked_out", "cancel") == 1
    finally:
        for conn in conns:
            await conn.close()
    # The pool still works after the cancellation.
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("select 1"))).scalar() == 1
    assert value(registry, "sqlalchemy_pool_checked_out", "cancel") == 0
    await engine.dispose()


@pytest.mark.parametrize("poolclass", [AsyncAdaptedQueuePool, _UnknownQueuePool])
async def test_waiter_on_a_disposed_pool_still_counts(
    pg: PgTarget, registry: CollectorRegistry, poolclass: type[AsyncAdaptedQueuePool]
) -> None:
    # engine.dispose() swaps in a new pool, but a caller already blocked on the old one
    # keeps waiting there until one of the old pool's connections comes back.
    engine = one_connection_pool(pg, registry, poolclass, "swap")
    conns = await hold(engine, 1)
    try:
        waiter = await blocked_waiter(engine, registry, "swap")
        await engine.dispose()
        assert value(registry, "sqlalchemy_pool_waiting", "swap") == 1
        await conns.pop().close()  # back to the old pool: wakes the waiter
        conns = await waiter
        assert value(registry, "sqlalchemy_pool_waiting", "swap") == 0
    finally:
        for conn in conns:
            await conn.close()
        await engine.dispose()


async def test_pre_ping_invalidation_is_counted(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url(), pool_size=2, pool_pre_ping=True)
    poolwatch.instrument(engine, name="ping", registry=registry)
    try:
        await pre_ping_finds_a_dead_connection(engine, pg.dsn)
        assert (
            value(registry, "sqlalchemy_pool_invalidations_total", "ping", reason="pre_ping") == 1
        )
        assert value(registry, "sqlalchemy_pool_checked_out", "ping") == 0
        checkouts = value(registry, "sqlalchemy_pool_checkouts_total", "ping")
        assert checkouts == value(registry, "sqlalchemy_pool_checkins_total", "ping")
    finally:
        await engine.dispose()


async def test_disconnect_during_use_is_counted(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url(), pool_size=2)
    poolwatch.instrument(engine, name="drop", registry=registry)
    try:
        async with engine.connect() as victim:
            pid = (await victim.execute(sa.text("select pg_backend_pid()"))).scalar()
            await terminate_backend(pg.dsn, pid)
            with pytest.raises(sa.exc.DBAPIError):
                await victim.execute(sa.text("select 1"))
        assert (
            value(registry, "sqlalchemy_pool_invalidations_total", "drop", reason="disconnect") == 1
        )
        assert value(registry, "sqlalchemy_pool_checked_out", "drop") == 0
    finally:
        await engine.dispose()


async def test_leak_counted_once_and_logged_with_holder(
    pg: PgTarget, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    # Default mode: the checkout only remembers its asyncio task; the report walks that
    # task's stack and names the application line it is at while holding the connection.
    engine = create_async_engine(pg.url(), pool_size=2)
    handle = poolwatch.instrument(engine, name="leaky", registry=registry, leak_threshold=0.2)
    caplog.set_level(logging.WARNING, logger="poolwatch")
    first_line = sys._getframe().f_lineno
    try:
        leaked = await engine.connect()
        await leaked.execute(sa.text("select 1"))
        # Polled inline, not with until_async(): the report must find this task in this
        # function (a helper would be the innermost application frame). Fails below.
        for _ in range(1500):
            if value(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1:
                break
            await asyncio.sleep(0.02)
        last_line = sys._getframe().f_lineno
        assert value(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1
        oldest = value(registry, "sqlalchemy_pool_oldest_checkout_seconds", "leaky")
        assert oldest is not None and oldest > 0.2
        # Still held: the next scans (the leak detector thread runs this same scan) find
        # nothing new, and neither does the checkin below.
        assert handle.tracker.scan_for_leaks() == 0
        assert value(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1
        await leaked.close()
        assert value(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1
        assert value(registry, "sqlalchemy_pool_oldest_checkout_seconds", "leaky") == 0
        reports = [r.getMessage() for r in caplog.records if "leak threshold" in r.getMessage()]
        assert len(reports) == 1
        match = re.search(r"held by task '[^']+', now at (.+):(\d+) in (\w+)", reports[0])
        assert match, reports[0]
        assert match.group(1) == __file__
        assert first_line < int(match.group(2)) < last_line
        assert match.group(3) == "test_leak_counted_once_and_logged_with_holder"
    finally:
        await engine.dispose()


async def test_leak_exact_checkout_callsite(
    pg: PgTarget, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    # leak_callsite="checkout": the report names the very line that checked it out, even
    # from inside SQLAlchemy's greenlet (sys._getframe() there stops at greenlet_spawn).
    engine = create_async_engine(pg.url(), pool_size=2)
    poolwatch.instrument(
        engine, name="exact", registry=registry, leak_threshold=0.2, leak_callsite="checkout"
    )
    caplog.set_level(logging.WARNING, logger="poolwatch")
    try:
        leaked = await engine.connect()  # the line the report must name
        checkout_line = sys._getframe().f_lineno - 1
        await until_pool_sample(registry, "sqlalchemy_pool_leaks_total", "exact", 1)
        await leaked.close()
        reports = [r.getMessage() for r in caplog.records if "leak threshold" in r.getMessage()]
        assert len(reports) == 1
        assert f"checked out at {__file__}:{checkout_line} in " in reports[0], reports[0]
        assert "test_leak_exact_checkout_callsite" in reports[0]
    finally:
        await engine.dispose()


async def test_short_holds_are_not_leaks(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url(), pool_size=2)
    poolwatch.instrument(engine, name="fine", registry=registry, leak_threshold=5)
    try:
        for _ in range(20):
            async with engine.connect() as conn:
                await conn.execute(sa.text("select 1"))
        assert value(registry, "sqlalchemy_pool_leaks_total", "fine") == 0
    finally:
        await engine.dispose()


async def test_garbage_collected_connection_is_not_drift(
    pg: PgTarget, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    # Under asyncio a connection dropped without close() is detached by the garbage
    # collector: SQLAlchemy emits detach but no checkin. Event-delta counting drifts here.
    engine = create_async_engine(pg.url(), pool_size=2)
    poolwatch.instrument(engine, name="gc", registry=registry)
    caplog.set_level(logging.WARNING, logger="poolwatch")
    try:
        conn = await engine.connect()
        await conn.execute(sa.text("select 1"))
        assert value(registry, "sqlalchemy_pool_checked_out", "gc") == 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            del conn
            gc.collect()
        await until_async(
            lambda: engine.pool.checkedout(),  # type: ignore[attr-defined]
            equals=0,
            what="SQLAlchemy's garbage-collection cleanup to return the connection",
        )
        assert value(registry, "sqlalchemy_pool_checked_out", "gc") == engine.pool.checkedout()  # type: ignore[attr-defined]
        assert value(registry, "sqlalchemy_pool_checked_out", "gc") == 0
        assert value(registry, "sqlalchemy_pool_checkouts_total", "gc") == value(
            registry, "sqlalchemy_pool_checkins_total", "gc"
        )
        assert any("without being returned" in r.getMessage() for r in caplog.records)
        async with engine.connect() as conn2:
            assert (await conn2.execute(sa.text("select 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_failed_reconnect_checkin_does_not_go_negative(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    # When the pre-ping finds a dead connection and reconnecting fails, SQLAlchemy returns
    # the record via _checkin_failed without a checkout event; OpenTelemetry's
    # instrumentation reports negative "used" connections there.
    local = pg.need_local()
    engine = create_async_engine(pg.url(), pool_size=2, pool_pre_ping=True)
    poolwatch.instrument(engine, name="down", registry=registry)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
        local.stop_server()
        try:
            # asyncpg raises OSError for a missing socket, DBAPIError for a refused login
            with pytest.raises((sa.exc.DBAPIError, OSError)):
                async with engine.connect() as conn:
                    await conn.execute(sa.text("select 1"))
        finally:
            local.start_server()
        assert value(registry, "sqlalchemy_pool_checked_out", "down") == 0
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert value(registry, "sqlalchemy_pool_checkouts_total", "down") == 1
        assert value(registry, "sqlalchemy_pool_checkins_total", "down") == 1
        assert (
            value(registry, "sqlalchemy_pool_invalidations_total", "down", reason="pre_ping") == 1
        )
        assert (value(registry, "sqlalchemy_pool_connect_errors_total", "down") or 0) >= 1
        async with engine.connect() as conn:  # and it recovers
            assert (await conn.execute(sa.text("select 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_dispose_keeps_instrumentation(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url(), pool_size=2, max_overflow=1, pool_timeout=0.3)
    poolwatch.instrument(engine, name="disposed", registry=registry)
    old_pool = engine.pool
    async with engine.connect():
        pass
    await engine.dispose()
    assert engine.pool is not old_pool  # dispose() built a new pool with recreate()
    conns = await hold(engine, 3)
    try:
        assert value(registry, "sqlalchemy_pool_checked_out", "disposed") == 3
        assert value(registry, "sqlalchemy_pool_overflow", "disposed") == 1
        with pytest.raises(PoolTimeoutError):
            await hold(engine, 1)
        assert value(registry, "sqlalchemy_pool_timeouts_total", "disposed") == 1
        assert value(registry, "sqlalchemy_pool_checkouts_total", "disposed") == 4
    finally:
        for conn in conns:
            await conn.close()
        await engine.dispose()


def sqlalchemy_invalidations(engine: Any) -> list[BaseException | None]:
    """Every invalidate event SQLAlchemy emits on ``engine``'s pools, by a listener of ours
    (registered on the engine: recreate() copies it into every new pool once)."""
    seen: list[BaseException | None] = []
    event.listen(engine, "invalidate", lambda dbapi, record, exc: seen.append(exc))
    return seen


def assert_unhooked(pools: list[Any], listeners: dict[str, Any]) -> None:
    for pool in pools:
        assert "_poolwatch_original_class" not in type(pool).__dict__, pool
        assert "_poolwatch" not in pool.__dict__
        assert not hasattr(pool._invoke_creator, "__wrapped__")
        for name, fn in listeners.items():
            assert fn not in getattr(pool.dispatch, name), (pool, name)


@pytest.mark.parametrize("close", [True, False], ids=["dispose", "dispose-close-false"])
async def test_invalidations_equal_sqlalchemys_through_disposes(
    pg: PgTarget, registry: CollectorRegistry, close: bool
) -> None:
    # dispose() builds the new pool with recreate(), which copies the old pool's listeners:
    # poolwatch must still have exactly one set per pool (it had one more per dispose:
    # 1, 3, 6, 10, 15). dispose(close=False) is what gunicorn --preload's post_fork runs.
    engine = create_async_engine(pg.url(), pool_size=2)
    seen = sqlalchemy_invalidations(engine.sync_engine)
    handle = poolwatch.instrument(engine, name="redo", registry=registry)
    pools = [engine.sync_engine.pool]
    try:
        for round_ in range(1, 6):
            async with engine.connect() as conn:
                pid = (await conn.execute(sa.text("select pg_backend_pid()"))).scalar()
                if round_ % 2:
                    await conn.invalidate()
                else:  # a real lost connection, found during use
                    await terminate_backend(pg.dsn, pid)
                    with pytest.raises(sa.exc.DBAPIError):
                        await conn.execute(sa.text("select 1"))
            assert len(seen) == round_, seen
            explicit = sum(1 for exc in seen if exc is None)
            reasons = {
                reason: value(
                    registry, "sqlalchemy_pool_invalidations_total", "redo", reason=reason
                )
                for reason in INVALIDATION_REASONS
            }
            assert sum(r or 0 for r in reasons.values()) == round_, (reasons, seen)
            assert (
                value(registry, "sqlalchemy_pool_invalidations_total", "redo", reason="explicit")
                == explicit
            )
            assert (
                value(registry, "sqlalchemy_pool_invalidations_total", "redo", reason="disconnect")
                == round_ - explicit
            )
            if close:
                await engine.dispose()
            else:
                engine.sync_engine.dispose(close=False)
            assert engine.sync_engine.pool is not pools[-1]
            pools.append(engine.sync_engine.pool)
        async with engine.connect():
            pass
        assert value(registry, "sqlalchemy_pool_checkouts_total", "redo") == 6
        assert value(registry, "sqlalchemy_pool_checked_out", "redo") == 0
        listeners = handle.tracker.pool_listeners
        assert listeners is not None
        for pool in pools:  # one set on each of them, no more
            for name, fn in listeners.items():
                assert list(getattr(pool.dispatch, name)).count(fn) == 1
        poolwatch.uninstrument(engine)
        # every pool it ever hooked, including the ones dispose() built and replaced
        assert_unhooked(pools, listeners)
        async with engine.connect() as conn:
            await conn.invalidate()
        assert len(seen) == 6  # SQLAlchemy's own listener is untouched
    finally:
        await engine.dispose()


async def test_cancelled_query_is_not_a_disconnect(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    # SQLAlchemy invalidates a connection whose operation was interrupted by a task
    # cancellation (it cannot know the connection's state): that is no server going away.
    import asyncpg

    engine = create_async_engine(pg.url(), pool_size=2)
    seen = sqlalchemy_invalidations(engine.sync_engine)
    poolwatch.instrument(engine, name="cancelq", registry=registry)

    async def slow_query() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select pg_sleep(30) as poolwatch_cancel_me"))

    admin = await asyncpg.connect(pg.dsn)
    try:
        for _ in range(3):
            task = asyncio.create_task(slow_query())
            await until_async(
                lambda: admin.fetchval(
                    "select count(*) from pg_stat_activity where state = 'active' "
                    "and query like '%poolwatch_cancel_me%' and pid <> pg_backend_pid()"
                ),
                equals=1,
                what="the slow query to run on the server",
            )
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert len(seen) == 3 and all(isinstance(exc, asyncio.CancelledError) for exc in seen)
        reasons = {
            reason: value(registry, "sqlalchemy_pool_invalidations_total", "cancelq", reason=reason)
            for reason in ("cancelled", "disconnect", "error")
        }
        assert reasons == {"cancelled": 3, "disconnect": 0, "error": 0}
        assert value(registry, "sqlalchemy_pool_checked_out", "cancelq") == 0
    finally:
        await admin.close()
        await engine.dispose()


async def test_unused_pool_is_rebuilt_with_its_settings_and_listeners(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(
        pg.url(),
        pool_size=3,
        max_overflow=2,
        pool_timeout=4,
        pool_pre_ping=True,
        pool_use_lifo=True,
    )
    before = engine.pool
    seen: list[str] = []
    event.listen(before, "checkout", lambda *args: seen.append("checkout"))
    poolwatch.instrument(engine, name="rebuilt", registry=registry)
    pool: Any = engine.pool
    try:
        # No connection existed yet: the pool was rebuilt by its own recreate(), as
        # engine.dispose() would, and the old one was left as it was.
        assert pool is not before and isinstance(pool, AsyncAdaptedQueuePool)
        assert type(before) is AsyncAdaptedQueuePool and "_poolwatch" not in before.__dict__
        settings = (pool.size(), pool._max_overflow, pool._timeout, pool._pre_ping)
        assert settings == (3, 2, 4, True) and pool._pool.use_lifo
        async with engine.connect():
            pass
        assert seen == ["checkout"]  # a listener of the pool it replaced still fires
        assert value(registry, "sqlalchemy_pool_checkouts_total", "rebuilt") == 1
        assert value(registry, "sqlalchemy_pool_size", "rebuilt") == 3
    finally:
        await engine.dispose()


async def test_pool_in_use_is_instrumented_in_place(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(pg.url(), pool_size=2)
    held = await engine.connect()
    await held.execute(sa.text("select 1"))
    pool = engine.pool
    before = dict(pool.__dict__)
    handle = poolwatch.instrument(engine, name="in-use", registry=registry)
    try:
        assert engine.pool is pool  # its connections point at it: it keeps its identity
        # its attributes moved to a dict of the instrumented class: all of them, unchanged
        # (but the creator, which is wrapped, and the tracker, which is added)
        after = {
            k: v for k, v in pool.__dict__.items() if k not in ("_poolwatch", "_invoke_creator")
        }
        assert after.keys() == before.keys() - {"_invoke_creator"}
        assert all(after[k] is before[k] for k in after)
        assert value(registry, "sqlalchemy_pool_checked_out", "in-use") == 1
        await held.close()  # checked out before poolwatch: returned, not counted
        assert_gauges_match_pool(registry, engine, "in-use")
        assert value(registry, "sqlalchemy_pool_idle", "in-use") == 1
        async with engine.connect():
            pass
        assert value(registry, "sqlalchemy_pool_checkouts_total", "in-use") == 1
        assert value(registry, "sqlalchemy_pool_checkins_total", "in-use") == 1
        handle.close()
        assert type(engine.pool) is AsyncAdaptedQueuePool and engine.pool is pool
        assert pool.__dict__.keys() == before.keys()
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("select 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_instrument_twice_is_harmless(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url())
    first = poolwatch.instrument(engine, name="twice", registry=registry)
    second = poolwatch.instrument(engine, name="twice", registry=registry)
    assert first is second
    try:
        async with engine.connect():
            pass
        assert value(registry, "sqlalchemy_pool_checkouts_total", "twice") == 1
        assert value(registry, "sqlalchemy_pool_connect_duration_seconds_count", "twice") == 1
    finally:
        first.close()
        await engine.dispose()


async def test_uninstrument_removes_everything(pg: PgTarget, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url())
    original_class = type(engine.pool)
    handle = poolwatch.instrument(engine, name="gone", registry=registry, leak_threshold=1)
    listeners = handle.tracker.pool_listeners
    assert listeners is not None
    assert type(engine.pool) is not original_class
    async with engine.connect():
        pass
    poolwatch.uninstrument(engine)
    assert handle.closed
    assert type(engine.pool).__mro__[0].__dict__.get("_poolwatch_original_class") is None
    assert "_poolwatch" not in engine.pool.__dict__
    assert not hasattr(engine.pool._invoke_creator, "__wrapped__")
    for name, fn in listeners.items():
        assert not event.contains(engine.pool, name, fn)
    assert value(registry, "sqlalchemy_pool_checkouts_total", "gone") is None
    assert list(registry.collect()) == []
    async with engine.connect() as conn:  # the engine keeps working, unobserved
        assert (await conn.execute(sa.text("select 1"))).scalar() == 1
    # and can be instrumented again from scratch
    again = poolwatch.instrument(engine, name="gone", registry=registry)
    async with engine.connect():
        pass
    assert value(registry, "sqlalchemy_pool_checkouts_total", "gone") == 1
    again.close()
    await engine.dispose()


async def test_failed_instrument_leaves_nothing_behind(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    # Each step of instrument() registers its undo as soon as it took effect: a step that
    # fails (here the OpenTelemetry sink, given something that is not a MeterProvider)
    # unwinds the ones before it.
    class NotAMeterProvider:
        pass

    engine = create_async_engine(pg.url())
    pool = engine.sync_engine.pool
    with pytest.raises(AttributeError, match="get_meter"):
        poolwatch.instrument(
            engine, name="half", registry=registry, meter_provider=NotAMeterProvider()
        )
    try:
        assert engine.sync_engine.pool is pool and type(pool) is AsyncAdaptedQueuePool
        assert list(registry.collect()) == []  # the collector it registered is gone again
        handle = poolwatch.instrument(engine, name="half", registry=registry)
        assert handle.name == "half"  # not "half#2": nothing of the failed attempt is left
        async with engine.connect():
            pass
        assert value(registry, "sqlalchemy_pool_checkouts_total", "half") == 1
        handle.close()
        assert list(registry.collect()) == []
    finally:
        await engine.dispose()


async def test_two_engines_side_by_side(pg: PgTarget, registry: CollectorRegistry) -> None:
    primary = create_async_engine(pg.url(), pool_size=2)
    replica = create_async_engine(pg.url(), pool_size=4)
    poolwatch.instrument(primary, name="primary", registry=registry)
    poolwatch.instrument(replica, name="replica", registry=registry)
    try:
        a = await hold(primary, 1)
        b = await hold(replica, 3)
        assert value(registry, "sqlalchemy_pool_checked_out", "primary") == 1
        assert value(registry, "sqlalchemy_pool_checked_out", "replica") == 3
        assert value(registry, "sqlalchemy_pool_size", "primary") == 2
        assert value(registry, "sqlalchemy_pool_size", "replica") == 4
        for conn in a + b:
            await conn.close()
    finally:
        await primary.dispose()
        await replica.dispose()


async def test_duplicate_name_is_made_unique(pg: PgTarget, registry: CollectorRegistry) -> None:
    one = create_async_engine(pg.url())
    two = create_async_engine(pg.url())
    h1 = poolwatch.instrument(one, name="same", registry=registry)
    h2 = poolwatch.instrument(two, name="same", registry=registry)
    assert (h1.name, h2.name) == ("same", "same#2")
    h1.close()
    h2.close()
    await one.dispose()
    await two.dispose()


async def test_nullpool_and_staticpool(pg: PgTarget, registry: CollectorRegistry) -> None:
    null = create_async_engine(pg.url(), poolclass=NullPool)
    static = create_async_engine(pg.url(), poolclass=StaticPool)
    poolwatch.instrument(null, name="null", registry=registry)
    poolwatch.instrument(static, name="static", registry=registry)
    try:
        async with null.connect() as conn:
            await conn.execute(sa.text("select 1"))
            assert value(registry, "sqlalchemy_pool_checked_out", "null") == 1
        async with static.connect() as conn:
            await conn.execute(sa.text("select 1"))
        assert value(registry, "sqlalchemy_pool_checked_out", "null") == 0
        assert value(registry, "sqlalchemy_pool_checkouts_total", "null") == 1
        assert value(registry, "sqlalchemy_pool_checkins_total", "null") == 1
        assert value(registry, "sqlalchemy_pool_connect_duration_seconds_count", "null") == 1
        assert value(registry, "sqlalchemy_pool_checkouts_total", "static") == 1
        # queue-only concepts are absent, not zero
        for pool in ("null", "static"):
            assert value(registry, "sqlalchemy_pool_size", pool) is None
            assert value(registry, "sqlalchemy_pool_waiting", pool) is None
    finally:
        await null.dispose()
        await static.dispose()


async def test_broken_metrics_sink_does_not_break_the_app(
    pg: PgTarget, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_async_engine(pg.url())
    handle = poolwatch.instrument(engine, name="broken", registry=registry)
    calls = 0

    def broken_sink(kind: str, seconds: float) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("metrics backend is down")

    handle.tracker.add_observer(broken_sink)
    caplog.set_level(logging.DEBUG, logger="poolwatch")
    try:
        for _ in range(5):
            async with engine.connect() as conn:
                assert (await conn.execute(sa.text("select 1"))).scalar() == 1
        assert calls >= 5
        warnings_logged = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "internal error" in r.getMessage()
        ]
        assert len(warnings_logged) == 1  # logged once, then only at DEBUG
        assert value(registry, "sqlalchemy_pool_checkouts_total", "broken") == 5
    finally:
        handle.close()
        await engine.dispose()


def test_rejects_what_is_not_an_engine() -> None:
    with pytest.raises(TypeError, match="expects a SQLAlchemy Engine or AsyncEngine"):
        poolwatch.instrument("postgresql://nope")
    with pytest.raises(ValueError, match="leak_threshold"):
        poolwatch.instrument(sa.create_engine("sqlite://"), leak_threshold=0)
    with pytest.raises(ValueError, match="leak_callsite"):
        poolwatch.instrument(sa.create_engine("sqlite://"), leak_callsite="stack")
    engine = sa.create_engine("sqlite://")
    with pytest.raises(TypeError, match=r"not engine\.pool"):
        poolwatch.instrument(engine.pool)
    with pytest.raises(TypeError, match=r"leak_threshold must be a number of seconds.*'30s'"):
        poolwatch.instrument(engine, leak_threshold="30s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leak_threshold"):
        poolwatch.instrument(engine, leak_threshold=float("nan"))
    assert id(engine) not in poolwatch.instrumentation.api._handles  # nothing half-kept


async def test_engine_sharing_the_pool_is_not_instrumented_twice(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(pg.url())
    handle = poolwatch.instrument(engine, name="shared", registry=registry)
    options_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    assert options_engine.sync_engine.pool is engine.sync_engine.pool
    assert poolwatch.instrument(options_engine, name="other", registry=registry) is handle
    async with options_engine.connect():
        pass
    assert value(registry, "sqlalchemy_pool_checkouts_total", "shared") == 1
    assert value(registry, "sqlalchemy_pool_checkouts_total", "other") is None
    handle.close()
    await engine.dispose()


async def test_dropped_engine_takes_its_series_along(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(pg.url())
    handle = poolwatch.instrument(engine, name="dropped", registry=registry)
    async with engine.connect():
        pass
    assert value(registry, "sqlalchemy_pool_checkouts_total", "dropped") == 1
    await engine.dispose()
    del engine
    gc.collect()
    assert handle.engine is None and handle.closed
    assert value(registry, "sqlalchemy_pool_checkouts_total", "dropped") is None


# The reason label of each kind of exception SQLAlchemy invalidates a connection on.
def dbapi_error(*, invalidated: bool) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError(
        "select 1", {}, RuntimeError("boom"), connection_invalidated=invalidated
    )


@pytest.mark.parametrize(
    ("exception", "reason"),
    [
        (None, "explicit"),
        (sa_exc.InvalidatePoolError(), "pre_ping"),
        (sa_exc.DisconnectionError(), "disconnect"),
        (dbapi_error(invalidated=True), "disconnect"),
        (dbapi_error(invalidated=False), "error"),
        (asyncio.CancelledError(), "cancelled"),
        (asyncio.TimeoutError(), "timeout"),
        (KeyboardInterrupt(), "interrupted"),
        (GeneratorExit(), "interrupted"),
        (ConnectionResetError(), "disconnect"),
        (ValueError("a bug somewhere"), "error"),
    ],
)
def test_reason_says_what_happened(exception: BaseException | None, reason: str) -> None:
    assert invalidation_reason(exception) == reason
    assert reason in INVALIDATION_REASONS


def test_unwrapped_driver_error_asks_the_dialect() -> None:
    # SQLAlchemy invalidates on the driver's own exception when a reset on checkin fails:
    # the dialect knows which of those mean the connection is gone.
    dialect = sa.create_engine("postgresql+asyncpg://u@127.0.0.1/db").dialect
    assert isinstance(dialect, asyncpg_dialect)
    lost = dialect.dbapi.InterfaceError("connection is closed")
    other = dialect.dbapi.ProgrammingError("syntax error at or near")
    assert invalidation_reason(lost, dialect) == "disconnect"
    assert invalidation_reason(other, dialect) == "error"
    assert invalidation_reason(lost) == "error"  # without a dialect nobody can tell


# --- one accounting, three specialisations --------------------------------------------
# The checkout/checkin accounting is one implementation specialised per configuration
# (accounting.py): no lock on an asyncio pool, the lock on a thread-shared one, observers
# with OpenTelemetry. The same scenario on each must give the same numbers.

# (waited, held) seconds: the first bucket, a bisect, an exemplar-sized wait, a leak.
SYNTHETIC = [(0.00005, 0.00002), (0.0003, 0.004), (0.002, 0.05), (0.7, 0.5), (3.0, 0.0001)]
DETERMINISTIC = ("_total", "_count", "_bucket")  # not sums: they hold real durations


def pool_samples(registry: CollectorRegistry, pool: str) -> dict[tuple[str, str], float]:
    """Every counter and histogram sample of ``pool``, keyed by (name, le or reason)."""
    out: dict[tuple[str, str], float] = {}
    for family in registry.collect():
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.labels.get("pool") == pool:
                extra = sample.labels.get("le") or sample.labels.get("reason") or ""
                out[(sample.name, extra)] = sample.value
    return out


async def async_scenario(engine: AsyncEngine) -> None:
    for _ in range(4):
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
    conns = await hold(engine, 2)
    with pytest.raises(PoolTimeoutError):
        await hold(engine, 1)
    await conns[0].invalidate()
    for conn in conns:
        await conn.close()


def sync_scenario(engine: sa.Engine) -> None:
    for _ in range(4):
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    conns = [engine.connect() for _ in range(2)]
    for conn in conns:
        conn.execute(sa.text("select 1"))
    with pytest.raises(PoolTimeoutError):
        engine.connect()
    conns[0].invalidate()
    for conn in conns:
        conn.close()


def feed_synthetic(handle: poolwatch.PoolInstrumentation, pool: Any) -> None:
    """The same waits and holds through the tracker's own accounting (real records)."""
    from sqlalchemy.pool.base import _ConnectionRecord

    tracker = handle.tracker
    for waited, held in SYNTHETIC:
        record = _ConnectionRecord(pool, connect=False)
        tracker.checkout_succeeded(record, 1000.0, 1000.0 + waited)
        tracker.checked_in(record, 1000.0 + waited + held)


async def test_same_numbers_on_asyncio_threaded_and_observed_pools(
    pg: PgTarget, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    # (the real holds last about pool_timeout: well under the leak threshold)
    settings: dict[str, Any] = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 0.1}
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registries = {name: CollectorRegistry() for name in ("asyncio", "threads", "otel")}
    engines: dict[str, Any] = {
        "asyncio": create_async_engine(pg.url(), **settings),
        "threads": sa.create_engine(pg.url("psycopg"), **settings),
        "otel": create_async_engine(pg.url(), **settings),
    }
    handles = {
        name: poolwatch.instrument(
            engine,
            name=name,
            registry=registries[name],
            leak_threshold=0.45,
            meter_provider=provider if name == "otel" else None,
        )
        for name, engine in engines.items()
    }
    # what each specialisation is built for
    assert handles["threads"].tracker.threaded and not handles["asyncio"].tracker.threaded
    assert handles["otel"].tracker.observers and not handles["asyncio"].tracker.observers
    caplog.set_level(logging.WARNING, logger="poolwatch")
    try:
        await async_scenario(engines["asyncio"])
        await async_scenario(engines["otel"])
        await asyncio.to_thread(sync_scenario, engines["threads"])
        real = {
            name: {
                key: v
                for key, v in pool_samples(registries[name], name).items()
                if key[0].endswith(("_total", "_count"))
            }
            for name in engines
        }
        assert real["asyncio"][("sqlalchemy_pool_checkouts_total", "")] == 6
        assert real["asyncio"][("sqlalchemy_pool_timeouts_total", "")] == 1
        assert real["asyncio"][("sqlalchemy_pool_invalidations_total", "explicit")] == 1
        assert real["asyncio"] == real["threads"] == real["otel"]

        before = {name: pool_samples(registries[name], name) for name in engines}
        for name, engine in engines.items():
            feed_synthetic(handles[name], getattr(engine, "sync_engine", engine).pool)
        after = {name: pool_samples(registries[name], name) for name in engines}
        delta = {
            name: {
                key: after[name][key] - before[name].get(key, 0.0)
                for key in after[name]
                if key[0].endswith(DETERMINISTIC)
            }
            for name in engines
        }
        assert delta["asyncio"][("sqlalchemy_pool_checkouts_total", "")] == len(SYNTHETIC)
        assert delta["asyncio"][("sqlalchemy_pool_leaks_total", "")] == 1  # the 0.5 s hold
        assert delta["asyncio"][("sqlalchemy_pool_checkout_duration_seconds_bucket", "0.0001")] == 1
        assert delta["asyncio"] == delta["threads"] == delta["otel"]
        for hist in ("checkout", "hold"):
            name = f"sqlalchemy_pool_{hist}_duration_seconds_sum"
            sums = {pool: after[pool][(name, "")] - before[pool][(name, "")] for pool in engines}
            expected = sum(pair[0 if hist == "checkout" else 1] for pair in SYNTHETIC)
            assert sums["asyncio"] == pytest.approx(expected)
            assert sums["threads"] == pytest.approx(expected)
            assert sums["otel"] == pytest.approx(expected)
        assert sum("leak threshold" in r.getMessage() for r in caplog.records) == 3

        # and OpenTelemetry saw the same observations the Prometheus histograms hold
        handles["otel"].close()  # records what it buffered
        data = reader.get_metrics_data()
        points = {
            metric.name: metric.data.data_points[0]
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name.endswith(("wait_time", "use_time"))
        }
        for otel_name, prom_name in (
            ("db.client.connection.wait_time", "sqlalchemy_pool_checkout_duration_seconds"),
            ("db.client.connection.use_time", "sqlalchemy_pool_hold_duration_seconds"),
        ):
            assert points[otel_name].count == after["otel"][(f"{prom_name}_count", "")]
            assert points[otel_name].sum == pytest.approx(after["otel"][(f"{prom_name}_sum", "")])
    finally:
        for handle in handles.values():
            handle.close()
        provider.shutdown()
        await engines["asyncio"].dispose()
        await engines["otel"].dispose()
        engines["threads"].dispose()


async def test_driver_error_on_a_lost_connection_is_a_disconnect(pg: PgTarget) -> None:
    # SQLAlchemy invalidates on the driver's own exception when a reset on checkin fails;
    # asyncpg's message then often is not "connection is closed": the dialect is asked
    # about the connection itself.
    engine = create_async_engine(pg.url())
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(sa.text("select pg_backend_pid()"))).scalar()
            dbapi_connection = (await conn.get_raw_connection()).dbapi_connection
            await terminate_backend(pg.dsn, pid)
            await until_async(
                dbapi_connection._connection.is_closed,  # type: ignore[union-attr]
                what="asyncpg to see the socket close",
            )
            error = engine.dialect.dbapi.InterfaceError(  # type: ignore[union-attr]
                "connection was closed in the middle of operation"
            )
            assert invalidation_reason(error, engine.dialect, dbapi_connection) == "disconnect"
            assert invalidation_reason(error, engine.dialect) == "error"  # the message alone
            await conn.invalidate()
    finally:
        await engine.dispose()
