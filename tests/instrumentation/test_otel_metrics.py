"""OpenTelemetry export (``instrument(engine, meter_provider=...)``) on real PostgreSQL.

The same exhaustion / leak / invalidation scenarios as the Prometheus tests, read through
the SDK's InMemoryMetricReader: the OpenTelemetry numbers equal the Prometheus numbers
taken at the same moment. Plus trace exemplars and "OpenTelemetry stays optional".
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch.metric_names import DURATION_BUCKETS
from support import PgTarget, pre_ping_finds_a_dead_connection, until_pool_sample
from support import hold_connections as hold
from support import pool_sample as prom

POOL = "db.client.connection.pool.name"


class Otel:
    """An SDK MeterProvider with an in-memory reader, and helpers to read points."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.points: dict[str, list[Any]] = {}

    def collect(self) -> None:
        self.points = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self.points.setdefault(metric.name, []).extend(metric.data.data_points)

    def point(self, name: str, pool: str, **attrs: str) -> Any:
        want = {POOL: pool, **attrs}
        found = [p for p in self.points.get(name, []) if dict(p.attributes) == want]
        return found[0] if found else None

    def value(self, name: str, pool: str, **attrs: str) -> float | None:
        point = self.point(name, pool, **attrs)
        return None if point is None else point.value


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.provider.shutdown()


def assert_histogram_equal(
    otel: Otel, registry: CollectorRegistry, otel_name: str, prom_name: str, pool: str
) -> None:
    point = otel.point(otel_name, pool)
    assert point is not None, otel_name
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert point.count == prom(registry, f"{prom_name}_count", pool)
    assert point.sum == pytest.approx(prom(registry, f"{prom_name}_sum", pool), abs=1e-9)
    running = 0
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), point.bucket_counts, strict=True):
        running += count
        le = "+Inf" if bound == float("inf") else repr(float(bound))
        assert running == prom(registry, f"{prom_name}_bucket", pool, le=le), le


async def test_exhaustion_same_numbers(
    pg: PgTarget, otel: Otel, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(pg.url(), pool_size=2, max_overflow=1, pool_timeout=0.5)
    poolwatch.instrument(engine, name="tight", registry=registry, meter_provider=otel.provider)
    conns = await hold(engine, 3)
    try:
        waiters = [asyncio.create_task(hold(engine, 1)) for _ in range(2)]
        await until_pool_sample(registry, "sqlalchemy_pool_waiting", "tight", 2)
        otel.collect()
        assert otel.value("db.client.connection.pending_requests", "tight") == 2
        assert prom(registry, "sqlalchemy_pool_waiting", "tight") == 2
        used = otel.value(
            "db.client.connection.count", "tight", **{"db.client.connection.state": "used"}
        )
        idle = otel.value(
            "db.client.connection.count", "tight", **{"db.client.connection.state": "idle"}
        )
        assert used == prom(registry, "sqlalchemy_pool_checked_out", "tight") == 3
        assert idle == prom(registry, "sqlalchemy_pool_idle", "tight") == 0
        assert otel.value("db.client.connection.max", "tight") == 3  # pool_size + max_overflow
        assert otel.value("db.client.connection.idle.max", "tight") == 2
        assert otel.value("db.client.connection.idle.min", "tight") == 0

        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, PoolTimeoutError) for r in results)
        otel.collect()
        assert otel.value("db.client.connection.timeouts", "tight") == 2
        assert prom(registry, "sqlalchemy_pool_timeouts_total", "tight") == 2
        assert otel.value("db.client.connection.pending_requests", "tight") == 0
        # 3 successful + 2 timed-out checkouts, with the same values in the same buckets
        assert_histogram_equal(
            otel, registry, "db.client.connection.wait_time",
            "sqlalchemy_pool_checkout_duration_seconds", "tight",
        )  # fmt: skip
        assert otel.point("db.client.connection.wait_time", "tight").count == 5
        assert_histogram_equal(
            otel, registry, "db.client.connection.create_time",
            "sqlalchemy_pool_connect_duration_seconds", "tight",
        )  # fmt: skip
    finally:
        for conn in conns:
            await conn.close()
    otel.collect()
    assert_histogram_equal(
        otel, registry, "db.client.connection.use_time",
        "sqlalchemy_pool_hold_duration_seconds", "tight",
    )  # fmt: skip
    assert otel.point("db.client.connection.use_time", "tight").count == 3
    state = {"db.client.connection.state": "used"}
    assert otel.value("db.client.connection.count", "tight", **state) == 0
    await engine.dispose()


