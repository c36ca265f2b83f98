"""``poolwatch doctor`` against the real server, run as a subprocess of the console script."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from test_cli_size import assert_one_line_error, poolwatch

from poolwatch.urls import with_database
from support import PgTarget

GOOD_DB = "poolwatch_doctor_good"
GOOD_FLAGS = [
    "--pool-size", "5", "--max-overflow", "2", "--pool-timeout", "5", "--pool-recycle", "1800",
    "--pool-pre-ping", "--workers", "2",
]  # fmt: skip


async def _execute(dsn: str, *sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def good_dsn(pg: PgTarget) -> Iterator[str]:
    """A database whose sessions get both safety timeouts (ALTER DATABASE ... SET)."""
    asyncio.run(
        _execute(
            pg.dsn,
            f"DROP DATABASE IF EXISTS {GOOD_DB}",
            f"CREATE DATABASE {GOOD_DB}",
            f"ALTER DATABASE {GOOD_DB} SET statement_timeout = '30s'",
            f"ALTER DATABASE {GOOD_DB} SET idle_in_transaction_session_timeout = '5s'",
        )
    )
    yield with_database(pg.dsn, GOOD_DB)
    asyncio.run(_execute(pg.dsn, f"DROP DATABASE IF EXISTS {GOOD_DB} WITH (FORCE)"))


def checks(result_stdout: str) -> dict[str, str]:
    data = json.loads(result_stdout)
    return {c["id"]: c["status"] for c in data["checks"]}


def test_good_settings_pass(good_dsn: str) -> None:
    result = poolwatch("doctor", "--dsn", good_dsn, *GOOD_FLAGS, "--sla", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problems, 0 warnings" in result.stdout
    assert "statement_timeout = 30 s" in result.stdout
    assert "\x1b[" not in result.stdout


def test_good_settings_json(good_dsn: str) -> None:
    result = poolwatch("doctor", "--dsn", good_dsn, *GOOD_FLAGS, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["problems"] == 0
    assert set(checks(result.stdout).values()) == {"ok"}
    assert data["server"]["database"] == GOOD_DB
    assert data["settings"]["pool_size"] == 5


def test_bad_settings_each_explained_with_a_fix(pg: PgTarget) -> None:
    result = poolwatch(
        "doctor", "--dsn", pg.dsn, "--pool-size", "60", "--max-overflow", "20",
        "--workers", "4", "--pool-timeout", "30", "--pool-recycle", "1800",
        "--no-pool-pre-ping", "--proxy-idle-timeout", "300", "--sla", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    status = checks(result.stdout)
    assert status["capacity"] == "fail"
    assert status["pool_pre_ping"] == "fail"
    assert status["pool_recycle"] == "fail"
    assert status["pool_timeout"] == "fail"
    data = json.loads(result.stdout)
    fixes = {c["id"]: c["fix"] for c in data["checks"]}
    assert "pool_recycle=225" in fixes["pool_recycle"]  # 75 % of the 300 s proxy idle timeout
    assert "pool_pre_ping=True" in fixes["pool_pre_ping"]
    assert "pool_timeout=1" in fixes["pool_timeout"]
    assert "pool_size=" in fixes["capacity"]
    # the embedded server's defaults: neither safety timeout is set
    if data["server"]["statement_timeout_ms"] == 0:
        assert status["statement_timeout"] == "fail"
    if data["server"]["idle_in_transaction_timeout_ms"] == 0:
        assert status["idle_in_transaction_session_timeout"] == "fail"


def test_bad_settings_text_shows_fixes(pg: PgTarget) -> None:
    result = poolwatch("doctor", "--dsn", pg.dsn, "--pool-size", "200", "--workers", "4")
    assert result.returncode == 1
    assert "FAIL  capacity" in result.stdout
    assert "fix:" in result.stdout
    assert "Traceback" not in result.stderr


def test_pgbouncer_transaction_with_prepared_statements(good_dsn: str) -> None:
    base = ["doctor", "--dsn", good_dsn, *GOOD_FLAGS, "--pgbouncer", "transaction", "--json"]
    on = poolwatch(*base)
    assert on.returncode == 1
    assert checks(on.stdout)["prepared_statements"] == "fail"
    off = poolwatch(*base, "--prepared-statements", "off")
    assert off.returncode == 0, off.stdout
    assert checks(off.stdout)["prepared_statements"] == "ok"


async def test_session_idle_in_transaction_now(good_dsn: str) -> None:
    conn = await asyncpg.connect(
        good_dsn,
        server_settings={
            "application_name": "stuck-in-tx",
            "idle_in_transaction_session_timeout": "0",
        },
    )
    try:
        await conn.execute("BEGIN; SELECT 1")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        result = await asyncio.to_thread(
            poolwatch, "doctor", "--dsn", good_dsn, *GOOD_FLAGS, "--idle-threshold", "0"
        )
    finally:
        await conn.close()
    assert result.returncode == 1, result.stdout
    assert "FAIL  idle_in_tx_now" in result.stdout
    assert f"pid {pid} " in result.stdout
    assert "app=stuck-in-tx" in result.stdout
    assert "pg_terminate_backend" in result.stdout


def test_engine_module_attr(pg: PgTarget, good_dsn: str, tmp_path: Path) -> None:
    url = pg.url("asyncpg")
    (tmp_path / "shop_db.py").write_text(
        textwrap.dedent(
            f"""
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(
                {url!r}, pool_size=7, max_overflow=3, pool_timeout=4, pool_recycle=900,
                pool_pre_ping=True,
                connect_args={{"server_settings": {{
                    "statement_timeout": "20000",
                    "idle_in_transaction_session_timeout": "5000"}}}},
            )
            naive = create_async_engine({url!r}, pool_size=50, max_overflow=20)
            """
        )
    )
    good = poolwatch("doctor", "--engine", "shop_db:engine", "--json", cwd=str(tmp_path))
    assert good.returncode == 0, good.stdout + good.stderr
    data = json.loads(good.stdout)
    assert data["settings"]["pool_size"] == 7
    assert data["settings"]["pool_recycle"] == 900
    assert data["server"]["statement_timeout_ms"] == 20000  # seen through the app's engine
    naive = poolwatch(
        "doctor", "--engine", "shop_db:naive", "--workers", "4", "--pgbouncer", "transaction",
        "--json", cwd=str(tmp_path),
    )  # fmt: skip
    assert naive.returncode == 1
    assert checks(naive.stdout)["prepared_statements"] == "fail"


def test_engine_of_another_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lite_db.py").write_text(
        "from sqlalchemy import create_engine\nengine = create_engine('sqlite://')\n"
    )
    result = poolwatch("doctor", "--engine", "lite_db:engine", cwd=str(tmp_path))
    assert_one_line_error(result, "is a sqlite engine", "PostgreSQL")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["--dsn", "--engine"]),
        (["--engine", "no_such_module_xyz:engine"], ["cannot import"]),
        (["--engine", "nocolon"], ["module:attribute"]),
        (["--dsn", "mysql://x@y/z"], ["postgresql://"]),
        (["--dsn", "postgresql://u:hunter2@127.0.0.1:1/db"], ["cannot connect", "u:***@"]),
        (["--dsn", "postgresql://x@y/z", "--workers", "0"], ["--workers"]),
        (["--dsn", "postgresql://x@y/z", "--pool-size", "many"], ["invalid int value"]),
        # a mistyped flag: argparse quotes the argument, password and all
        (["--dns=postgresql://u:hunter2@127.0.0.1:1/db"], ["unrecognized", "u:***@"]),
        (["--pool-size=postgresql://u:hunter2@x/db"], ["invalid int value", "u:***@"]),
        (["--dsn", "postgresql://u:hunter2@[::1/db"], ["Invalid IPv6 URL", "u:***@"]),
        (
            ["--dsn", "postgresql://u:hunter2@db:notaport/x"],
            ["port that is not a number", "u:***@"],
        ),
        (["--dsn", "postgresql://u:hunter2@a:5432,b:5432/x"], ["several hosts", "u:***@"]),
        (["--dsn", "postgresql://u:hunter2@db/x?connect_timeout=soon"], ["connect_timeout"]),
        (["--dsn", "postgresql://u:hun/ter2@127.0.0.1:1/db"], ["percent-encode"]),
        (["--dsn", "postgresql://u:hun?ter2@127.0.0.1:1/db"], ["percent-encode"]),
        (["--dsn", "postgresql://u@127.0.0.1:1/db?password=hunter2"], ["password=***"]),
        (["--dsn", "postgresql://x@y/z", "--pool-timeout", "-3"], ["--pool-timeout", "above 0"]),
        (["--dsn", "postgresql://x@y/z", "--sla", "-1"], ["--sla", "above 0"]),
        (["--dsn", "postgresql://x@y/z", "--proxy-idle-timeout", "-10"], ["above 0"]),
        (["--dsn", "postgresql://x@y/z", "--idle-threshold", "-5"], ["0 or more"]),
        (["--dsn", "postgresql://x@y/z", "--pool-recycle", "nan"], ["-1 (off)"]),
    ],
)
def test_errors_are_one_line(args: list[str], words: list[str]) -> None:
    result = poolwatch("doctor", *args)
    line = assert_one_line_error(result, *words)
    assert "hunter2" not in line


def test_a_port_that_accepts_but_never_answers_is_one_line() -> None:
    # The kernel completes the TCP handshake for a listening socket nobody accept()s: the
    # doctor then waits for a server greeting that never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        dsn = f"postgresql://u:hunter2@127.0.0.1:{port}/db?connect_timeout=1"
        result = poolwatch("doctor", "--dsn", dsn)
    line = assert_one_line_error(result, "cannot connect", "no answer within 1 s", "u:***@")
    assert "hunter2" not in line
    assert "TimeoutError" not in line
