"""The demo's FastAPI application: a small shop whose handlers show each failure mode.

It is an ordinary app instrumented the way the README says (``poolwatch.instrument`` and
``/metrics``); ``poolwatch demo`` runs it under uvicorn in a child process::

    python -m poolwatch.demo.app --url postgresql+asyncpg://... --fd 3

Routes (the ``demo`` pool: pool_size 5, max_overflow 2, pool_timeout 1 s):

* ``GET /orders/{id}``: a short read, the healthy request.
* ``POST /orders/{id}/charge``: calls a slow "payment API" *inside* the transaction
  (the bad pattern from the asyncpg pool-exhaustion guide), holding the connection.
* ``POST /reports/export``: opens a session and never closes it (a leaked session).
* ``POST /accounts/{id}/hold``: updates a row, then awaits something slow before
  committing: the session sits *idle in transaction* holding the row lock.
* ``POST /accounts/{id}/transfer``: updates the same row; waits on that lock.
* ``GET /reports/summary?seconds=s``: one query that runs ``s`` seconds on the server (the
  PgBouncer act's load).

With ``--through-pgbouncer`` (the PgBouncer act) the pool connects through PgBouncer in
transaction mode: asyncpg's statement cache off (docs/runbook.md), no pre-ping, and a pool
named by ``--pool-name`` with ``--pool-size`` connections.

A ``sqlalchemy.exc.TimeoutError`` (``QueuePool limit of size 5 overflow 2 reached,
connection timed out, timeout 1.00``) becomes a 503 whose body carries the message.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import poolwatch

POOL_SIZE = 5
MAX_OVERFLOW = 2
POOL_TIMEOUT = 1.0
APP_NAME = "poolwatch-demo-app"

SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS poolwatch_demo_accounts "
    "(id int PRIMARY KEY, balance bigint NOT NULL)",
    "INSERT INTO poolwatch_demo_accounts SELECT g, 1000 FROM generate_series(1, 100) g "
    "ON CONFLICT DO NOTHING",
)
DROP_SQL = "DROP TABLE IF EXISTS poolwatch_demo_accounts"


async def charge_external_api(seconds: float) -> None:
    """Stands in for a slow payment provider."""
    await asyncio.sleep(seconds)


def create_app(
    url: str,
    leak_threshold: float = 1.0,
    *,
    pool_name: str = "demo",
    pool_size: int = POOL_SIZE,
    through_pgbouncer: bool = False,
) -> FastAPI:
    """The demo app for the SQLAlchemy URL ``url`` (``postgresql+asyncpg://``)."""
    registry = CollectorRegistry()
    connect_args: dict[str, Any] = {"server_settings": {"application_name": APP_NAME}}
    if through_pgbouncer:
        # The runbook's transaction-mode setting. A pre-ping would queue in PgBouncer like
        # any statement and blur the two waits the act sets side by side.
        connect_args["statement_cache_size"] = 0
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT,
        pool_pre_ping=not through_pgbouncer,
        connect_args=connect_args,
    )
    handle = poolwatch.instrument(
        engine,
        name=pool_name,
        registry=registry,
        leak_threshold=leak_threshold,
        through_pgbouncer=through_pgbouncer,
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    leaked: list[AsyncSession] = []
    background: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            for sql in SCHEMA_SQL:
                await conn.execute(text(sql))
        yield
        for task in background:
            task.cancel()
        for session in leaked:
            await session.close()
        handle.close()
        await engine.dispose()

    app = FastAPI(title="poolwatch demo shop", lifespan=lifespan)
    app.add_middleware(poolwatch.RouteMiddleware)
    # Starlette serves any ASGI app as a route; its type hints only name request handlers.
    app.add_route("/metrics", poolwatch.metrics_app(registry))  # type: ignore[arg-type]

    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def pool_timeout(_request: Request, exc: sqlalchemy.exc.TimeoutError) -> JSONResponse:
        return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=503)

    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    async def db_error(_request: Request, exc: sqlalchemy.exc.DBAPIError) -> JSONResponse:
        return JSONResponse({"error": str(exc.orig).splitlines()[0]}, status_code=500)

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int) -> dict[str, Any]:
        async with sessions() as session:
            balance = await session.scalar(
                text("SELECT balance FROM poolwatch_demo_accounts WHERE id = :id"),
                {"id": order_id % 100 + 1},
            )
        return {"order": order_id, "balance": balance}

    @app.post("/orders/{order_id}/charge")
    async def charge(order_id: int, delay: float = 2.0) -> dict[str, Any]:
        # The bad pattern: the external call runs inside the transaction, so the pool
        # connection is held (idle, from the server's point of view) for its duration.
        async with sessions() as session, session.begin():
            await session.execute(
                text("SELECT balance FROM poolwatch_demo_accounts WHERE id = :id"),
                {"id": order_id % 100 + 1},
            )
            await charge_external_api(delay)
        return {"order": order_id, "charged": True}

    @app.post("/reports/export")
    async def export_report() -> dict[str, Any]:
        # The bug: a session opened outside a context manager and kept past the request.
        session = sessions()
        await session.execute(text("SELECT count(*) FROM poolwatch_demo_accounts"))
        leaked.append(session)
        return {"leaked_sessions": len(leaked)}

    @app.post("/accounts/{account_id}/hold")
    async def hold(account_id: int, seconds: float = 10.0) -> dict[str, Any]:
        # Writes, then awaits slow work before committing: idle in transaction, row locked.
        async with sessions() as session, session.begin():
            await session.execute(
                text("UPDATE poolwatch_demo_accounts SET balance = balance WHERE id = :id"),
                {"id": account_id},
            )
            await charge_external_api(seconds)
        return {"account": account_id, "held_seconds": seconds}

    @app.post("/accounts/{account_id}/transfer")
    async def transfer(account_id: int) -> dict[str, Any]:
        async with sessions() as session, session.begin():
            await session.execute(
                text("UPDATE poolwatch_demo_accounts SET balance = balance - 1 WHERE id = :id"),
                {"id": account_id},
            )
        return {"account": account_id, "transferred": 1}

    @app.get("/reports/summary")
    async def summary(seconds: float = 0.3) -> dict[str, Any]:
        async with sessions() as session:
            total = await session.scalar(
                text("SELECT sum(balance) FROM poolwatch_demo_accounts, pg_sleep(:s)"),
                {"s": seconds},
            )
        return {"total": total, "query_seconds": seconds}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the demo app on an inherited listening socket (``--fd``) or a port."""
    parser = argparse.ArgumentParser(description="the poolwatch demo app (run by poolwatch demo)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="SQLAlchemy URL (postgresql+asyncpg://)")
    source.add_argument("--url-file", help="read the URL from this file (keeps it out of ps)")
    parser.add_argument("--fd", type=int, help="listening socket inherited from the parent")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--leak-threshold", type=float, default=1.0)
    parser.add_argument("--pool-name", default="demo")
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE)
    parser.add_argument("--through-pgbouncer", action="store_true")
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="app: %(levelname)s %(name)s: %(message)s")
    url = args.url
    if args.url_file:
        with open(args.url_file, encoding="utf-8") as handle:
            url = handle.read().strip()
    app = create_app(
        url,
        leak_threshold=args.leak_threshold,
        pool_name=args.pool_name,
        pool_size=args.pool_size,
        through_pgbouncer=args.through_pgbouncer,
    )
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        asyncio.run(server.serve(sockets=[sock]))
    else:
        config.port = args.port
        asyncio.run(server.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
