"""Collector ``locks``: sessions waiting for locks, how long, and who blocks whom.

``pg_blocking_pids`` is only called for sessions that wait on a heavyweight lock (the only
ones it can return anything for), and ``pg_locks`` is only read when such a session exists,
so an ordinary scrape touches neither. Lock wait time comes from ``pg_locks.waitstart``
where the server has it (PostgreSQL 14+), else from the waiting statement's start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ...metric_names import (
    PG_BLOCKED_SESSIONS,
    PG_BLOCKING_SESSIONS,
    PG_LOCK_WAIT_MAX_SECONDS,
    PG_LOCK_WAITING_SESSIONS,
)
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, add_max, add_sum, family, rows

NAME = "locks"

# pg_locks is read only when some session waits for a lock (a one-time filter).
_WAITSTART = """
            LEFT JOIN (SELECT pid, min(waitstart) AS waitstart FROM pg_locks
                        WHERE NOT granted
                          AND EXISTS (SELECT 1 FROM act WHERE wait_event_type = 'Lock')
                        GROUP BY pid) l USING (pid)"""

# All four lock metrics come from the one ``act`` snapshot, so they agree with each other.
SQL = """
  (SELECT json_agg(json_build_array(d.datname, w.n, w.blocked, w.max_wait))
     FROM (SELECT a.datid, count(*) AS n,
                  count(*) FILTER (WHERE cardinality(a.blockers) > 0) AS blocked,
                  max(extract(epoch FROM now() - {wait_start})) AS max_wait
             FROM act a{waitstart_join}
            WHERE a.wait_event_type = 'Lock' AND a.backend_type = 'client backend'
            GROUP BY a.datid) w
     LEFT JOIN pg_database d ON d.oid = w.datid) AS lock_wait,
  (SELECT json_agg(json_build_array(d.datname, b.n))
     FROM (SELECT a.datid, count(*) AS n
             FROM (SELECT DISTINCT unnest(blockers) AS pid FROM act
                    WHERE backend_type = 'client backend') x
             LEFT JOIN act a USING (pid)
            -- heads of wait chains only: a waiter queued on a row lock also shows up as a
            -- "blocker" of the waiters behind it, but it is not what holds them up
            WHERE a.wait_event_type IS DISTINCT FROM 'Lock'
            GROUP BY a.datid) b
     LEFT JOIN pg_database d ON d.oid = b.datid) AS blocking"""


def columns(features: Features) -> str:
    """This collector's part of the select list (uses pg_locks.waitstart if it exists)."""
    if features.has_waitstart:
        return SQL.format(
            wait_start="coalesce(l.waitstart, a.state_change)", waitstart_join=_WAITSTART
        )
    return SQL.format(wait_start="a.state_change", waitstart_join="")


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Family]:
    """pg_lock_waiting_sessions, pg_lock_wait_max_seconds, pg_blocked/blocking_sessions."""
    waiting: dict[tuple[str, ...], float] = {}
    blocked: dict[tuple[str, ...], float] = {}
    longest: dict[tuple[str, ...], float] = {}
    for datname, n, n_blocked, max_wait in rows(row, "lock_wait"):
        key = (fold("datname", datname),)
        add_sum(waiting, key, n)
        if n_blocked:
            add_sum(blocked, key, n_blocked)
        add_max(longest, key, max(0.0, float(max_wait)))
    blocking: dict[tuple[str, ...], float] = {}
    for datname, n in rows(row, "blocking"):
        add_sum(blocking, (fold("datname", datname),), n)
    yield family(PG_LOCK_WAITING_SESSIONS, waiting)
    yield family(PG_LOCK_WAIT_MAX_SECONDS, longest)
    yield family(PG_BLOCKED_SESSIONS, blocked)
    yield family(PG_BLOCKING_SESSIONS, blocking)
