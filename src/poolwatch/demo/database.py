"""The demo's database: the user's server (``--dsn``) or an embedded PostgreSQL with a role
for the app and a ``pg_monitor`` role for the exporter."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from poolwatch import urls
from poolwatch.demo.app import DROP_SQL
from poolwatch.demo.processes import DemoError, Resources
from poolwatch.redaction import redact_known_dsn

SETUP_SQL = (
    "CREATE ROLE poolwatch_demo_app LOGIN",
    "CREATE ROLE poolwatch_exporter LOGIN",
    "GRANT pg_monitor TO poolwatch_exporter",
    "CREATE DATABASE poolwatch_demo OWNER poolwatch_demo_app",
)


@dataclass(frozen=True)
class Database:
    """Where the app and the exporter connect, and how to show it."""

    app_url: str  # SQLAlchemy, postgresql+asyncpg://
    exporter_dsn: str
    name: str
    shown: str  # fit to print: no password


async def execute(dsn: str, *statements: str) -> list[Any]:
    """Run ``statements`` on one new asyncpg session; the first value of each."""
    import asyncpg

    conn = await asyncpg.connect(urls.libpq_dsn(dsn), timeout=10)
    try:
        return [await conn.fetchval(sql) for sql in statements]
    finally:
        await conn.close()


def prepare_database(res: Resources, dsn: str | None) -> Database:
    """Check ``dsn`` (the demo's table is dropped at the end), or start an embedded server
    (stopped and deleted at the end)."""
    if dsn is not None:
        try:
            app_url = urls.sqlalchemy_url(dsn, "asyncpg")
            (database,) = asyncio.run(execute(dsn, "SELECT current_database()"))
        except urls.DsnError as exc:
            raise DemoError(str(exc)) from None
        except Exception as exc:
            raise DemoError(
                f"cannot use {redact_known_dsn(dsn)}: "
                f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            ) from exc

        def drop_demo_table() -> None:
            asyncio.run(execute(dsn, DROP_SQL))

        res.cleanups.append(drop_demo_table)
        return Database(app_url, dsn, database, redact_known_dsn(dsn))
    from poolwatch.embedded import EmbeddedPostgresUnavailable, start_local_postgres

    try:
        res.local = start_local_postgres()
    except EmbeddedPostgresUnavailable as exc:
        raise DemoError(f"{exc} (or pass --dsn to use your own server)") from exc
    with contextlib.suppress(OSError, ValueError, IndexError):
        res.postmaster_pid = int((res.local.pgdata / "postmaster.pid").read_text().split()[0])
    asyncio.run(execute(res.local.dsn(), *SETUP_SQL))
    app_dsn = res.local.dsn(database="poolwatch_demo", user="poolwatch_demo_app")
    return Database(
        app_url=urls.sqlalchemy_url(app_dsn, "asyncpg"),
        exporter_dsn=res.local.dsn(database="postgres", user="poolwatch_exporter"),
        name="poolwatch_demo",
        shown=f"embedded, socket {res.local.socket_dir} (data {res.local.pgdata})",
    )
