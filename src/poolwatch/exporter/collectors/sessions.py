"""Collector ``sessions``: client sessions by database/role/application/state, backends by
type, and whether the exporter's role can see other roles' sessions at all.

Without pg_monitor / pg_read_all_stats, PostgreSQL shows other roles' sessions with a NULL
``state``; they are counted as state ``unknown`` and in ``poolwatch_exporter_hidden_sessions``
rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

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
GROUPS_KEY = "_session_groups"  # where collect_all keeps the parsed groups of one row
UNKNOWN_STATE = "unknown"

# One row per (datname, usename, application_name, state) group of client sessions: the
# count plus the ages the transactions collector needs, so a single pass over the sessions
# serves both. {threshold} is the stale threshold in seconds, as a float literal (no
# parameter: the prepared statement keeps one generic plan).
SQL = """
  (SELECT json_agg(g) FROM (
     SELECT json_build_array(datname, usename, application_name, state, count(*),
                             max(state_age), max(xact_age), max(query_age),
                             count(*) FILTER (WHERE state_age > {threshold}::float8)) AS g
       FROM cli GROUP BY datname, usename, application_name, state) s) AS sessions,
  (SELECT json_agg(json_build_array(backend_type, n))
     FROM (SELECT backend_type, count(*) AS n FROM act GROUP BY 1) s) AS backends,
  (SELECT count(*) FROM cli WHERE state IS NULL) AS hidden_sessions,
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all_sessions"""


def columns(features: Features, stale_threshold: float) -> str:
    """This collector's part of the select list."""
    return SQL.format(threshold=repr(float(stale_threshold)))


@dataclass(frozen=True)
class Group:
    """Client sessions sharing database, role, application_name and state."""

    datname: str
    usename: str
    application_name: str
    state: str | None
    sessions: int
    max_state_age: float | None  # seconds since the last state change
    max_xact_age: float | None  # seconds since the oldest transaction began
    max_query_age: float | None  # seconds since the oldest statement began
    over_threshold: int  # sessions whose state is older than the stale threshold


def session_groups(row: Mapping[str, Any]) -> list[Group]:
    """The per-group rows of this snapshot (also used by the transactions collector)."""
    cached = row.get(GROUPS_KEY)
    if cached is not None:
        return list(cached)
    return [
        Group(text(d), text(u), text(a), st, int(n), si, xa, qa, int(over))
        for d, u, a, st, n, si, xa, qa, over in rows(row, "sessions")
    ]


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Metric]:
    """pg_sessions, pg_backends and the visibility metrics."""
    sessions: dict[tuple[str, ...], float] = {}
    for g in session_groups(row):
        key = (
            fold("datname", g.datname),
            fold("usename", g.usename),
            fold("application_name", g.application_name),
            UNKNOWN_STATE if g.state is None else g.state,
        )
        add_sum(sessions, key, g.sessions)
    yield family(PG_SESSIONS, sessions)
    backends: dict[tuple[str, ...], float] = {}
    for backend_type, n in rows(row, "backends"):
        add_sum(backends, (text(backend_type),), n)
    yield family(PG_BACKENDS, backends)
    hidden = gauge(EXPORTER_HIDDEN_SESSIONS)
    hidden.add_metric([], float(row["hidden_sessions"]))
    yield hidden
    sees = gauge(EXPORTER_SEES_ALL_SESSIONS)
    sees.add_metric([], 1.0 if row["sees_all_sessions"] else 0.0)
    yield sees
