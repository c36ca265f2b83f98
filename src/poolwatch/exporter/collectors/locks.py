"""Collector ``locks``: sessions waiting for locks, how long, and who blocks whom.

``pg_blocking_pids`` is only called for sessions that wait on a heavyweight lock (the only
ones it can return anything for), and ``pg_locks`` is only read when such a session exists,
so an ordinary scrape touches neither. Lock wait time comes from ``pg_locks.waitstart``
where the server has it (PostgreSQL 14+), else from the waiting statement's start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import Metric

from ...metric_names import (
    PG_BLOCKED_SESSIONS,
    PG_BLOCKING_SESSIONS,
    PG_LOCK_WAIT_MAX_SECONDS,
    PG_LOCK_WAITING_SESSIONS,
)
from ..database import Features
from .base import LabelFolder, add_max, add_sum, family, rows

NAME = "locks"

_WAITSTART = """
     LEFT JOIN (SELECT pid, min(waitstart) AS waitstart FROM pg_locks
                 WHERE NOT granted AND (SELECT count(*) FROM cli WHERE blockers IS NOT NULL) > 0
                 GROUP BY pid) l USING (pid)"""

SQL = """
  (SELECT json_agg(json_build_array(datname, n, max_wait))
     FROM (SELECT datname, count(*) AS n,
                  max(greatest(0, {wait_age})) AS max_wait
             FROM cli{waitstart_join}
            WHERE wait_event_type = 'Lock' GROUP BY 1) s) AS lock_waits,
  (SELECT json_agg(json_build_array(datname, n))
     FROM (SELECT datname, count(*) AS n FROM cli
            WHERE cardinality(blockers) > 0 GROUP BY 1) s) AS blocked,
  (SELECT json_agg(json_build_array(datname, n))
     FROM (SELECT a.datname, count(*) AS n
             FROM (SELECT DISTINCT unnest(blockers) AS pid FROM cli) b
             LEFT JOIN act a USING (pid) GROUP BY 1) s) AS blocking"""


def columns(features: Features) -> str:
    """This collector's part of the select list (uses pg_locks.waitstart if it exists)."""
    if features.has_waitstart:
        wait_age = "extract(epoch FROM now() - coalesce(l.waitstart, cli.state_change))"
        return SQL.format(wait_age=wait_age, waitstart_join=_WAITSTART)
    return SQL.format(wait_age="extract(epoch FROM now() - state_change)", waitstart_join="")


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Metric]:
    """pg_lock_waiting_sessions, pg_lock_wait_max_seconds, pg_blocked/blocking_sessions."""
    waiting: dict[tuple[str, ...], float] = {}
    longest: dict[tuple[str, ...], float] = {}
    for datname, n, max_wait in rows(row, "lock_waits"):
        key = (fold("datname", datname),)
        add_sum(waiting, key, n)
        add_max(longest, key, max_wait)
    yield family(PG_LOCK_WAITING_SESSIONS, waiting)
    yield family(PG_LOCK_WAIT_MAX_SECONDS, longest)
    for spec, column in ((PG_BLOCKED_SESSIONS, "blocked"), (PG_BLOCKING_SESSIONS, "blocking")):
        counts: dict[tuple[str, ...], float] = {}
        for datname, n in rows(row, column):
            add_sum(counts, (fold("datname", datname),), n)
        yield family(spec, counts)
