"""Collector ``sessions``: client sessions by database/role/application/state, backends by
type, and whether the exporter's role can see other roles' sessions at all.

Without pg_monitor / pg_read_all_stats, PostgreSQL shows other roles' sessions with a NULL
``state``; they are counted as state ``unknown`` and in ``poolwatch_exporter_hidden_sessions``
rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from prometheus_client.core import Metric

from ...metric_names import (
    EXPORTER_HIDDEN_SESSIONS,
    EXPORTER_SEES_ALL_SESSIONS,
    PG_BACKENDS,
    PG_SESSIONS,
)
from ..database import Features
from .base import LabelFolder, add_sum, family, gauge, rows, text

NAME = "sessions"
GROUPS_KEY = "_groups"  # where collect_all keeps the parsed groups of one row
CLIENT_BACKEND = "client backend"
UNKNOWN_STATE = "unknown"

# One row per (database, role, application_name, state, backend_type) group of backends:
# the count plus what the transactions and locks collectors need, so one pass over the
# sessions serves them all. Ages are seconds (clamped to >= 0 in Python). {threshold} is
# the stale threshold in seconds as a literal (no parameter: one generic plan).
SQL = """
  (SELECT json_agg(json_build_array(
            d.datname, r.rolname, g.application_name, g.state, g.backend_type, g.n,
            extract(epoch FROM now() - g.oldest_state), extract(epoch FROM now() - g.oldest_xact),
            extract(epoch FROM now() - g.oldest_query), g.over, g.lock_waits, g.blocked))
     FROM (SELECT datid, usesysid, application_name, state, backend_type, count(*) AS n,
                  min(state_change) AS oldest_state, min(xact_start) AS oldest_xact,
                  min(query_start) FILTER (WHERE state = 'active') AS oldest_query,
                  count(*) FILTER (
                    WHERE state_change < now() - '{threshold} seconds'::interval) AS over,
                  count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock_waits,
                  count(*) FILTER (WHERE cardinality(blockers) > 0) AS blocked
             FROM act GROUP BY datid, usesysid, application_name, state, backend_type) g
     LEFT JOIN pg_database d ON d.oid = g.datid
     LEFT JOIN pg_roles r ON r.oid = g.usesysid) AS sessions,
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all_sessions"""


def columns(features: Features, stale_threshold: float) -> str:
    """This collector's part of the select list."""
    return SQL.format(threshold=repr(float(stale_threshold)))


def _age(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


class Group(NamedTuple):
    """Backends sharing database, role, application_name, state and backend type.

    Once :func:`~poolwatch.exporter.collectors.collect_all` has built the label folder,
    the cached groups carry folded names (a value beyond the top N reads ``other``).
    """

    datname: str
    usename: str
    application_name: str
    state: str | None
    backend_type: str
    sessions: int
    max_state_age: float | None  # seconds since the oldest state change
    max_xact_age: float | None  # seconds since the oldest transaction began
    max_query_age: float | None  # seconds since the oldest active statement began
    over_threshold: int  # sessions whose state is older than the stale threshold
    lock_waits: int  # sessions waiting for a heavyweight lock
    blocked: int  # sessions pg_blocking_pids() says are blocked

    @property
    def client(self) -> bool:
        """A client backend (an application's session)."""
        return self.backend_type == CLIENT_BACKEND


def all_groups(row: Mapping[str, Any]) -> list[Group]:
    """Every group of this snapshot, client backends or not."""
    cached = row.get(GROUPS_KEY)
    if cached is not None:
        return list(cached)
    return [
        Group(
            text(d),
            text(u),
            text(a),
            st,
            text(bt),
            int(n),
            _age(sa),
            _age(xa),
            _age(qa),
            int(over),
            int(lw),
            int(bl),
        )
        for d, u, a, st, bt, n, sa, xa, qa, over, lw, bl in rows(row, "sessions")
    ]


def session_groups(row: Mapping[str, Any]) -> list[Group]:
    """The client-backend groups (used by the transactions and locks collectors too)."""
    return [g for g in all_groups(row) if g.client]


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Metric]:
    """pg_sessions, pg_backends and the visibility metrics."""
    sessions: dict[tuple[str, ...], float] = {}
    for g in session_groups(row):
        key = (g.datname, g.usename, g.application_name, g.state or UNKNOWN_STATE)
        add_sum(sessions, key, g.sessions)
    yield family(PG_SESSIONS, sessions)
    backends: dict[tuple[str, ...], float] = {}
    hidden_count = 0
    for g in all_groups(row):
        add_sum(backends, (g.backend_type,), g.sessions)
        if g.client and g.state is None:
            hidden_count += g.sessions
    yield family(PG_BACKENDS, backends)
    hidden = gauge(EXPORTER_HIDDEN_SESSIONS)
    hidden.add_metric([], float(hidden_count))
    yield hidden
    sees = gauge(EXPORTER_SEES_ALL_SESSIONS)
    sees.add_metric([], 1.0 if row["sees_all_sessions"] else 0.0)
    yield sees
