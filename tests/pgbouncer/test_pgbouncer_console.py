"""poolwatch.pgbouncer.console against Debian's real PgBouncer (admin console, simple query)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from pgbouncer_support import (
    ADMIN_PASSWORD,
    APP_USER,
    NOBODY_USER,
    STATS_PASSWORD,
    STATS_USER,
    PgBouncer,
    free_port,
)
from poolwatch.pgbouncer import AdminConsole, ConsoleError
from poolwatch.pgbouncer.target import parse_target
from support import require_tool, until_async


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256", "plain"])
async def test_every_auth_type_reads_show_commands(
    pgbouncer_factory: Callable[..., PgBouncer], auth_type: str
) -> None:
    bouncer = pgbouncer_factory(auth_type=auth_type)
    async with await AdminConsole.connect(bouncer.stats_dsn()) as console:
        assert console.auth_method == auth_type
        version = await console.show("VERSION")
        assert version[0]["version"].startswith("PgBouncer ")
        pools = await console.show("SHOW POOLS")
        assert {"database", "user", "cl_active", "cl_waiting", "sv_active"} <= set(pools.columns)
        config = {row["key"]: row["value"] for row in await console.show("CONFIG")}
        assert config["auth_type"] == auth_type
        assert config["default_pool_size"] == "2"
        for what in ("STATS", "DATABASES", "LISTS"):
            rows = await console.show(what)
            assert rows.columns, what
    assert console.closed


async def test_show_pools_counts_clients_queued_behind_a_held_pool(pgbouncer: PgBouncer) -> None:
    # default_pool_size 2: hold both server connections in open transactions, queue K more
    k = 3
    holders = [await asyncpg.connect(pgbouncer.dsn(), statement_cache_size=0) for _ in range(2)]
    waiters: list[asyncio.Task[object]] = []
    try:
        for conn in holders:
            await conn.execute("BEGIN; SELECT 1")
        for _ in range(k):
            conn = await asyncpg.connect(pgbouncer.dsn(), statement_cache_size=0)
            holders.append(conn)
            waiters.append(asyncio.create_task(conn.execute("SELECT 1")))
        async with await AdminConsole.connect(pgbouncer.stats_dsn()) as console:

            async def app_pool() -> dict[str, object]:
                rows = await console.show("POOLS")
                return next(
                    r for r in rows if r["database"] == "postgres" and r["user"] == APP_USER
                )

            pool = await until_async(
                app_pool,
                holds=lambda p: p["cl_waiting"] == k,
                timeout=10,
                what=f"{k} clients waiting in the pool",
            )
            assert pool["sv_active"] == 2
            assert pool["cl_active"] == 2
            assert isinstance(pool["maxwait_us"], int)
            assert not any(w.done() for w in waiters)
    finally:
        for conn in holders[:2]:
            await conn.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(*waiters), 10)
        for conn in holders:
            await conn.close()


async def test_wrong_password_is_one_line_without_the_password(pgbouncer: PgBouncer) -> None:
    wrong = "Wr0ng-pa55-word"
    with pytest.raises(ConsoleError) as caught:
        await AdminConsole.connect(pgbouncer.dsn("pgbouncer", STATS_USER, wrong))
    message = str(caught.value)
    assert "\n" not in message
    assert wrong not in message and STATS_PASSWORD not in message
    assert f"refused the password for user {STATS_USER}" in message


async def test_role_neither_stats_nor_admin_is_told_how_to_fix(pgbouncer: PgBouncer) -> None:
    with pytest.raises(ConsoleError) as caught:
        await AdminConsole.connect(pgbouncer.dsn("pgbouncer", NOBODY_USER))
    message = str(caught.value)
    assert f"user {NOBODY_USER} may not use PgBouncer's admin console" in message
    assert "stats_users" in message and "admin_users" in message


async def test_stats_user_cannot_pause_and_connection_survives(pgbouncer: PgBouncer) -> None:
    async with await AdminConsole.connect(pgbouncer.stats_dsn()) as console:
        with pytest.raises(ConsoleError, match="needs an admin_users role"):
            await console.execute("PAUSE")
        assert not console.closed
        assert (await console.show("VERSION"))[0]["version"]


async def test_unreachable_and_timeout_are_one_line() -> None:
    port = free_port()
    with pytest.raises(ConsoleError, match=rf"cannot reach PgBouncer at 127.0.0.1:{port}"):
        await AdminConsole.connect(f"postgresql://u:{ADMIN_PASSWORD}@127.0.0.1:{port}/pgbouncer")
    # a listener that never answers the startup packet
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    silent = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConsoleError, match=r"did not answer connecting within 0.3 s"):
            await AdminConsole.connect(
                f"postgresql://u:{ADMIN_PASSWORD}@127.0.0.1:{silent}/pgbouncer", timeout=0.3
            )
    finally:
        server.close()
        await server.wait_closed()


async def test_paused_pgbouncer_console_still_answers(pgbouncer: PgBouncer) -> None:
    pgbouncer.pause("postgres")
    try:
        async with await AdminConsole.connect(pgbouncer.stats_dsn(), timeout=2) as console:
            databases = {r["name"]: r for r in await console.show("DATABASES")}
            assert databases["postgres"]["paused"] == 1
        with pytest.raises(asyncio.TimeoutError):
            conn = await asyncpg.connect(pgbouncer.dsn(), statement_cache_size=0, timeout=5)
            try:
                await conn.fetchval("SELECT 1", timeout=0.5)
            finally:
                conn.terminate()
    finally:
        pgbouncer.resume("postgres")


async def test_restart_on_the_same_port(pgbouncer: PgBouncer) -> None:
    console = await AdminConsole.connect(pgbouncer.stats_dsn())
    pgbouncer.restart()
    with pytest.raises(ConsoleError):
        await console.show("VERSION")
    assert console.closed
    async with await AdminConsole.connect(pgbouncer.stats_dsn()) as again:
        assert (await again.show("VERSION"))[0]["version"]


def test_parse_target_reads_socket_port_and_env_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    t = parse_target("postgresql://stats@/pgbouncer?host=/run/pgb&port=6433")
    assert (t.host, t.port, t.user, t.password, t.database) == (
        "/run/pgb",
        6433,
        "stats",
        "from-env",
        "pgbouncer",
    )
    assert t.socket == "/run/pgb/.s.PGSQL.6433"
    assert parse_target("postgresql://stats@h/pgbouncer").sslmode == "prefer"  # as libpq
    with pytest.raises(ConsoleError, match="sslmode=bogus is not one of disable, allow"):
        parse_target("postgresql://stats@h/pgbouncer?sslmode=bogus")
    with pytest.raises(ConsoleError, match="names no user"):
        parse_target("postgresql://h:6432/pgbouncer")


async def test_unix_socket(pgbouncer: PgBouncer) -> None:
    dsn = (
        f"postgresql://{STATS_USER}:{STATS_PASSWORD}@/pgbouncer"
        f"?host={pgbouncer.directory}&port={pgbouncer.port}"
    )
    async with await AdminConsole.connect(dsn) as console:
        assert console.target.socket.endswith(f"/.s.PGSQL.{pgbouncer.port}")
        assert (await console.show("VERSION"))[0]["version"].startswith("PgBouncer ")


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), made with openssl."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_modes(pgbouncer_factory: Callable[..., PgBouncer], tmp_path: Path) -> None:
    require_tool("openssl")
    bouncer = pgbouncer_factory()
    plain = bouncer.stats_dsn()
    with pytest.raises(ConsoleError, match="does not accept TLS"):
        await AdminConsole.connect(plain + "?sslmode=require")
    async with await AdminConsole.connect(plain) as console:  # prefer: plain when refused
        assert not console.tls
    cert, key = self_signed(bouncer.directory, "server")
    other, _ = self_signed(tmp_path, "other")
    bouncer.reconfigure(
        client_tls_sslmode="require", client_tls_cert_file=str(cert), client_tls_key_file=str(key)
    )
    for query in ("", "?sslmode=require", f"?sslmode=verify-full&sslrootcert={cert}"):
        async with await AdminConsole.connect(plain + query) as console:
            assert console.tls, query
            assert (await console.show("VERSION"))[0]["version"]
    with pytest.raises(
        ConsoleError,
        match=r"TLS with PgBouncer at 127\.0\.0\.1:\d+ failed: CERTIFICATE_VERIFY_FAILED",
    ):
        await AdminConsole.connect(plain + f"?sslmode=verify-ca&sslrootcert={other}")
    with pytest.raises(ConsoleError):  # TLS is required by PgBouncer now
        await AdminConsole.connect(plain + "?sslmode=disable")
