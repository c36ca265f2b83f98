"""Per-route pool metrics with RouteMiddleware, on a real FastAPI app and a real PostgreSQL:
hold time, checkout wait and connections held by route template, bounded by route_limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import poolwatch
from poolwatch import metric_names as m
from poolwatch.instrumentation.context import route_tracking
from support import PgTarget

HOLD = m.POOL_ROUTE_HOLD_DURATION.name
WAIT = m.POOL_ROUTE_CHECKOUT_DURATION.name
HELD = m.POOL_ROUTE_CHECKED_OUT.name
ROUTE_NAMES = {spec.name for spec in m.ROUTE_METRICS}
SLOW = "GET /slow"
ITEM = "GET /items/{item_id}"


def sample(registry: CollectorRegistry, name: str, route: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"pool": "app", "route": route, **labels})


def routes_exported(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Metric family -> route label values with at least one sample."""
    out: dict[str, set[str]] = {}
    for family in registry.collect():
        if family.name in ROUTE_NAMES:
            for s in family.samples:
                out.setdefault(family.name, set()).add(s.labels["route"])
    return out


@pytest.fixture
def routes_off() -> Iterator[None]:
    """Per-route accounting off, as in a process that never built a RouteMiddleware."""
    before = route_tracking.enabled
    route_tracking.enable(False)
    yield
    route_tracking.enable(before)


@pytest.fixture
async def engine(pg: PgTarget) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg.url(), pool_size=2, max_overflow=0, pool_timeout=10)
    yield engine
    await engine.dispose()


def build_app(engine: AsyncEngine) -> tuple[FastAPI, dict[str, asyncio.Event]]:
    app = FastAPI()
    events = {"holding": asyncio.Event(), "release": asyncio.Event()}

    @app.get("/slow")
    async def slow() -> dict[str, int]:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
            await asyncio.sleep(0.2)  # holds its connection 200 ms
        return {"ok": 1}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        async with engine.connect() as conn:
            value = (await conn.execute(sa.text("select :v + 0"), {"v": item_id})).scalar_one()
        return {"id": int(value)}

    @app.get("/hold")
    async def hold() -> dict[str, int]:
        async with engine.connect():
            events["holding"].set()
            await events["release"].wait()
        return {"ok": 1}

    @app.get("/r/{n}")
    async def numbered(n: int) -> dict[str, int]:
        async with engine.connect():
            pass
        return {"n": n}

    @app.get("/r{n}/a")
    async def route_a(n: int) -> dict[str, int]:
        async with engine.connect():
            pass
        return {"n": n}

    @app.middleware("http")
    async def audit(request: Request, call_next):  # type: ignore[no-untyped-def]
        # checks out before the router has matched: the "unmatched" bucket
        if "x-audit" in request.headers:
            async with engine.connect():
                pass
        response: Response = await call_next(request)
        return response

    app.add_middleware(poolwatch.RouteMiddleware)
    return app, events


@contextlib.asynccontextmanager
async def holding_one(
    http: httpx.AsyncClient, events: dict[str, asyncio.Event]
) -> AsyncIterator[None]:
    """Inside: GET /hold is holding its connection; on the way out it returns it (200)."""
    holding = asyncio.ensure_future(http.get("/hold"))
    await asyncio.wait_for(events["holding"].wait(), 10)
    try:
        yield
    finally:
        events["release"].set()
        assert (await holding).status_code == 200


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def test_a_route_holding_200ms_shows_in_its_own_series_only(engine: AsyncEngine) -> None:
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, name="app", registry=registry)
    app, _ = build_app(engine)
    async with client(app) as http:
        assert (await http.get("/slow")).status_code == 200
        for i in range(5):
            assert (await http.get(f"/items/{1000 + i}")).json() == {"id": 1000 + i}
        assert (await http.get("/items/7", headers={"x-audit": "1"})).status_code == 200
    async with engine.connect():  # outside any request
        pass

    # the 200 ms hold: one observation in GET /slow, in the bucket holding its value
    assert sample(registry, HOLD + "_count", SLOW) == 1
    held = sample(registry, HOLD + "_sum", SLOW)
    assert held is not None and held >= 0.2
    assert sample(registry, HOLD + "_bucket", SLOW, le="0.1") == 0
    bounds = m.DURATION_BUCKETS
    index = bisect_left(bounds, held)
    if index < len(bounds):
        before = repr(bounds[index - 1])
        assert sample(registry, HOLD + "_bucket", SLOW, le=before) == 0
        assert sample(registry, HOLD + "_bucket", SLOW, le=repr(bounds[index])) == 1
    # ... and not in the other routes' series: exactly their own checkouts each
    assert sample(registry, HOLD + "_count", ITEM) == 6
    assert sample(registry, WAIT + "_count", ITEM) == 6
    assert sample(registry, WAIT + "_count", SLOW) == 1
    assert sample(registry, HOLD + "_count", "unmatched") == 1
    assert sample(registry, HOLD + "_count", "none") == 1
    assert sample(registry, WAIT + "_count", "none") == 1
    # the pool-wide series are the sum of the routes'
    assert (
        registry.get_sample_value("sqlalchemy_pool_hold_duration_seconds_count", {"pool": "app"})
        == 1 + 6 + 1 + 1
    )
    # templates only, never the raw path; nothing held now
    exported = routes_exported(registry)
    assert exported[HELD] == {SLOW, ITEM, "unmatched", "none"}
    assert all(sample(registry, HELD, r) == 0 for r in exported[HELD])
    assert not any("1000" in r or "/items/7" in r for r in exported[HELD])
    handle.close()
    assert routes_exported(registry) == {}


