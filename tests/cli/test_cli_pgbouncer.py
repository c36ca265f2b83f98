"""``poolwatch size`` and ``doctor`` through Debian's real PgBouncer (transaction mode)."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text
from test_cli_doctor import GOOD_FLAGS, checks
from test_cli_size import assert_one_line_error, poolwatch

from pgbouncer_support import (
    NOBODY_USER,
    STATS_PASSWORD,
    STATS_USER,
    PgBouncer,
    leftover_statements,
)


def test_doctor_twice_through_pgbouncer_leaves_no_prepared_statement(
    pgbouncer: PgBouncer,
) -> None:
    base = ["doctor", "--dsn", pgbouncer.dsn(), *GOOD_FLAGS, "--pgbouncer", "transaction"]
    first = poolwatch(*base, "--json")
    assert first.returncode in (0, 1), first.stderr
    assert asyncio.run(leftover_statements(pgbouncer)) == 0
    second = poolwatch(*base, "--json")
    assert second.returncode in (0, 1), second.stderr
    assert json.loads(second.stdout)["server"]["database"] == "postgres"
    size = poolwatch("size", "--dsn", pgbouncer.dsn(), "--workers", "2", "--json")
    assert size.returncode == 0, size.stderr
    assert asyncio.run(leftover_statements(pgbouncer)) == 0


async def pollute(bouncer: PgBouncer) -> int:
    """Leave asyncpg's __asyncpg_stmt_1__ on every server connection, as a naive app does."""
    size = int(bouncer.settings["default_pool_size"])
    conns = [await asyncpg.connect(bouncer.dsn()) for _ in range(size)]
    try:
        for conn in conns:
            await conn.execute("BEGIN")
            await conn.fetchval("select 1")  # asyncpg's cache: a named statement
        return await leftover_statements_of(conns)
    finally:
        for conn in conns:
            await conn.execute("COMMIT")
            await conn.close()


async def leftover_statements_of(conns: list[asyncpg.Connection]) -> int:
    return sum([await c.fetchval("select count(*) from pg_prepared_statements") for c in conns])


def write_engines(tmp_path: Path, url: str) -> None:
    (tmp_path / "bounced_db.py").write_text(
        textwrap.dedent(
            f"""
            from uuid import uuid4

            from sqlalchemy.ext.asyncio import create_async_engine

            cached = create_async_engine({url!r}, pool_size=20, max_overflow=5, pool_timeout=5)
            safe = create_async_engine(
                {url!r}, pool_size=20, max_overflow=5, pool_timeout=5,
                connect_args={{"statement_cache_size": 0}},
            )
            named = create_async_engine(
                {url!r}, pool_size=20, max_overflow=5, pool_timeout=5,
                connect_args={{
                    "statement_cache_size": 0,
                    "prepared_statement_name_func": lambda: f"__asyncpg_{{uuid4()}}__",
                }},
            )
            """
        )
    )


