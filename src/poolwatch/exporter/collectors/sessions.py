"""Collector ``sessions``: client sessions by database/role/application/state, backends by
type, and whether the exporter's role can see other roles' sessions at all.

Without pg_monitor / pg_read_all_stats, PostgreSQL shows other roles' sessions with a NULL
``state``; they are counted as state ``unknown`` and in ``poolwatch_exporter_hidden_sessions``
rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
UNKNOWN_STATE = "unknown"

SQL = """
  (SELECT json_agg(json_build_array(datname, usename, application_name, state, n))
     FROM (SELECT datname, usename, application_name, state, count(*) AS n
             FROM cli GROUP BY 1, 2, 3, 4) s) AS sessions,
  (SELECT json_agg(json_build_array(backend_type, n))
     FROM (SELECT backend_type, count(*) AS n FROM act GROUP BY 1) s) AS backends,
  (SELECT count(*) FROM cli WHERE state IS NULL) AS hidden_sessions,
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all_sessions"""


def columns(features: Features) -> str:
    """This collector's part of the select list."""
    return SQL


def session_rows(row: Mapping[str, Any]) -> list[list[Any]]:
    """[datname, usename, application_name, state, count] per group, for the label folder."""
    return rows(row, "sessions")


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Metric]:
    """pg_sessions, pg_backends and the visibility metrics."""
    sessions: dict[tuple[str, ...], float] = {}
    for datname, usename, app, state, n in session_rows(row):
        key = (
            fold("datname", datname),
            fold("usename", usename),
            fold("application_name", app),
            UNKNOWN_STATE if state is None else str(state),
        )
        add_sum(sessions, key, n)
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
