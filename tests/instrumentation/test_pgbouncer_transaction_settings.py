"""Which asyncpg + SQLAlchemy settings does PgBouncer's transaction mode really need?

Found by running concurrent traffic from several client connections of one engine through
a real PgBouncer (transaction mode, 2 server connections) for each combination. Runs on
SQLAlchemy 2.1 and again on 2.0 (marker ``instrumentation``, the .venv-sa20 run in CI).
The verified answer, which runbook, ``doctor`` and ``size`` give: ``connect_args=
{"statement_cache_size": 0}`` is required and enough (asyncpg then sends every statement
unnamed). SQLAlchemy's ``prepared_statement_cache_size`` changes nothing either way, and a
unique ``prepared_statement_name_func`` is harmful: each statement leaves a named prepared
statement on PgBouncer's server connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from pgbouncer_support import PgBouncer, leftover_statements
from poolwatch.sizing import PGBOUNCER_CONNECT_ARGS

CLIENTS = 8
TASKS = 24
ROUNDS = 12
# statements of different shapes, so a statement of one client run on another's server
# connection (or a stale unnamed one) cannot go unnoticed
QUERIES: list[tuple[str, Callable[[int], Any], Callable[[int], Any]]] = [
    ("select $1::int + 1 as n", lambda i: i, lambda i: i + 1),
    ("select $1::text || 'x' as s, 2 as two", str, lambda i: (f"{i}x", 2)),
    (
        "select $1::bigint * 3 as n, 'k'::text as k, true as t",
        lambda i: i,
        lambda i: (i * 3, "k", True),
    ),
]


async def traffic(url: str, connect_args: dict[str, Any]) -> tuple[int, list[str]]:
    """Run the workload; (correct results, distinct error kinds)."""
    engine = create_async_engine(url, pool_size=CLIENTS, max_overflow=0, connect_args=connect_args)
    ok = 0
    errors: set[str] = set()

    async def worker(w: int) -> None:
        nonlocal ok
        for r in range(ROUNDS):
            i = w * 100 + r
            sql, param, expect = QUERIES[(w + r) % len(QUERIES)]
            try:
                async with engine.connect() as conn:
                    if r % 2:
                        await conn.begin()
                    row = (await conn.exec_driver_sql(sql, (param(i),))).one()
                    got = row[0] if len(row) == 1 else tuple(row)
                    if got == expect(i):
                        ok += 1
                    else:
                        errors.add("wrong result")
                    await conn.rollback()
            except Exception as exc:
                cause = getattr(exc, "orig", exc)
                errors.add(type(getattr(cause, "__cause__", None) or cause).__name__)

    try:
        await asyncio.gather(*(worker(w) for w in range(TASKS)))
    finally:
        await engine.dispose()
    return ok, sorted(errors)


def unique_name() -> str:
    return f"__asyncpg_{uuid4()}__"


# (case, connect_args, URL query, safe): safe = every result right, no error, and no prepared
# statement left behind on PgBouncer's server connections for the next client to collide with
CASES: list[tuple[str, dict[str, Any], str, bool]] = [
    ("defaults", {}, "", False),
    ("statement_cache_size=0 (poolwatch's advice)", dict(PGBOUNCER_CONNECT_ARGS), "", True),
    ("prepared_statement_cache_size=0 only", {}, "?prepared_statement_cache_size=0", False),
    (
        "unique prepared_statement_name_func only",
        {"prepared_statement_name_func": unique_name},
        "",
        False,
    ),
    ("both caches off", dict(PGBOUNCER_CONNECT_ARGS), "?prepared_statement_cache_size=0", True),
    (
        "both caches off + unique names",
        {**PGBOUNCER_CONNECT_ARGS, "prepared_statement_name_func": unique_name},
        "?prepared_statement_cache_size=0",
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "connect_args", "query", "works"), CASES, ids=[c[0] for c in CASES]
)
async def test_transaction_mode_settings(
    pgbouncer_factory: Callable[..., PgBouncer],
    case: str,
    connect_args: dict[str, Any],
    query: str,
    works: bool,
) -> None:
    bouncer = pgbouncer_factory(default_pool_size=2, pool_mode="transaction")
    ok, errors = await traffic(bouncer.url() + query, connect_args)
    left = await leftover_statements(bouncer)
    print(f"{case}: {ok}/{TASKS * ROUNDS} correct, errors {errors}, {left} statements left")
    if works:
        assert (ok, errors, left) == (TASKS * ROUNDS, [], 0)
    else:
        assert errors or left, f"{case} unexpectedly survived {TASKS * ROUNDS} statements"