async def test_leak_same_numbers(pg: PgTarget, otel: Otel, registry: CollectorRegistry) -> None:
    engine = create_async_engine(pg.url(), pool_size=2)
    poolwatch.instrument(
        engine, name="leaky", registry=registry, leak_threshold=0.2, meter_provider=otel.provider
    )
    try:
        leaked = await engine.connect()
        await leaked.execute(sa.text("select 1"))
        await until_pool_sample(registry, "sqlalchemy_pool_leaks_total", "leaky", 1)
        otel.collect()
        assert otel.value("poolwatch.pool.leaks", "leaky") == 1
        assert prom(registry, "sqlalchemy_pool_leaks_total", "leaky") == 1
        state = {"db.client.connection.state": "used"}
        assert otel.value("db.client.connection.count", "leaky", **state) == 1
        await leaked.close()
        otel.collect()
        assert otel.value("poolwatch.pool.leaks", "leaky") == 1
        assert otel.value("db.client.connection.count", "leaky", **state) == 0
        assert_histogram_equal(
            otel, registry, "db.client.connection.use_time",
            "sqlalchemy_pool_hold_duration_seconds", "leaky",
        )  # fmt: skip
        point = otel.point("db.client.connection.use_time", "leaky")
        assert point.count == 1 and point.sum > 0.2
    finally:
        await engine.dispose()


async def test_invalidation_same_numbers(
    pg: PgTarget, otel: Otel, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(pg.url(), pool_size=2, pool_pre_ping=True)
    poolwatch.instrument(engine, name="ping", registry=registry, meter_provider=otel.provider)
    try:
        await pre_ping_finds_a_dead_connection(engine, pg.dsn)
        otel.collect()
        reason = {"poolwatch.invalidation.reason": "pre_ping"}
        assert otel.value("poolwatch.pool.invalidations", "ping", **reason) == 1
        assert prom(registry, "sqlalchemy_pool_invalidations_total", "ping", reason="pre_ping") == 1
        # the reconnect is a second connection created
        assert otel.point("db.client.connection.create_time", "ping").count == 2
        assert_histogram_equal(
            otel, registry, "db.client.connection.create_time",
            "sqlalchemy_pool_connect_duration_seconds", "ping",
        )  # fmt: skip
        assert_histogram_equal(
            otel, registry, "db.client.connection.wait_time",
            "sqlalchemy_pool_checkout_duration_seconds", "ping",
        )  # fmt: skip
    finally:
        await engine.dispose()


def checkout_exemplar_lines(registry: CollectorRegistry) -> list[str]:
    """The checkout histogram's bucket lines that carry an exemplar (OpenMetrics)."""
    text = openmetrics_latest(registry).decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith("sqlalchemy_pool_checkout_duration_seconds_bucket") and "#" in line
    ]


async def test_checkout_wait_carries_trace_exemplar(
    pg: PgTarget, otel: Otel, registry: CollectorRegistry
) -> None:
    tracer = TracerProvider().get_tracer("test")
    engine = create_async_engine(pg.url(), pool_size=2)
    poolwatch.instrument(engine, name="traced", registry=registry, meter_provider=otel.provider)
    try:
        with tracer.start_as_current_span("request") as span:
            async with engine.connect() as conn:
                await conn.execute(sa.text("select 1"))
            ctx = span.get_span_context()
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        # Prometheus: OpenMetrics exposition carries the exemplar on the checkout histogram.
        lines = checkout_exemplar_lines(registry)
        assert len(lines) == 1, lines
        assert f'trace_id="{trace_id}"' in lines[0] and f'span_id="{span_id}"' in lines[0]
        # OpenTelemetry: the wait_time point has an exemplar with the same trace.
        otel.collect()
        point = otel.point("db.client.connection.wait_time", "traced")
        assert point.count == 1
        assert [format(e.trace_id, "032x") for e in point.exemplars] == [trace_id]
        # Without an active span: no new exemplar.
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
        text = openmetrics_latest(registry).decode()
        assert text.count("trace_id=") == 1
    finally:
        await engine.dispose()