def test_doctor_engine_with_cache_on_reports_fail_instead_of_failing_to_connect(
    pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    assert asyncio.run(pollute(pgbouncer)) >= 2
    write_engines(tmp_path, pgbouncer.url())
    base = ["doctor", "--pgbouncer", "transaction", "--workers", "2", "--json"]
    cached = poolwatch(*base, "--engine", "bounced_db:cached", cwd=str(tmp_path))
    assert cached.returncode == 1, cached.stderr
    data = json.loads(cached.stdout)
    check = next(c for c in data["checks"] if c["id"] == "prepared_statements")
    assert check["status"] == "fail"
    assert 'connect_args={"statement_cache_size": 0}' in check["fix"]
    safe = poolwatch(*base, "--engine", "bounced_db:safe", cwd=str(tmp_path))
    assert checks(safe.stdout)["prepared_statements"] == "ok", safe.stderr
    named = poolwatch(*base, "--engine", "bounced_db:named", cwd=str(tmp_path))
    assert checks(named.stdout)["prepared_statements"] == "warn", named.stderr


async def run_snippet_traffic(snippet: str, url: str) -> list[object]:
    os.environ["DATABASE_URL"] = url
    namespace: dict[str, Any] = {}
    try:
        exec(compile(snippet, "<size snippet>", "exec"), namespace)
    finally:
        del os.environ["DATABASE_URL"]
    engine = namespace["engine"]

    async def one(i: int) -> object:
        async with engine.connect() as conn:
            return (await conn.execute(text("select cast(:i as int) * 2"), {"i": i})).scalar()

    try:
        return list(await asyncio.gather(*(one(i) for i in range(40))))
    finally:
        await engine.dispose()


def test_size_through_pgbouncer_snippet_works_there(pgbouncer: PgBouncer) -> None:
    result = poolwatch(
        "size", "--dsn", pgbouncer.dsn(), "--workers", "2", "--pgbouncer", "transaction",
        "--concurrency", "10", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (
        data["server"] is not None
        and data["reserved"]
        == data["server"]["superuser_reserved_connections"] + data["server"]["reserved_connections"]
    )
    if data["reserved"] < 10:  # the server's own reserved slots: the same note as direct mode
        assert any("slots reserved" in note for note in data["notes"])
    got = asyncio.run(run_snippet_traffic(data["snippet"], pgbouncer.url()))
    assert got == [i * 2 for i in range(40)]
    assert asyncio.run(leftover_statements(pgbouncer)) == 0


def pgb_checks(stdout: str) -> dict[str, tuple[str, str, str]]:
    data = json.loads(stdout)
    return {
        c["id"]: (c["status"], c["summary"], c["fix"])
        for c in data["checks"]
        if c["id"].startswith("pgb_")
    }


def test_doctor_reads_pgbouncer_config_and_flags_each_mismatch(
    pgbouncer_factory: Callable[..., PgBouncer],
) -> None:
    bouncer = pgbouncer_factory(max_client_conn=50, client_idle_timeout=60, query_wait_timeout=120)
    result = poolwatch(
        "doctor", "--dsn", bouncer.dsn(), "--pgbouncer-admin-dsn", bouncer.stats_dsn(),
        "--pool-size", "20", "--max-overflow", "5", "--workers", "4", "--pool-timeout", "5",
        "--pool-recycle", "1800", "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["options"]["pgbouncer"] == "transaction"  # pool_mode read from SHOW CONFIG
    assert data["pgbouncer"]["max_client_conn"] == 50
    found = pgb_checks(result.stdout)
    assert found["pgb_clients"][0] == "fail"
    assert "(20 + 5) x 4 = 100 client connections" in found["pgb_clients"][1]
    assert "max_client_conn = 118" in found["pgb_clients"][2]  # ceil(100 / 0.85)
    assert found["pgb_recycle"][0] == "fail"
    assert "pool_recycle=45" in found["pgb_recycle"][2]  # 75 % of client_idle_timeout 60
    assert found["pgb_queue_wait"][0] == "warn"
    assert "query_wait_timeout is 120 s, longer than pool_timeout 5 s" in found["pgb_queue_wait"][1]
    assert STATS_PASSWORD not in result.stdout + result.stderr
    with_sla = poolwatch(
        "doctor", "--dsn", bouncer.dsn(), "--pgbouncer-admin-dsn", bouncer.stats_dsn(),
        "--pool-timeout", "5", "--sla", "2", "--json",
    )  # fmt: skip
    assert pgb_checks(with_sla.stdout)["pgb_queue_wait"][0] == "fail"


def test_doctor_pgbouncer_checks_pass_on_matching_settings(
    pgbouncer_factory: Callable[..., PgBouncer],
) -> None:
    bouncer = pgbouncer_factory(max_client_conn=200, query_wait_timeout=5)
    result = poolwatch(
        "doctor", "--dsn", bouncer.dsn(), "--pgbouncer-admin-dsn", bouncer.stats_dsn(),
        "--pool-size", "20", "--max-overflow", "5", "--workers", "4", "--pool-timeout", "5",
        "--pool-recycle", "1800", "--prepared-statements", "off",
    )  # fmt: skip
    assert "OK    pgb_clients" in result.stdout, result.stdout + result.stderr
    assert "OK    pgb_recycle" in result.stdout
    assert "OK    pgb_query_wait" in result.stdout
    assert "PgBouncer 1." in result.stdout and "max_client_conn 200" in result.stdout


def test_doctor_pgbouncer_admin_errors_are_one_line(pgbouncer: PgBouncer) -> None:
    wrong = poolwatch(
        "doctor", "--dsn", pgbouncer.dsn(),
        "--pgbouncer-admin-dsn", pgbouncer.dsn("pgbouncer", STATS_USER, "Wr0ngPass"),
    )  # fmt: skip
    line = assert_one_line_error(wrong, "--pgbouncer-admin-dsn", "refused the password")
    assert "Wr0ngPass" not in line
    nobody = poolwatch(
        "doctor", "--dsn", pgbouncer.dsn(),
        "--pgbouncer-admin-dsn", pgbouncer.dsn("pgbouncer", NOBODY_USER),
    )  # fmt: skip
    assert_one_line_error(nobody, "stats_users", "admin_users")
