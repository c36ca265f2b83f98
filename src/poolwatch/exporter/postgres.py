"""The PostgreSQL target: its source (the one statement over the one connection, with the
degraded fallback) and its collectors.

Degraded mode. The statement names databases and roles by joining ``pg_database`` and
``pg_roles`` (``pg_authid``). While someone holds either ACCESS EXCLUSIVE (``LOCK TABLE``,
``VACUUM FULL``), the statement fails with ``lock_not_available`` (SQLSTATE 55P03) after
the session's ``lock_timeout``, although the server is up and answering. The source then
runs the same statement without those joins (oids instead of names) and names the groups
from the last complete snapshot: cached names, rather than oids as labels, keep every
series, alert and dashboard panel continuous through the lock (no new session can start
while either catalog is locked, so the oids are known ones). The snapshot is marked
``degraded`` (``poolwatch_exporter_degraded 1``) and ``pg_up`` stays 1. The degraded
statement also reports whether an ACCESS EXCLUSIVE lock on either catalog is still held or
queued (``pg_locks``, no catalog read), so scrapes during the lock do not each wait
``lock_timeout`` again; the first scrape after it is gone is complete. A lock on some other
catalog the degraded statement needs still fails the scrape (``pg_up 0``, the reason logged).
"""

from __future__ import annotations

import logging
from typing import Any

from ..metric_names import PG_UP
from .collectors import REGISTRY, make_sql_builder
from .collectors.snapshot import Names, PgSnapshot
from .database import Database, DatabaseUnavailable
from .target import Target

log = logging.getLogger("poolwatch.exporter.postgres")

LOCK_NOT_AVAILABLE = "55P03"
# Fixed oids of the two shared catalogs the statement joins (pg_authid under pg_roles).
PG_AUTHID_OID = 1260
PG_DATABASE_OID = 1262

CATALOGS_LOCKED_SQL = f""",
  EXISTS (SELECT 1 FROM pg_locks
           WHERE locktype = 'relation' AND relation IN ({PG_AUTHID_OID}, {PG_DATABASE_OID})
             AND mode = 'AccessExclusiveLock') AS catalogs_locked"""


class PostgresSource:
    """Takes :class:`PgSnapshot` objects over the exporter's one connection."""

    def __init__(self, database: Database, *, top_n: int, stale_threshold: float) -> None:
        self.database = database
        self.top_n = top_n
        self.sql_for = make_sql_builder(stale_threshold)
        ids_only = make_sql_builder(stale_threshold, names=False)
        self.degraded_sql_for = lambda features: ids_only(features) + CATALOGS_LOCKED_SQL
        self._last_complete: PgSnapshot | None = None
        self._locked = False  # a catalog was locked at the last scrape: skip the full one
        self._degraded = False
        self._warned_visibility = False

    @property
    def connections_opened(self) -> int:
        """Connections the database layer opened."""
        return self.database.connections_opened

    async def take(self) -> PgSnapshot:
        """The complete snapshot, or a degraded one while a catalog it joins is locked."""
        if not self._locked:
            complete = await self._complete()
            if complete is not None:
                return complete
        row, _ = await self.database.fetchrow(self.degraded_sql_for)
        locked = bool(row["catalogs_locked"])
        if self._locked and not locked:
            complete = await self._complete()
            if complete is not None:
                return complete
        self._locked = locked
        if not self._degraded:
            self._degraded = True
            log.warning(
                "pg_database or pg_authid is locked: scraping without them (names from the "
                "last complete scrape, poolwatch_exporter_degraded 1) until the lock is gone"
            )
        return self._degraded_snapshot(row)

    async def _complete(self) -> PgSnapshot | None:
        """The full statement's snapshot, or None when a catalog lock stopped it."""
        try:
            row, _ = await self.database.fetchrow(self.sql_for)
        except DatabaseUnavailable as exc:
            if exc.sqlstate == LOCK_NOT_AVAILABLE:
                return None
            raise
        snapshot = PgSnapshot.from_row(row, self.top_n)
        self._last_complete = snapshot
        self._locked = False
        if self._degraded:
            self._degraded = False
            log.info("the catalogs are readable again: scrapes are complete")
        self._check_visibility(bool(row["sees_all_sessions"]))
        return snapshot

    def _degraded_snapshot(self, row: Any) -> PgSnapshot:
        last = self._last_complete
        fields = dict(row.items())
        del fields["catalogs_locked"]
        names = Names()
        if last is not None:
            names = Names.from_sessions(last.sessions_raw)
            fields["sees_all_sessions"] = last.columns.get("sees_all_sessions")
        return PgSnapshot.from_row(fields, self.top_n, degraded=True, names=names)

    def _check_visibility(self, sees_all: bool) -> None:
        """Warn once (until it changes) when the role cannot see other roles' sessions."""
        if not sees_all and not self._warned_visibility:
            self._warned_visibility = True
            log.warning(
                "the exporter's role cannot see other roles' sessions: their state is reported "
                "as 'unknown' (see poolwatch_exporter_hidden_sessions); "
                "GRANT pg_monitor TO the exporter's role",
            )
        elif sees_all:
            self._warned_visibility = False

    async def check(self) -> None:
        """Connect now (ignoring backoff) and run the statement once: the start-up check.

        A locked catalog does not fail it: the server answered.
        """
        try:
            await self.database.check(self.sql_for)
        except DatabaseUnavailable as exc:
            if exc.sqlstate != LOCK_NOT_AVAILABLE:
                raise
            await self.take()

    async def close(self) -> None:
        """Close the connection."""
        await self.database.close()


def postgres_target(
    database: Database, *, top_n: int, stale_threshold: float
) -> Target[PgSnapshot]:
    """The PostgreSQL target over ``database`` with every registered collector."""
    source = PostgresSource(database, top_n=top_n, stale_threshold=stale_threshold)
    return Target(source=source, collectors=tuple(REGISTRY.values()), up=PG_UP)


__all__ = ["LOCK_NOT_AVAILABLE", "PostgresSource", "postgres_target"]
