"""``poolwatch size``, run for real as a subprocess of the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from support import PgTarget

SCRIPT = Path(sys.executable).with_name("poolwatch")


def poolwatch(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``poolwatch`` console script (or ``python -m poolwatch.cli`` without it)."""
    argv = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "poolwatch.cli"]
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_four_workers_on_200_connections_give_pool_size_42() -> None:
    result = poolwatch(
        "size", "--max-connections", "200", "--reserved", "10", "--workers", "4",
        "--max-overflow", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "recommended pool_size" in result.stdout
    assert "floor((200 - 10) / 4) - 5 = 47 - 5 = 42" in result.stdout
    assert "pool_size=42," in result.stdout
    assert "create_async_engine(" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour when not a terminal


def test_eight_workers_on_200_connections_give_pool_size_18_as_json() -> None:
    result = poolwatch(
        "size", "--max-connections", "200", "--reserved", "10", "--workers", "8",
        "--max-overflow", "5", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["pool_size"] == 18
    assert data["per_worker_peak"] == 23
    assert data["peak_total"] == 184  # (pool_size + max_overflow) x workers = (18 + 5) x 8
    assert data["usable"] == 190
    assert data["headroom"] == 6
    assert "pool_size=18," in data["snippet"]


def test_json_of_four_workers() -> None:
    result = poolwatch(
        "size", "--max-connections", "200", "--reserved", "10", "--workers", "4",
        "--max-overflow", "5", "--json",
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert (data["pool_size"], data["peak_total"], data["headroom"]) == (42, 188, 2)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-connections", "200", "--workers", "0"], ["--workers", "at least 1"]),
        (["--max-connections", "20", "--reserved", "20"], ["--reserved", "below max_connections"]),
        (
            ["--max-connections", "20", "--reserved", "2", "--workers", "4", "--max-overflow", "5"],
            ["pool_size would be -1", "--max-overflow to at most 3"],
        ),
        (["--max-connections", "10", "--reserved", "0", "--workers", "20"], ["at most 10 workers"]),
        (["--max-connections", "lots"], ["invalid int value", "--help"]),
        (["--workers", "4"], ["--max-connections", "--dsn"]),
        (["--max-connections", "100", "--max-overflow", "-1"], ["--max-overflow"]),
        (["--max-connections", "100", "--pgbouncer", "statement"], ["invalid choice"]),
        (["--max-connections", "100", "--pool-timeout", "nan"], ["--pool-timeout", "above 0"]),
        (["--max-connections", "100", "--pool-timeout", "inf"], ["--pool-timeout", "above 0"]),
        (["--max-connections", "100", "--pool-recycle", "-5"], ["--pool-recycle", "-1 (off)"]),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], words: list[str]) -> None:
    result = poolwatch("size", *args)
    assert_one_line_error(result, *words)
    assert result.stdout == ""


def test_pgbouncer_transaction_mode_advice() -> None:
    result = poolwatch(
        "size", "--max-connections", "200", "--reserved", "10", "--workers", "4",
        "--pgbouncer", "transaction", "--concurrency", "150", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["mode"] == "transaction"
    assert data["pool_size"] == 150
    assert data["pgbouncer_default_pool_size"] == 190
    assert data["peak_total"] == (150 + 5) * 4
    assert data["pgbouncer_max_client_conn"] == 730  # ceil(620 / 0.85)
    assert 'connect_args={"statement_cache_size": 0}' in data["snippet"]
    assert "prepared_statement_name_func" not in data["snippet"]
    assert any("max_client_conn >= 730" in note for note in data["notes"])
    assert not any("slots reserved" in note for note in data["notes"])  # --reserved 10


def test_pgbouncer_pools_share_the_server() -> None:
    result = poolwatch(
        "size", "--max-connections", "100", "--reserved", "10", "--workers", "2",
        "--pgbouncer", "transaction", "--pgbouncer-pools", "4", "--json",
    )  # fmt: skip
    assert json.loads(result.stdout)["pgbouncer_default_pool_size"] == 22  # floor(90 / 4)
    text = poolwatch(
        "size", "--max-connections", "100", "--reserved", "10", "--workers", "2",
        "--pgbouncer", "transaction", "--pgbouncer-pools", "4",
    )  # fmt: skip
    assert "PgBouncer max_client_conn    >= 248" in text.stdout  # ceil(210 / 0.85)
    assert "PgBouncer default_pool_size  <= 22" in text.stdout
    bad = poolwatch("size", "--max-connections", "100", "--pgbouncer-pools", "0")
    assert_one_line_error(bad, "--pgbouncer-pools must be at least 1")


@pytest.mark.parametrize("mode", ["none", "transaction"])
def test_snippet_runs_as_pasted(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = poolwatch("size", "--max-connections", "100", "--pgbouncer", mode, "--json")
    snippet = json.loads(result.stdout)["snippet"]
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app@127.0.0.1:1/db")
    namespace: dict[str, object] = {}
    exec(compile(snippet, "<size snippet>", "exec"), namespace)  # imports included
    engine = namespace["engine"]
    assert type(engine).__name__ == "AsyncEngine"
    assert engine.pool.size() == json.loads(result.stdout)["pool_size"]  # type: ignore[attr-defined]


def test_dsn_reads_limits_from_the_server(pg: PgTarget) -> None:
    async def server_values() -> tuple[int, int]:
        conn = await asyncpg.connect(pg.dsn)
        try:
            max_conn = int(await conn.fetchval("SHOW max_connections"))
            reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
            extra = await conn.fetchval("SELECT current_setting('reserved_connections', true)")
            return max_conn, reserved + int(extra or 0)
        finally:
            await conn.close()

    import asyncio

    max_conn, reserved = asyncio.run(server_values())
    result = poolwatch("size", "--dsn", pg.dsn, "--workers", "2", "--max-overflow", "3", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["max_connections"] == max_conn
    assert data["reserved"] == reserved
    assert data["pool_size"] == (max_conn - reserved) // 2 - 3
    text = poolwatch("size", "--dsn", pg.dsn, "--workers", "2", "--max-overflow", "3")
    assert f"max_connections {max_conn}, {reserved} reserved" in text.stdout


def test_unreachable_dsn_is_one_line_without_the_password() -> None:
    result = poolwatch(
        "size", "--dsn", "postgresql://app:s3cret-pw@127.0.0.1:1/shop", "--workers", "2"
    )
    line = assert_one_line_error(result, "cannot connect", "app:***@127.0.0.1:1/shop")
    assert "s3cret-pw" not in line + result.stdout


def test_help_has_examples() -> None:
    for args in (["--help"], ["size", "--help"], ["doctor", "--help"], ["demo", "--help"]):
        result = poolwatch(*args)
        assert result.returncode == 0
        assert "examples:" in result.stdout


def test_a_flag_prefix_is_not_guessed() -> None:
    # --max-conn would silently be --max-connections with argparse's default abbreviations
    assert_one_line_error(poolwatch("size", "--max-conn", "100", "--workers", "2"), "--max-conn")
