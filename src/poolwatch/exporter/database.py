"""The exporter's single, reused, read-only connection to PostgreSQL.

Rules (postgres_exporter incidents #1228, #921, #1258 taught them): at most one
connection, ``application_name=poolwatch-exporter``, server-side ``statement_timeout``
and ``lock_timeout``, ``default_transaction_read_only=on``, autocommit only (never idle in
transaction), reconnect with exponential backoff after a failure (:mod:`.backoff`, shared
with the PgBouncer source).

At most one connection attempt is in flight. A scrape waits for it at most the connect
timeout (``--query.timeout``) and then reports the server down, but the attempt itself is
not abandoned: a backend that is blocked in start-up (say, behind an ACCESS EXCLUSIVE lock
on ``pg_authid``) does not notice that its client closed the socket and keeps its slot
until the lock goes or the server's ``authentication_timeout`` ends it. Giving up and
dialling again would stack one such backend per retry, so later scrapes wait on the same
attempt; it gets the server's ``authentication_timeout`` (+2 s) before the exporter closes
it, by which time the server has ended the backend itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from . import APPLICATION_NAME
from .backoff import Backoff
from .dsn import Dsn, scrub

log = logging.getLogger("poolwatch.exporter.database")


FEATURES_SQL = """
SELECT current_setting('server_version_num')::int AS version_num,
       EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = 'pg_catalog.pg_stat_activity'::regclass
                 AND attname = 'backend_type' AND NOT attisdropped) AS has_backend_type,
       EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = 'pg_catalog.pg_locks'::regclass
                 AND attname = 'waitstart' AND NOT attisdropped) AS has_waitstart,
       EXISTS (SELECT 1 FROM pg_settings WHERE name = 'reserved_connections')
           AS has_reserved_connections,
       EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = 'pg_catalog.pg_stat_database'::regclass
                 AND attname = 'sessions_fatal' AND NOT attisdropped) AS has_session_stats,
       (SELECT setting::float8 FROM pg_settings WHERE name = 'authentication_timeout')
           AS authentication_timeout
"""
# PostgreSQL's default authentication_timeout, until the server has told us its own.
DEFAULT_AUTHENTICATION_TIMEOUT = 60.0


@dataclass(frozen=True)
class Features:
    """What this server's catalogs offer, detected by looking at them (not the version)."""

    version_num: int
    has_backend_type: bool
    has_waitstart: bool
    has_reserved_connections: bool
    has_session_stats: bool = False  # pg_stat_database's session counters (14+)
    authentication_timeout: float = DEFAULT_AUTHENTICATION_TIMEOUT


class DatabaseUnavailable(Exception):
    """The server could not be used right now; ``str()`` is one redacted line.

    ``sqlstate`` is the server's error code when the server answered with an error.
    """

    def __init__(
        self, message: str, *, permanent: bool = False, sqlstate: str | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.sqlstate = sqlstate


_PERMANENT = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InsufficientPrivilegeError,
)


def describe_error(exc: BaseException, dsn: Dsn) -> DatabaseUnavailable:
    """One redacted line for ``exc``; authentication/permission problems are ``permanent``."""
    sqlstate: str | None = None
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        text = "timed out"
    elif isinstance(exc, asyncpg.PostgresError):
        text = f"{exc.__class__.__name__}: {exc}"
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate:
            text += f" (SQLSTATE {sqlstate})"
    elif isinstance(exc, OSError):
        text = f"cannot reach the server: {exc.strerror or exc}"
    else:
        text = f"{exc.__class__.__name__}: {exc}"
    text = scrub(" ".join(text.split()), dsn.secrets)
    return DatabaseUnavailable(text, permanent=isinstance(exc, _PERMANENT), sqlstate=sqlstate)


