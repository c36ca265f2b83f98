"""The PgBouncer source: at most one admin-console connection, reused across scrapes.

Every scrape pipelines the ``SHOW`` commands over that connection (one round trip, bounded
by ``--query.timeout``; SHOW CONFIG and SHOW VERSION only every ``SETTLED_EVERY`` seconds).
A connection found broken (PgBouncer restarted) is replaced at once and the scrape retried
one time; after that, and after a timeout (a hung or stopped PgBouncer), failures back off
(:mod:`poolwatch.exporter.backoff`) and the scrape reports ``pgbouncer_up 0`` at once.
Failures are :class:`DatabaseUnavailable` (one redacted line), which the
:class:`~poolwatch.exporter.scraper.Scraper` turns into ``up 0``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from poolwatch.pgbouncer.console import AdminConsole, Rows
from poolwatch.pgbouncer.target import ConsoleError

from .. import APPLICATION_NAME
from ..backoff import Backoff
from ..database import DatabaseUnavailable
from ..dsn import Dsn
from .snapshot import COMMANDS, PgBouncerSnapshot

log = logging.getLogger("poolwatch.exporter.pgbouncer")

#: re-read SHOW CONFIG / SHOW VERSION at most this often (seconds)
SETTLED_EVERY = 10.0
SETTLED = ("CONFIG", "VERSION")
VOLATILE = tuple(c for c in COMMANDS if c not in SETTLED)


class PgBouncerSource:
    """Takes :class:`PgBouncerSnapshot` objects over one admin-console connection."""

    def __init__(self, dsn: Dsn, *, timeout: float, top_n: int) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self.top_n = top_n
        self.connections_opened = 0
        self._console: AdminConsole | None = None
        self._backoff = Backoff()
        self._lock = asyncio.Lock()
        self._settled: dict[str, Rows | ConsoleError] = {}
        self._settled_at = -SETTLED_EVERY

    @property
    def connected(self) -> bool:
        """True while the admin-console connection is open."""
        return self._console is not None and not self._console.closed

    async def take(self) -> PgBouncerSnapshot:
        """One snapshot: the SHOW commands, pipelined over the one connection (SHOW CONFIG
        and SHOW VERSION at most every ``SETTLED_EVERY`` seconds, and after a reconnect:
        they change only on RELOAD or an upgrade, and CONFIG is a quarter of the work)."""
        async with self._lock:
            settled = time.monotonic() - self._settled_at < SETTLED_EVERY and self.connected
            commands = VOLATILE if settled else COMMANDS
            results = dict(zip(commands, await self._show(commands), strict=True))
            if not settled:
                self._settled = {name: results[name] for name in SETTLED}
                self._settled_at = time.monotonic()
        return PgBouncerSnapshot.from_results({**self._settled, **results}, self.top_n)

    async def _show(self, commands: tuple[str, ...]) -> list[Rows | ConsoleError]:
        for attempt in (1, 2):
            fresh = not self.connected
            if fresh:
                await self._connect()
            assert self._console is not None
            try:
                return await self._console.show_many(commands)
            except ConsoleError as exc:
                await self._drop()
                if exc.timed_out or fresh or attempt == 2:
                    raise self._fail(str(exc)) from None
                log.info("admin console connection lost; reconnecting", extra={"fields": {}})
        raise AssertionError("unreachable")

    async def _connect(self) -> None:
        await self._drop()
        wait = self._backoff.remaining()
        if wait > 0:
            raise DatabaseUnavailable(f"{self._backoff.last_error} (next reconnect in {wait:.1f}s)")
        try:
            console = await AdminConsole.connect(
                self.dsn.url, timeout=self.timeout, application_name=APPLICATION_NAME
            )
        except ConsoleError as exc:
            raise self._fail(str(exc)) from None
        self._console = console
        self._backoff.succeeded()
        self.connections_opened += 1
        log.info(
            "connected to PgBouncer's admin console",
            extra={"fields": {"target": self.dsn.redacted, "auth": console.auth_method}},
        )

    def _fail(self, reason: str) -> DatabaseUnavailable:
        self._backoff.failed(reason)
        return DatabaseUnavailable(reason)

    async def _drop(self) -> None:
        self._settled_at = -SETTLED_EVERY  # a new connection reads them again
        console, self._console = self._console, None
        if console is not None:
            await console.close()

    async def check(self) -> None:
        """Connect now (ignoring backoff) and take a snapshot: the start-up check."""
        self._backoff.allow_now()
        await self.take()

    async def close(self) -> None:
        """Close the connection (Terminate, then the socket)."""
        async with self._lock:
            await self._drop()


__all__ = ["PgBouncerSource"]
