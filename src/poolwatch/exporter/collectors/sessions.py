"""Collector ``sessions``: client sessions by database/role/application/state, backends by
type, and whether the exporter's role can see other roles' sessions at all.

Without pg_monitor / pg_read_all_stats, PostgreSQL shows other roles' sessions with a NULL
``state``; they are counted as state ``unknown`` and in ``poolwatch_exporter_hidden_sessions``
rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import (
    EXPORTER_HIDDEN_SESSIONS,
    EXPORTER_SEES_ALL_SESSIONS,
    PG_BACKENDS,
    PG_SESSIONS,
)
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, add_sum, family, gauge
from .snapshot import PgSnapshot

UNKNOWN_STATE = "unknown"

# One row per (database, role, application_name, state, backend_type) group of backends:
# the count plus what the transactions and locks collectors need, so one pass over the
# sessions serves them all (``lock_waits`` only gates the locks collector's own pass).
# Active sessions are grouped by what they wait on as well (the waits collector); other
# states are not split (an idle session always waits for its client). {threshold} is the
# stale threshold in seconds as a literal (no parameter: one generic plan).
GROUPS_SQL = """
  SELECT datid, usesysid, application_name, state, {backend_type} AS backend_type,
         CASE WHEN state = 'active' THEN wait_event_type END AS wait_type,
         CASE WHEN state = 'active' THEN wait_event END AS wait_event,
         count(*) AS n, min(state_change) AS oldest_state, min(xact_start) AS oldest_xact,
         min(query_start) FILTER (WHERE state = 'active') AS oldest_query,
         count(*) FILTER (WHERE state_change < now() - '{threshold} seconds'::interval) AS over,
         count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock_waits
    FROM pg_stat_get_activity(NULL)
   WHERE pid <> pg_backend_pid()
   GROUP BY 1, 2, 3, 4, 5, 6, 7"""

# The groups (ages in seconds, clamped to >= 0 in Python), with their names, active
# sessions' wait event, and the oids last so that a degraded scrape can name them from the
# last complete one.
SQL = """
  (SELECT json_agg(json_build_array(
            {datname}, {rolname}, g.application_name, g.state, g.backend_type, g.n,
            extract(epoch FROM now() - g.oldest_state), extract(epoch FROM now() - g.oldest_xact),
            extract(epoch FROM now() - g.oldest_query), g.over, g.wait_type, g.wait_event,
            g.datid, g.usesysid))
     FROM grp g{joins}) AS sessions,
  {sees_all} AS sees_all_sessions"""

_NAMED = SQL.format(
    datname="d.datname",
    rolname="r.rolname",
    joins="""
     LEFT JOIN pg_database d ON d.oid = g.datid
     LEFT JOIN pg_roles r ON r.oid = g.usesysid""",
    sees_all="(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)\n"
    "    OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')",
)
# pg_roles reads pg_authid, and pg_has_role may too: a degraded scrape keeps the last answer.
_IDS_ONLY = SQL.format(datname="NULL", rolname="NULL", joins="", sees_all="NULL::bool")


def groups_sql(backend_type: str, stale_threshold: float) -> str:
    """The ``grp`` CTE: the one pass over the sessions."""
    return GROUPS_SQL.format(backend_type=backend_type, threshold=repr(float(stale_threshold)))


class SessionsCollector:
    """pg_sessions, pg_backends and whether the exporter's role sees every session."""

    name = "sessions"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list (without catalog joins unless ``names``)."""
        return _NAMED if names else _IDS_ONLY

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """The families of ``snapshot`` (its groups are folded already)."""
        sessions: dict[tuple[str, ...], float] = {}
        for g in snapshot.client_groups:
            key = (g.datname, g.usename, g.application_name, g.state or UNKNOWN_STATE)
            sessions[key] = sessions.get(key, 0.0) + g.sessions
        yield family(PG_SESSIONS, sessions)
        backends: dict[tuple[str, ...], float] = {}
        hidden_count = 0
        for g in snapshot.groups:
            add_sum(backends, (g.backend_type,), g.sessions)
            if g.client and g.state is None:
                hidden_count += g.sessions
        yield family(PG_BACKENDS, backends)
        hidden = gauge(EXPORTER_HIDDEN_SESSIONS)
        hidden.add_metric([], float(hidden_count))
        yield hidden
        sees_all = snapshot.columns.get("sees_all_sessions")
        if sees_all is not None:  # NULL in a degraded scrape: the family is left out
            sees = gauge(EXPORTER_SEES_ALL_SESSIONS)
            sees.add_metric([], 1.0 if sees_all else 0.0)
            yield sees