class Database:
    """Owns the one connection; :meth:`fetchrow` (re)connects as needed, with backoff."""

    def __init__(self, dsn: Dsn, *, query_timeout: float, lock_timeout: float) -> None:
        self.dsn = dsn
        self.query_timeout = query_timeout
        self.lock_timeout = lock_timeout
        self.features: Features | None = None
        self.connections_opened = 0
        self._conn: Any = None
        self._backoff = Backoff()
        self._lock = asyncio.Lock()
        self._attempt: asyncio.Task[None] | None = None

    @property
    def server_settings(self) -> dict[str, str]:
        """Session settings sent in the startup packet (no extra round trip)."""
        return {
            "application_name": APPLICATION_NAME,
            "statement_timeout": str(max(1, int(self.query_timeout * 1000))),
            "lock_timeout": str(max(1, int(self.lock_timeout * 1000))),
            "idle_in_transaction_session_timeout": str(max(1, int(self.query_timeout * 1000))),
            "default_transaction_read_only": "on",
            "jit": "off",
        }

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The server process serving the exporter, while connected."""
        return int(self._conn.get_server_pid()) if self.connected else None

    @property
    def attempt_limit(self) -> float:
        """How long one connection attempt may take before the exporter closes it."""
        auth = self.features.authentication_timeout if self.features else None
        return max(self.query_timeout, (auth or DEFAULT_AUTHENTICATION_TIMEOUT) + 2.0)

    async def _connect(self) -> None:
        """Wait (at most the connect timeout) for the one connection attempt in flight,
        starting it if there is none and the backoff allows."""
        attempt = self._attempt
        if attempt is None:
            wait = self._backoff.remaining()
            if wait > 0:
                raise DatabaseUnavailable(
                    f"{self._backoff.last_error} (next reconnect in {wait:.1f}s)"
                )
            attempt = self._attempt = asyncio.ensure_future(self._open())
            attempt.add_done_callback(self._attempt_done)
        try:
            await asyncio.wait_for(asyncio.shield(attempt), self.query_timeout)
        except asyncio.TimeoutError:
            raise DatabaseUnavailable(
                f"connecting: no answer from the server within {self.query_timeout:g}s "
                "(still waiting on the same attempt; a lock on a system catalog or a "
                "stalled server does this)"
            ) from None

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        if self._attempt is task:
            self._attempt = None
        if not task.cancelled():
            task.exception()  # retrieved: a waiter that gave up must not leave it unread

    async def _open(self) -> None:
        try:
            conn = await asyncpg.connect(
                self.dsn.url,
                timeout=self.attempt_limit,
                server_settings=self.server_settings,
                statement_cache_size=8,
                command_timeout=None,
            )
        except Exception as exc:
            raise self._fail(describe_error(exc, self.dsn)) from None
        try:
            row = await asyncio.wait_for(conn.fetchrow(FEATURES_SQL), self.query_timeout + 1)
        except Exception as exc:
            conn.terminate()
            raise self._fail(describe_error(exc, self.dsn)) from None
        assert row is not None
        self.features = Features(**dict(row))
        self._conn = conn
        self._backoff.succeeded()
        self.connections_opened += 1
        log.info(
            "connected to PostgreSQL",
            extra={
                "fields": {
                    "target": self.dsn.redacted,
                    "server_version_num": self.features.version_num,
                    "backend_pid": conn.get_server_pid(),
                }
            },
        )

    def _fail(self, error: DatabaseUnavailable) -> DatabaseUnavailable:
        """Remember ``error`` and push the next connection attempt out (backoff)."""
        self._backoff.failed(str(error))
        return error

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
        self._conn = None

    async def fetchrow(self, sql_for: Callable[[Features], str]) -> tuple[Any, Features]:
        """Run the statement ``sql_for(features)`` once; reconnect first when needed.

        A connection found broken (terminated backend, server restart) is replaced at once
        and the query retried one time; after that, failures back off. Raises
        :class:`DatabaseUnavailable` with a redacted one-line reason.
        """
        async with self._lock:
            for attempt in (1, 2):
                fresh = False
                if not self.connected:
                    self._drop()
                    await self._connect()
                    fresh = True
                assert self.features is not None
                try:
                    # asyncpg's own timeout (a timer, not an extra task as wait_for makes)
                    row = await self._conn.fetchrow(
                        sql_for(self.features), timeout=self.query_timeout + 0.5
                    )
                    return row, self.features
                except (asyncio.TimeoutError, TimeoutError) as exc:
                    # The server did not even cancel the statement: the session is suspect.
                    self._drop()
                    raise self._fail(describe_error(exc, self.dsn)) from None
                except asyncpg.QueryCanceledError as exc:
                    raise describe_error(exc, self.dsn) from None  # statement_timeout
                except (
                    asyncpg.PostgresConnectionError,
                    asyncpg.InterfaceError,
                    # the protocol is stuck mid-operation ("another operation is in progress"),
                    # seen after a terminated backend: the connection is unusable, replace it
                    asyncpg.InternalClientError,
                    OSError,
                ) as exc:
                    self._drop()
                    if fresh or attempt == 2:
                        raise self._fail(describe_error(exc, self.dsn)) from None
                    log.info("connection lost; reconnecting", extra={"fields": {"err": exc}})
                except asyncpg.PostgresError as exc:
                    if self._conn is not None and self._conn.is_closed():
                        self._drop()
                        if not fresh and attempt == 1:
                            log.info("connection closed; reconnecting")
                            continue
                    raise describe_error(exc, self.dsn) from None
            raise AssertionError("unreachable")

    async def check(self, sql_for: Callable[[Features], str]) -> None:
        """Connect (ignoring backoff) and run the query once: the start-up check."""
        self._backoff.allow_now()
        await self.fetchrow(sql_for)

    async def close(self) -> None:
        """Close the connection politely (terminate if the server does not answer)."""
        attempt = self._attempt
        if attempt is not None:  # cancelling asyncpg's connect closes its socket
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                try:
                    await asyncio.wait_for(self._conn.close(), 2)
                except Exception:
                    self._conn.terminate()
            self._conn = None
