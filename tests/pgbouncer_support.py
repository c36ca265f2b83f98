"""A real PgBouncer (Debian's ``/usr/sbin/pgbouncer``) in front of the test PostgreSQL.

:func:`start_pgbouncer` writes a config and a userlist into a temp dir of its own, starts
PgBouncer on a free loopback port (transaction pool mode, a small ``default_pool_size``) and
waits, with a deadline, until it accepts connections. PgBouncer refuses to run as root, so as
root it runs as the owner of the server's socket directory (the embedded PostgreSQL's own
system user, whose socket sits in a 0700 data dir), or ``nobody`` for a TCP server.

Roles in the userlist (all with a non-empty password, as ``md5``/``plain`` require):
``APP_USER`` (a real PostgreSQL role the fixture creates), ``ADMIN_USER`` (``admin_users``),
``STATS_USER`` (``stats_users``) and ``NOBODY_USER`` (neither: the console refuses it).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from poolwatch.urls import sqlalchemy_url
from support import free_port, skip_or_fail, until

PGBOUNCER_BIN = "/usr/sbin/pgbouncer"
_T = TypeVar("_T")

APP_USER, APP_PASSWORD = "pw_pgb_app", "app-secret-7Q"
ADMIN_USER, ADMIN_PASSWORD = "pw_pgb_admin", "admin-secret-3X"
STATS_USER, STATS_PASSWORD = "pw_pgb_stats", "stats-secret-9K"
NOBODY_USER, NOBODY_PASSWORD = "pw_pgb_nobody", "nobody-secret-5M"

DEFAULT_SETTINGS: dict[str, str | int] = {
    "pool_mode": "transaction",
    "default_pool_size": 2,
    "max_client_conn": 100,
    "reserve_pool_size": 0,
    "auth_type": "md5",
    "server_lifetime": 3600,
    "server_idle_timeout": 600,
    "query_wait_timeout": 120,
}


def server_address(dsn: str) -> tuple[str, int, str]:
    """(host or socket dir, port, database) of a libpq URL."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "127.0.0.1"
    port = int(query.get("port") or parts.port or 5432)
    database = unquote(parts.path.lstrip("/")) or "postgres"
    return host, port, database