async def test_prometheus_only_slow_checkout_carries_sampled_span(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    # No meter provider: the asyncio pool's inline path records the exemplar itself. A
    # FastAPI app imports the trace API without tracing (OpenTelemetry's invalid span, or
    # none, is current): such waits get none.
    tracer = TracerProvider().get_tracer("test")
    engine = create_async_engine(pg.url(), pool_size=1, max_overflow=0)
    poolwatch.instrument(engine, name="traced-prom", registry=registry)

    async def wait_untraced() -> None:
        with trace.use_span(trace.INVALID_SPAN):
            async with engine.connect():
                pass

    async def wait_traced() -> Any:
        with tracer.start_as_current_span("request") as span:
            async with engine.connect():
                pass
        return span.get_span_context()

    try:
        async with engine.connect():  # the connection is opened outside any span
            pass
        results = []
        for waiter in (wait_untraced, wait_traced):
            async with engine.connect():  # the only connection: the waiter queues
                task = asyncio.ensure_future(waiter())
                await until_pool_sample(registry, "sqlalchemy_pool_waiting", "traced-prom", 1)
                # a hold, not synchronisation: the assert below tells the traced wait's
                # exemplar by its length (>= 50 ms)
                await asyncio.sleep(0.05)
            results.append(await task)
        ctx = results[1]
        lines = checkout_exemplar_lines(registry)
        assert len(lines) == 1, lines
        assert f'trace_id="{ctx.trace_id:032x}"' in lines[0]
        assert f'span_id="{ctx.span_id:016x}"' in lines[0]
        # the exemplar is the traced wait's own (>= the 50 ms the connection was held)
        assert float(lines[0].split("} ")[2].split()[0]) >= 0.05
        assert prom(registry, "sqlalchemy_pool_checkouts_total", "traced-prom") == 5
    finally:
        await engine.dispose()


async def test_otel_only_and_uninstrument(
    pg: PgTarget, otel: Otel, registry: CollectorRegistry
) -> None:
    engine = create_async_engine(pg.url(), pool_size=2)
    handle = poolwatch.instrument(
        engine, name="otelonly", registry=registry, meter_provider=otel.provider, prometheus=False
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
        assert prom(registry, "sqlalchemy_pool_checkouts_total", "otelonly") is None
        otel.collect()
        assert otel.point("db.client.connection.wait_time", "otelonly").count == 1
        handle.close()
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
        otel.collect()
        assert (
            otel.value(
                "db.client.connection.count", "otelonly", **{"db.client.connection.state": "idle"}
            )
            is None
        )
        point = otel.point("db.client.connection.wait_time", "otelonly")
        assert point is None or point.count == 1  # nothing recorded after close
    finally:
        await engine.dispose()
    with pytest.raises(ValueError, match="meter_provider"):
        poolwatch.instrument(engine, prometheus=False)


NO_OTEL_SCRIPT = r"""
import importlib.abc, json, sys

class BlockOtel(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None

if sys.argv[2] == "blocked":
    sys.meta_path.insert(0, BlockOtel())
import poolwatch, sqlalchemy
from prometheus_client import CollectorRegistry
engine = sqlalchemy.create_engine(sys.argv[1], pool_size=2)
registry = CollectorRegistry()
poolwatch.instrument(engine, name="plain", registry=registry, leak_threshold=5)
with engine.connect() as conn:
    conn.execute(sqlalchemy.text("select 1"))
print(json.dumps({
    "otel": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "checkouts": registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "plain"}),
}))
"""


@pytest.mark.parametrize("mode", ["installed", "blocked"])
def test_opentelemetry_is_never_imported_unless_asked(pg: PgTarget, mode: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_OTEL_SCRIPT, pg.url("psycopg"), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"otel": [], "checkouts": 1.0}, out.stderr


async def test_nullpool_reports_what_applies(pg: PgTarget, otel: Otel) -> None:
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(pg.url(), poolclass=NullPool)
    poolwatch.instrument(engine, name="nullpool", meter_provider=otel.provider, prometheus=False)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
            otel.collect()
            state = {"db.client.connection.state": "used"}
            assert otel.value("db.client.connection.count", "nullpool", **state) == 1
        otel.collect()
        assert otel.value("db.client.connection.count", "nullpool", **state) == 0
        assert otel.value("db.client.connection.max", "nullpool") is None  # no maximum
        assert otel.point("db.client.connection.use_time", "nullpool").count == 1
        assert otel.point("db.client.connection.create_time", "nullpool").count == 1
    finally:
        await engine.dispose()


async def test_two_engines_share_one_meter_provider(pg: PgTarget, otel: Otel) -> None:
    # Instruments are created once per MeterProvider (the SDK keeps the first callback of a
    # duplicate observable instrument); each pool is a separate pool.name series.
    engines = [create_async_engine(pg.url(), pool_size=n) for n in (2, 3)]
    for name, engine in zip(("first", "second"), engines, strict=True):
        poolwatch.instrument(engine, name=name, meter_provider=otel.provider, prometheus=False)
    try:
        held = await hold(engines[1], 2)
        otel.collect()
        used = {"db.client.connection.state": "used"}
        assert otel.value("db.client.connection.count", "first", **used) == 0
        assert otel.value("db.client.connection.count", "second", **used) == 2
        assert otel.value("db.client.connection.idle.max", "first") == 2
        assert otel.value("db.client.connection.idle.max", "second") == 3
        for conn in held:
            await conn.close()
        otel.collect()
        assert otel.point("db.client.connection.use_time", "second").count == 2
        assert otel.point("db.client.connection.use_time", "first") is None
    finally:
        for engine in engines:
            await engine.dispose()