async def test_connections_held_now_by_route(engine: AsyncEngine) -> None:
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, name="app", registry=registry)
    app, events = build_app(engine)
    async with client(app) as http, holding_one(http, events):
        assert (await http.get("/items/1")).status_code == 200  # the second connection
        assert sample(registry, HELD, "GET /hold") == 1
        assert sample(registry, HELD, ITEM) == 0
        assert sample(registry, HOLD + "_count", "GET /hold") == 0  # not returned yet
        assert registry.get_sample_value("sqlalchemy_pool_checked_out", {"pool": "app"}) == 1
    assert sample(registry, HELD, "GET /hold") == 0
    assert sample(registry, HOLD + "_count", "GET /hold") == 1
    handle.close()


async def test_a_failed_wait_counts_for_its_route(pg: PgTarget) -> None:
    engine = create_async_engine(pg.url(), pool_size=1, max_overflow=0, pool_timeout=0.2)
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, name="app", registry=registry)
    app, events = build_app(engine)
    async with client(app) as http, holding_one(http, events):
        with pytest.raises(PoolTimeoutError):
            await http.get("/r/1")  # httpx's in-process transport re-raises the app's error
    assert registry.get_sample_value("sqlalchemy_pool_timeouts_total", {"pool": "app"}) == 1
    assert sample(registry, WAIT + "_count", "GET /r/{n}") == 1
    waited = sample(registry, WAIT + "_sum", "GET /r/{n}")
    assert waited is not None and waited >= 0.2
    assert sample(registry, HOLD + "_count", "GET /r/{n}") == 0
    assert sample(registry, WAIT + "_count", "GET /hold") == 1
    handle.close()
    await engine.dispose()


async def test_routes_beyond_the_limit_fold_into_other(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    handle = poolwatch.instrument(
        engine, name="app", registry=registry, route_limit=2, leak_threshold=0.05
    )
    app, _ = build_app(engine)
    caplog.set_level(logging.WARNING, logger="poolwatch")
    async with client(app) as http:
        for path, times in (("/r/1", 1), ("/items/2", 2), ("/r3/a", 3), ("/slow", 4)):
            for _ in range(times):
                assert (await http.get(path)).status_code == 200
    assert sample(registry, WAIT + "_count", "GET /r/{n}") == 1
    assert sample(registry, WAIT + "_count", ITEM) == 2
    assert sample(registry, WAIT + "_count", "other") == 3 + 4
    assert sample(registry, HOLD + "_count", "other") == 3 + 4
    assert routes_exported(registry)[HELD] == {"GET /r/{n}", ITEM, "other"}
    # a leak report names the real template, even when its series is "other"
    reports = [r.getMessage() for r in caplog.records if "leak threshold" in r.getMessage()]
    assert sum("(route GET /slow)" in r for r in reports) == 4
    handle.close()


async def test_no_route_series_without_the_middleware(
    engine: AsyncEngine, routes_off: None
) -> None:
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, name="app", registry=registry)
    async with engine.connect():
        pass
    assert registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "app"}) == 1
    assert routes_exported(registry) == {}
    # Starlette builds its middleware at the first request, after instrument(): building
    # one switches the live pool's accounting to per route from then on.
    app, _ = build_app(engine)
    async with client(app) as http:
        assert (await http.get("/items/3")).status_code == 200
    async with engine.connect():
        pass
    assert sample(registry, HOLD + "_count", ITEM) == 1
    assert sample(registry, HOLD + "_count", "none") == 1
    assert registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "app"}) == 3
    handle.close()


def test_route_limit_is_validated(pg: PgTarget) -> None:
    engine = sa.create_engine(pg.url("psycopg"))
    for bad, error, text in (
        (0, ValueError, "route_limit must be at least 1, got 0"),
        (True, TypeError, "route_limit must be a whole number of routes"),
        ("20", TypeError, r"route_limit must be a whole number of routes \(e.g. 20\), got '20'"),
    ):
        with pytest.raises(error, match=text):
            poolwatch.instrument(engine, registry=CollectorRegistry(), route_limit=bad)  # type: ignore[arg-type]
    engine.dispose()


async def test_router_and_mount_prefixes_are_part_of_the_route(engine: AsyncEngine) -> None:
    """include_router(prefix=) and mount() prefixes are in the template: /v1 and /v2 mounts
    of the same sub-application keep their own series."""
    app = FastAPI()
    router = APIRouter()

    async def select_one() -> dict[str, int]:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
        return {"ok": 1}

    router.add_api_route("/orders/{order_id}", select_one)
    app.include_router(router, prefix="/api")
    for version in ("v1", "v2"):
        sub = FastAPI()
        sub.add_api_route("/users/{user_id}", select_one)
        inner = APIRouter()
        inner.add_api_route("/carts/{cart_id}", select_one)
        sub.include_router(inner, prefix="/shop")
        app.mount(f"/{version}", sub)
    app.add_middleware(poolwatch.RouteMiddleware)
    registry = CollectorRegistry()
    handle = poolwatch.instrument(engine, name="app", registry=registry)
    try:
        async with client(app) as c:
            for path, times in (
                ("/api/orders/1", 1),
                ("/v1/users/1", 2),
                ("/v2/users/1", 3),
                ("/v2/shop/carts/7", 1),
            ):
                for _ in range(times):
                    assert (await c.get(path)).status_code == 200
        counts = {
            route: sample(registry, WAIT + "_count", route)
            for route in routes_exported(registry)[WAIT]
        }
        assert counts == {
            "GET /api/orders/{order_id}": 1,
            "GET /v1/users/{user_id}": 2,
            "GET /v2/users/{user_id}": 3,
            "GET /v2/shop/carts/{cart_id}": 1,
        }
    finally:
        handle.close()
