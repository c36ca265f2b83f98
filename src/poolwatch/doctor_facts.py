"""What ``poolwatch doctor`` (and ``size --dsn``) reads: the server's limits and timeouts, and
the application's pool settings from flags or an importable engine.

Every read is one short read-only session with asyncpg's statement cache off, so that
through a PgBouncer in transaction mode nothing stays prepared on its server connections.
Example::

    facts = asyncio.run(read_server_facts("postgresql://app@db/shop"))
    print(facts.max_connections, facts.usable)
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolwatch import urls
from poolwatch.redaction import dsn_secrets, scrub

SERVER_FACTS_SQL = """
SELECT current_setting('server_version') AS server_version,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved_connections,
       (SELECT setting::bigint FROM pg_settings
         WHERE name = 'idle_in_transaction_session_timeout') AS idle_in_transaction_timeout_ms,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout')
         AS statement_timeout_ms,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int
         AS client_connections,
       current_database() AS database,
       current_user AS role,
       (pg_has_role(current_user, 'pg_read_all_stats', 'member')
         OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AS sees_all_sessions
"""

IDLE_IN_TRANSACTION_SQL = """
SELECT pid, coalesce(usename, '') AS usename, coalesce(datname, '') AS datname,
       coalesce(application_name, '') AS application_name, state,
       extract(epoch FROM now() - state_change)::float8 AS idle_seconds,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds
FROM pg_stat_activity
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND pid <> pg_backend_pid()
  AND datname = current_database()
ORDER BY state_change
"""


class DoctorError(RuntimeError):
    """An expected failure (bad input, server unreachable): one readable line."""


# --- DSNs ------------------------------------------------------------------------------------


def libpq_dsn(dsn: str) -> str:
    """``dsn`` as a plain ``postgresql://`` URL; a bad one is a :class:`DoctorError`."""
    try:
        return urls.libpq_dsn(dsn)
    except urls.DsnError as exc:
        raise DoctorError(str(exc)) from None


# --- what the server says --------------------------------------------------------------------


@dataclass
class IdleInTransaction:
    """One session idle in transaction right now."""

    pid: int
    usename: str
    datname: str
    application_name: str
    state: str
    idle_seconds: float
    transaction_seconds: float


@dataclass
class ServerFacts:
    """Limits, timeouts and current sessions, as one new session of the given role sees them."""

    server_version: str
    max_connections: int
    superuser_reserved: int
    reserved_connections: int
    idle_in_transaction_timeout_ms: int
    statement_timeout_ms: int
    client_connections: int
    database: str
    role: str
    sees_all_sessions: bool
    idle_in_transaction: list[IdleInTransaction] = field(default_factory=list)

    @property
    def reserved(self) -> int:
        """Slots ordinary roles cannot use (superuser + ``reserved_connections`` on 16+)."""
        return self.superuser_reserved + self.reserved_connections

    @property
    def usable(self) -> int:
        """Connections an ordinary application role can open in total."""
        return self.max_connections - self.reserved


Fetch = Callable[[str], Awaitable[list[dict[str, Any]]]]


async def collect_facts(fetch: Fetch) -> ServerFacts:
    """Run the doctor's two read-only queries through ``fetch`` (SQL -> rows as dicts)."""
    rows = await fetch(SERVER_FACTS_SQL)
    facts = ServerFacts(**{k: v for k, v in rows[0].items()})
    facts.sees_all_sessions = bool(facts.sees_all_sessions)
    facts.idle_in_transaction = [
        IdleInTransaction(**r) for r in await fetch(IDLE_IN_TRANSACTION_SQL)
    ]
    return facts


async def read_server_facts(dsn: str, timeout: float = 10.0) -> ServerFacts:
    """Connect to ``dsn`` with asyncpg (read-only, one session) and collect :class:`ServerFacts`.

    asyncpg's statement cache is off, so every statement is unnamed: nothing is left behind
    on a PgBouncer's server connections for the next client to collide with.
    """
    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover - depends on installed extras
        raise DoctorError(
            "reading the server needs asyncpg: pip install 'poolwatch[exporter]'"
        ) from exc
    try:
        url, timeout = urls.connect_timeout(libpq_dsn(dsn), timeout)
    except urls.DsnError as exc:
        raise DoctorError(str(exc)) from None
    try:
        conn = await asyncpg.connect(
            url,
            timeout=timeout,
            statement_cache_size=0,
            server_settings={"application_name": "poolwatch-doctor"},
        )
    except (asyncio.TimeoutError, TimeoutError):
        message = (
            f"cannot connect to {dsn}: no answer within {timeout:g} s (is it a PostgreSQL or "
            "PgBouncer port? check host and port; ?connect_timeout=N waits longer)"
        )
        raise DoctorError(scrub(message, dsn_secrets(dsn))) from None
    except Exception as exc:
        message = f"cannot connect to {dsn}: {_describe(exc)}"
        raise DoctorError(scrub(message, dsn_secrets(dsn))) from exc
    try:

        async def fetch(sql: str) -> list[dict[str, Any]]:
            return [dict(r) for r in await conn.fetch(sql, timeout=timeout)]

        return await collect_facts(fetch)
    except (asyncio.TimeoutError, TimeoutError):
        message = f"query failed on {dsn}: no answer within {timeout:g} s (the server is busy?)"
        raise DoctorError(scrub(message, dsn_secrets(dsn))) from None
    except Exception as exc:
        message = f"query failed on {dsn}: {_describe(exc)}"
        raise DoctorError(scrub(message, dsn_secrets(dsn))) from exc
    finally:
        await conn.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- what the application uses ---------------------------------------------------------------


@dataclass
class PoolSettings:
    """The application's pool settings; the defaults are SQLAlchemy's own."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: float | None = None
    pool_pre_ping: bool = False
    workers: int = 1
    driver: str = "asyncpg"
    prepared_statements: bool = True
    source: str = "flags"
    poolclass: str = "QueuePool"
    unique_statement_names: bool = False


def load_engine(spec: str) -> Any:
    """Import ``module:attr`` (the current directory is importable) and return the object."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise DoctorError(
            f"--engine must look like module:attribute (e.g. myapp.db:engine), got {spec!r}"
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise DoctorError(f"cannot import {module_name!r} for --engine: {_describe(exc)}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DoctorError(f"{module_name!r} has no attribute {attr!r} (from --engine {spec})")
        obj = getattr(obj, part)
    if not hasattr(obj, "pool") and not hasattr(obj, "sync_engine"):
        raise DoctorError(f"--engine {spec} is a {type(obj).__name__}, not a SQLAlchemy engine")
    dialect = getattr(getattr(obj, "dialect", None), "name", None)
    if dialect is not None and dialect != "postgresql":
        raise DoctorError(f"--engine {spec} is a {dialect} engine: the doctor checks PostgreSQL")
    return obj


def settings_from_engine(engine: Any, workers: int, spec: str) -> PoolSettings:
    """Read pool_size, max_overflow, pool_timeout, pool_recycle, pre-ping from ``engine``."""
    sync = getattr(engine, "sync_engine", engine)
    pool = sync.pool
    size_fn = getattr(pool, "size", None)
    recycle = getattr(pool, "_recycle", -1)
    return PoolSettings(
        pool_size=int(size_fn()) if callable(size_fn) else 0,
        max_overflow=max(int(getattr(pool, "_max_overflow", 0)), 0),
        pool_timeout=float(getattr(pool, "_timeout", 0.0)),
        pool_recycle=None if recycle is None or recycle < 0 else float(recycle),
        pool_pre_ping=bool(getattr(pool, "_pre_ping", False)),
        workers=workers,
        driver=str(sync.dialect.driver),
        prepared_statements=str(sync.dialect.driver) == "asyncpg",
        source=f"engine {spec}",
        poolclass=type(pool).__name__,
    )


class _ConnectSpy:
    """A ``do_connect`` listener: remembers the app's connect arguments, and makes the
    doctor's own connections send unnamed statements only, so that reading facts through
    PgBouncer neither trips over statements other clients left there nor leaves any."""

    def __init__(self) -> None:
        self.cparams: dict[str, Any] | None = None

    def __call__(self, dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if self.cparams is None:
            self.cparams = dict(cparams)
        if getattr(dialect, "driver", "") == "asyncpg":
            cparams["statement_cache_size"] = 0
            cparams["prepared_statement_cache_size"] = 0
            cparams.pop("prepared_statement_name_func", None)


def statement_settings(cparams: dict[str, Any]) -> tuple[bool, bool]:
    """(asyncpg statement cache on, unique prepared_statement_name_func) from connect args."""
    cache = cparams.get("statement_cache_size", 100)
    return int(cache or 0) > 0, cparams.get("prepared_statement_name_func") is not None


async def read_facts_via_engine(engine: Any) -> tuple[ServerFacts, dict[str, Any]]:
    """Collect facts through the application's own engine, so its connect_args count.

    Also returns the connect arguments the engine passes to its driver.
    """
    from sqlalchemy import event, text

    sync = getattr(engine, "sync_engine", engine)
    spy = _ConnectSpy()
    event.listen(sync, "do_connect", spy)
    try:
        if hasattr(engine, "sync_engine"):
            await engine.dispose()  # a pooled connection would not pass through the spy
            async with engine.connect() as conn:

                async def fetch(sql: str) -> list[dict[str, Any]]:
                    result = await conn.execute(text(sql))
                    return [dict(r) for r in result.mappings()]

                facts = await collect_facts(fetch)
                await conn.rollback()
            return facts, spy.cparams or {}

        def run_sync() -> ServerFacts:
            engine.dispose()
            with engine.connect() as conn:

                async def fetch(sql: str) -> list[dict[str, Any]]:
                    return [dict(r) for r in conn.execute(text(sql)).mappings()]

                facts = asyncio.run(collect_facts(fetch))
                conn.rollback()
                return facts

        return await asyncio.to_thread(run_sync), spy.cparams or {}
    finally:
        event.remove(sync, "do_connect", spy)


async def inspect_engine(engine: Any, dsn: str | None) -> tuple[ServerFacts, dict[str, Any]]:
    """Facts for the doctor when an engine was given; the engine is disposed afterwards.

    With ``dsn`` the server facts come from a new session on ``dsn``; otherwise from a
    connection of the engine itself. Also returns the engine's driver connect arguments.
    """
    try:
        via_engine, cparams = await read_facts_via_engine(engine)
    except DoctorError:
        raise
    except Exception as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise DoctorError(f"cannot connect with the engine ({url}): {_describe(exc)}") from exc
    finally:
        disposed = engine.dispose()
        if asyncio.iscoroutine(disposed):
            await disposed
    facts = await read_server_facts(dsn) if dsn else via_engine
    return facts, cparams
