"""FastAPI test app for the multi-worker tests (uvicorn --workers / gunicorn).

Every worker process has its own engine and pool (instrumented at import, as users do; under
gunicorn --preload that import happens in the master, before fork). Connections carry
``application_name = <PW_TEST_TAG>-<worker pid>`` so pg_stat_activity can be counted per
worker. ``/hold?n=K`` checks out K connections and keeps them until ``/release``; ``/timeout`` fills
its worker's pool and times one more checkout out (``PW_TEST_POOL_TIMEOUT`` seconds, default
10), then gives everything back. ``PW_TEST_LEAK_THRESHOLD`` (seconds) turns leak detection on,
``PW_TEST_ROUTES=1`` adds RouteMiddleware (per-route series).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import poolwatch

TAG = os.environ["PW_TEST_TAG"]
POOL_SIZE = 5
MAX_OVERFLOW = 10

POOL_TIMEOUT = float(os.environ.get("PW_TEST_POOL_TIMEOUT", "10"))
LEAK_THRESHOLD = (
    float(os.environ["PW_TEST_LEAK_THRESHOLD"]) if "PW_TEST_LEAK_THRESHOLD" in os.environ else None
)

engine = create_async_engine(
    os.environ["PW_TEST_URL"],
    pool_size=POOL_SIZE,
    max_overflow=MAX_OVERFLOW,
    pool_timeout=POOL_TIMEOUT,
)


@event.listens_for(engine.sync_engine, "do_connect")
def _name_connection(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
    # Evaluated at connect time, in the worker (not at import, which may be the master).
    cparams["server_settings"] = {"application_name": f"{TAG}-{os.getpid()}"}


poolwatch.instrument(engine, name="app", leak_threshold=LEAK_THRESHOLD)

app = FastAPI()
app.add_route("/metrics", poolwatch.metrics_app())
if os.environ.get("PW_TEST_ROUTES") == "1":
    app.add_middleware(poolwatch.RouteMiddleware)
HELD: list[AsyncConnection] = []


def _state() -> dict[str, int]:
    pool: Any = engine.pool
    return {
        "pid": os.getpid(),
        "held": len(HELD),
        "checked_out": pool.checkedout(),
        "idle": pool.checkedin(),
    }


@app.get("/hold")
async def hold(n: int = 1) -> dict[str, int]:
    for _ in range(n):
        conn = await engine.connect()
        await conn.execute(text("select 1"))
        HELD.append(conn)
    return _state()


@app.get("/pool")
async def pool_state() -> dict[str, int]:
    return _state()


@app.get("/release")
async def release() -> dict[str, int]:
    while HELD:
        await HELD.pop().close()
    return _state()


@app.get("/timeout")
async def timeout() -> dict[str, int]:
    """Take every connection this worker's pool has left, then wait for one more."""
    taken: list[AsyncConnection] = []
    timeouts = 0
    try:
        while engine.pool.checkedout() < POOL_SIZE + MAX_OVERFLOW:  # type: ignore[attr-defined]
            taken.append(await engine.connect())
        try:
            await (await engine.connect()).close()
        except exc.TimeoutError:
            timeouts = 1
    finally:
        for conn in taken:
            await conn.close()
    return {**_state(), "timeouts": timeouts}
