"""Collector ``sessions``: client sessions by database/role/application/state, backends by
type, and whether the exporter's role can see other roles' sessions at all.

Without pg_monitor / pg_read_all_stats, PostgreSQL shows other roles' sessions with a NULL
``state``; they are counted as state ``unknown`` and in ``poolwatch_exporter_hidden_sessions``
rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from ...metric_names import (
    EXPORTER_HIDDEN_SESSIONS,
    EXPORTER_SEES_ALL_SESSIONS,
    OTHER_LABEL_VALUE,
    PG_BACKENDS,
    PG_SESSIONS,
)
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, add_sum, family, gauge, rows

NAME = "sessions"
GROUPS_KEY = "_groups"  # where collect_all keeps the parsed groups of one row
CLIENT_GROUPS_KEY = "_client_groups"  # and the client backends' among them
CLIENT_BACKEND = "client backend"
UNKNOWN_STATE = "unknown"

# One row per (database, role, application_name, state, backend_type) group of backends:
# the count plus what the transactions and locks collectors need, so one pass over the
# sessions serves them all (``lock_waits`` only gates the locks collector's own pass).
# {threshold} is the stale threshold in seconds as a literal (no parameter: one generic
# plan).
GROUPS_SQL = """
  SELECT datid, usesysid, application_name, state, {backend_type} AS backend_type,
         count(*) AS n, min(state_change) AS oldest_state, min(xact_start) AS oldest_xact,
         min(query_start) FILTER (WHERE state = 'active') AS oldest_query,
         count(*) FILTER (WHERE state_change < now() - '{threshold} seconds'::interval) AS over,
         count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock_waits
    FROM pg_stat_get_activity(NULL)
   WHERE pid <> pg_backend_pid()
   GROUP BY 1, 2, 3, 4, 5"""

# The groups with names (ages in seconds, clamped to >= 0 in Python).
SQL = """
  (SELECT json_agg(json_build_array(
            d.datname, r.rolname, g.application_name, g.state, g.backend_type, g.n,
            extract(epoch FROM now() - g.oldest_state), extract(epoch FROM now() - g.oldest_xact),
            extract(epoch FROM now() - g.oldest_query), g.over))
     FROM grp g
     LEFT JOIN pg_database d ON d.oid = g.datid
     LEFT JOIN pg_roles r ON r.oid = g.usesysid) AS sessions,
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all_sessions"""


def groups_sql(backend_type: str, stale_threshold: float) -> str:
    """The ``grp`` CTE: the one pass over the sessions."""
    return GROUPS_SQL.format(backend_type=backend_type, threshold=repr(float(stale_threshold)))


def columns(features: Features) -> str:
    """This collector's part of the select list."""
    return SQL


class Group(NamedTuple):
    """Backends sharing database, role, application_name, state and backend type.

    The groups :func:`~poolwatch.exporter.collectors.collect_all` hands to the collectors
    carry folded names (a value beyond the top N reads ``other``).
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
    client: bool  # a client backend (an application's session)


def label_counts(raw: list[list[Any]]) -> dict[str, list[tuple[str, int]]]:
    """(value, sessions) pairs per folded label, over the client groups of ``raw`` (the
    ``sessions`` column's rows): what :meth:`LabelFolder.from_counts` ranks."""
    counts: dict[str, list[tuple[str, int]]] = {
        "datname": [],
        "usename": [],
        "application_name": [],
    }
    datnames, usenames, apps = counts.values()
    for d, u, a, _st, bt, n, *_ in raw:
        if bt == CLIENT_BACKEND:  # names are JSON strings or null
            datnames.append((d or "", n))
            usenames.append((u or "", n))
            apps.append((a or "", n))
    return counts


def build_groups(raw: list[list[Any]], fold: LabelFolder | None = None) -> list[Group]:
    """The groups of ``raw`` (the ``sessions`` column's rows), client groups' names folded
    by ``fold`` when given."""
    kept = fold.kept if fold is not None else {}
    keep_d, keep_u, keep_a = (kept.get(k) for k in ("datname", "usename", "application_name"))
    groups = []
    for d, u, a, st, bt, n, sa, xa, qa, over in raw:
        d, u, a = d or "", u or "", a or ""  # JSON strings or null
        client = bt == CLIENT_BACKEND
        if client:
            if keep_d is not None and d not in keep_d:
                d = OTHER_LABEL_VALUE
            if keep_u is not None and u not in keep_u:
                u = OTHER_LABEL_VALUE
            if keep_a is not None and a not in keep_a:
                a = OTHER_LABEL_VALUE
        groups.append(
            Group(
                d,
                u,
                a,
                st,
                bt or "",
                int(n),
                None if sa is None else max(0.0, float(sa)),
                None if xa is None else max(0.0, float(xa)),
                None if qa is None else max(0.0, float(qa)),
                int(over),
                client,
            )
        )
    return groups


def all_groups(row: Mapping[str, Any]) -> list[Group]:
    """Every group of this snapshot, client backends or not."""
    cached: list[Group] | None = row.get(GROUPS_KEY)
    return cached if cached is not None else build_groups(rows(row, "sessions"))


def session_groups(row: Mapping[str, Any]) -> list[Group]:
    """The client-backend groups (used by the transactions collector too)."""
    cached: list[Group] | None = row.get(CLIENT_GROUPS_KEY)
    return cached if cached is not None else [g for g in all_groups(row) if g.client]


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Family]:
    """pg_sessions, pg_backends and the visibility metrics."""
    sessions: dict[tuple[str, ...], float] = {}
    for g in session_groups(row):
        key = (g.datname, g.usename, g.application_name, g.state or UNKNOWN_STATE)
        sessions[key] = sessions.get(key, 0.0) + g.sessions
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