@dataclass
class PgBouncer:
    """A running PgBouncer; ``dsn(...)`` gives URLs for its users and databases."""

    port: int
    directory: Path
    server_host: str
    server_port: int
    run_as: str | None
    settings: dict[str, str | int] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    # --- URLs ---------------------------------------------------------------------------------

    def dsn(
        self, database: str = "postgres", user: str = APP_USER, password: str | None = None
    ) -> str:
        """A libpq URL through PgBouncer (the password of a known user by default)."""
        if password is None:
            password = _PASSWORDS.get(user, "")
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def url(self, driver: str = "asyncpg", database: str = "postgres") -> str:
        """A SQLAlchemy URL (``postgresql+<driver>://``) for APP_USER through PgBouncer."""
        return sqlalchemy_url(self.dsn(database), driver)

    def admin_dsn(self) -> str:
        """The admin console as ADMIN_USER."""
        return self.dsn("pgbouncer", ADMIN_USER)

    def stats_dsn(self) -> str:
        """The admin console as STATS_USER (read-only SHOW commands)."""
        return self.dsn("pgbouncer", STATS_USER)

    # --- life cycle ---------------------------------------------------------------------------

    def write_config(self) -> None:
        """(Re)write pgbouncer.ini and userlist.txt from ``settings``."""
        d = self.directory
        users = "".join(f'"{u}" "{p}"\n' for u, p in _PASSWORDS.items())
        (d / "userlist.txt").write_text(users)
        host = self.server_host
        lines = ["[databases]"]
        for name, extra in self.databases.items():
            lines.append(f"{name} = host={host} port={self.server_port} {extra}".rstrip())
        lines.append(f"* = host={host} port={self.server_port}")
        lines += [
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {d}",
            f"auth_file = {d / 'userlist.txt'}",
            f"logfile = {d / 'pgbouncer.log'}",
            f"pidfile = {d / 'pgbouncer.pid'}",
            f"admin_users = {ADMIN_USER}",
            f"stats_users = {STATS_USER}",
            "ignore_startup_parameters = extra_float_digits,options",
            "log_connections = 0",
            "log_disconnections = 0",
        ]
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        (d / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            for path in (d, *d.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout: float = 15.0) -> None:
        """Start PgBouncer (same port as before) and wait until it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.write_config()
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            [PGBOUNCER_BIN, str(self.directory / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **kwargs,
        )
        unix_socket = self.directory / f".s.PGSQL.{self.port}"
        process = self.process

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start: {self.log_tail()}")
            # the Unix socket may listen after the TCP one: wait for both
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            with socket.socket(socket.AF_UNIX) as unix:
                unix.settimeout(0.5)
                unix.connect(str(unix_socket))
            return True

        try:
            until(
                listening,
                timeout=timeout,
                interval=0.02,
                catch=(OSError,),
                what=f"pgbouncer to listen on {self.port}",
            )
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(str(exc)) from None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop PgBouncer at once (SIGTERM: immediate shutdown) and wait for it to exit."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def reconfigure(self, **settings: str | int) -> None:
        """Change settings and restart (e.g. ``auth_type="scram-sha-256"``)."""
        self.settings.update(settings)
        self.restart()

    def log_tail(self, lines: int = 5) -> str:
        """The end of PgBouncer's log (for failure messages)."""
        log = self.directory / "pgbouncer.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if self.process is not None and self.process.stderr is not None and not text:
            text = self.process.stderr.read().decode(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    # --- admin console ------------------------------------------------------------------------

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run one admin-console command (PAUSE, RESUME, SHOW POOLS, ...) as ADMIN_USER."""
        from poolwatch.pgbouncer.console import run_command

        return _run_sync(run_command(self.admin_dsn(), command))

    def pause(self, database: str = "") -> None:
        """PAUSE (all databases, or one): new queries wait until :meth:`resume`."""
        self.admin(f"PAUSE {database}".strip())

    def resume(self, database: str = "") -> None:
        """RESUME after :meth:`pause`."""
        self.admin(f"RESUME {database}".strip())


_PASSWORDS = {
    APP_USER: APP_PASSWORD,
    ADMIN_USER: ADMIN_PASSWORD,
    STATS_USER: STATS_PASSWORD,
    NOBODY_USER: NOBODY_PASSWORD,
}


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from sync code, also when called inside a running loop."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coro).result()


def _run_as_user(server_host: str) -> str | None:
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        owner = pwd.getpwuid(os.stat(server_host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


async def _ensure_app_role(superuser_dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(superuser_dsn)
    try:
        exists = await conn.fetchval("select 1 from pg_roles where rolname = $1", APP_USER)
        verb = "ALTER" if exists else "CREATE"
        # the password lets PgBouncer log in where the server is not set to trust
        await conn.execute(f"{verb} ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
        await conn.execute(f"GRANT pg_read_all_stats TO {APP_USER}")
    finally:
        await conn.close()


@contextmanager
def running_pgbouncer(
    superuser_dsn: str,
    settings: Mapping[str, str | int] | None = None,
    databases: Mapping[str, str] | None = None,
) -> Iterator[PgBouncer]:
    """A started PgBouncer in front of the server at ``superuser_dsn``; removed afterwards.

    ``databases`` adds named entries (name -> extra connect options such as
    ``dbname=x pool_size=3``); any other database name is passed through by ``*``.
    Without ``/usr/sbin/pgbouncer`` the test is skipped (failed under POOLWATCH_REQUIRE_ALL=1).
    """
    if not (os.path.isfile(PGBOUNCER_BIN) and os.access(PGBOUNCER_BIN, os.X_OK)):
        skip_or_fail(f"{PGBOUNCER_BIN} is not installed (apt-get install pgbouncer)")
    host, port, _ = server_address(superuser_dsn)
    _run_sync(_ensure_app_role(superuser_dsn))
    directory = Path(tempfile.mkdtemp(prefix="poolwatch-pgbouncer-"))
    os.chmod(directory, 0o700)
    bouncer = PgBouncer(
        port=free_port(),
        directory=directory,
        server_host=host,
        server_port=port,
        run_as=_run_as_user(host),
        settings={**DEFAULT_SETTINGS, **(settings or {})},
        databases={"postgres": "dbname=postgres", **(databases or {})},
    )
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def leftover_statements(bouncer: PgBouncer) -> int:
    """Prepared statements left on every server connection of PgBouncer's pool: one client per
    server connection (``default_pool_size``), each pinned to its own by an open transaction."""
    import asyncpg

    size = int(bouncer.settings["default_pool_size"])
    conns = [await asyncpg.connect(bouncer.dsn(), statement_cache_size=0) for _ in range(size)]
    try:
        total = 0
        for conn in conns:
            await conn.execute("BEGIN")
            total += await conn.fetchval("select count(*) from pg_prepared_statements")
        return total
    finally:
        for conn in conns:
            await conn.close()
