"""Collector ``locks``: sessions waiting for locks, how long, and who blocks whom.

``pg_blocking_pids`` is only called for sessions that wait on a heavyweight lock (the only
ones it can return anything for), and ``pg_locks`` is only read when such a session exists,
so an ordinary scrape touches neither. Lock wait time comes from ``pg_locks.waitstart``
where the server has it (PostgreSQL 14+), else from the waiting statement's start.

The per-application_name count needs no SQL of its own: the ``sessions`` pass groups active
sessions by wait event type, with their names already folded to the top N.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import (
    PG_BLOCKED_SESSIONS,
    PG_BLOCKING_SESSIONS,
    PG_LOCK_WAIT_MAX_SECONDS,
    PG_LOCK_WAITING_SESSIONS,
    PG_LOCK_WAITING_SESSIONS_BY_APPLICATION,
)
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, add_max, add_sum, family
from .snapshot import PgSnapshot

LOCK = "Lock"  # the wait_event_type of a heavyweight lock wait

# pg_locks is read only when some session waits for a lock (a one-time filter).
_WAITSTART = """
            LEFT JOIN (SELECT pid, min(waitstart) AS waitstart FROM pg_locks
                        WHERE NOT granted
                          AND EXISTS (SELECT 1 FROM act WHERE wait_event_type = 'Lock')
                        GROUP BY pid) l USING (pid)"""

# All four lock metrics come from the one ``act`` snapshot, so they agree with each other.
SQL = """
  (SELECT json_agg(json_build_array({datname}, w.n, w.blocked, w.max_wait, w.datid))
     FROM (SELECT a.datid, count(*) AS n,
                  count(*) FILTER (WHERE cardinality(a.blockers) > 0) AS blocked,
                  max(extract(epoch FROM now() - {wait_start})) AS max_wait
             FROM act a{waitstart_join}
            WHERE a.wait_event_type = 'Lock' AND a.backend_type = 'client backend'
            GROUP BY a.datid) w{join_w}) AS lock_wait,
  (SELECT json_agg(json_build_array({datname}, b.n, b.datid))
     FROM (SELECT a.datid, count(*) AS n
             FROM (SELECT DISTINCT unnest(blockers) AS pid FROM act
                    WHERE backend_type = 'client backend') x
             LEFT JOIN act a USING (pid)
            -- heads of wait chains only: a waiter queued on a row lock also shows up as a
            -- "blocker" of the waiters behind it, but it is not what holds them up
            WHERE a.wait_event_type IS DISTINCT FROM 'Lock'
            GROUP BY a.datid) b{join_b}) AS blocking"""


class LocksCollector:
    """Lock waiters per database, the longest wait, and blocked / blocking sessions."""

    name = "locks"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list (pg_locks.waitstart if it exists;
        database names only with ``names``, else the oids alone)."""
        named = {
            "datname": "d.datname" if names else "NULL",
            "join_w": "\n     LEFT JOIN pg_database d ON d.oid = w.datid" if names else "",
            "join_b": "\n     LEFT JOIN pg_database d ON d.oid = b.datid" if names else "",
        }
        if features.has_waitstart:
            return SQL.format(
                wait_start="coalesce(l.waitstart, a.state_change)",
                waitstart_join=_WAITSTART,
                **named,
            )
        return SQL.format(wait_start="a.state_change", waitstart_join="", **named)

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """pg_lock_waiting_sessions (also by application_name), pg_lock_wait_max_seconds,
        pg_blocked/blocking_sessions."""
        waiting: dict[tuple[str, ...], float] = {}
        blocked: dict[tuple[str, ...], float] = {}
        longest: dict[tuple[str, ...], float] = {}
        for datname, n, n_blocked, max_wait, datid in snapshot.rows("lock_wait"):
            key = (fold("datname", snapshot.database(datname, datid)),)
            add_sum(waiting, key, n)
            if n_blocked:
                add_sum(blocked, key, n_blocked)
            add_max(longest, key, max(0.0, float(max_wait)))
        blocking: dict[tuple[str, ...], float] = {}
        for datname, n, datid in snapshot.rows("blocking"):
            add_sum(blocking, (fold("datname", snapshot.database(datname, datid)),), n)
        yield family(PG_LOCK_WAITING_SESSIONS, waiting)
        by_app: dict[tuple[str, ...], float] = {}
        for g in snapshot.client_groups:
            if g.wait_event_type == LOCK:
                add_sum(by_app, (g.datname, g.application_name), g.sessions)
        yield family(PG_LOCK_WAITING_SESSIONS_BY_APPLICATION, by_app)
        yield family(PG_LOCK_WAIT_MAX_SECONDS, longest)
        yield family(PG_BLOCKED_SESSIONS, blocked)
        yield family(PG_BLOCKING_SESSIONS, blocking)
