"""Collector ``database_stats``: what ``pg_stat_database`` counts per database since its
statistics were reset: sessions opened and how they ended, time spent active and idle in
transaction, deadlocks.

The session counters exist from PostgreSQL 14 on (feature-detected by looking for
``pg_stat_database.sessions_fatal``); before that only ``deadlocks`` is exported. How
PostgreSQL counts a session's end: ``sessions_fatal`` takes sessions ended by a FATAL error,
among them ``idle_in_transaction_session_timeout`` and ``idle_session_timeout``;
``sessions_killed`` those ended by ``pg_terminate_backend()`` or an operator's signal;
``sessions_abandoned`` those whose client went away without saying goodbye (a killed worker
process, a dropped socket). Backends flush these to shared memory with a delay of up to a
second or so (at exit for the session counters, when idle for the rest), so a scrape right
after an event may not show it yet.

Template databases are left out (nobody works in them). Database names are not folded to
the top N: a folded ``other`` series of a counter would go down whenever a database moved
in or out of the top N. Databases are listed from ``pg_database``, so a degraded scrape
leaves these families out (a gap, not a reset, for ``rate()``).
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import (
    PG_STAT_DATABASE_ACTIVE_TIME,
    PG_STAT_DATABASE_DEADLOCKS,
    PG_STAT_DATABASE_IDLE_IN_TRANSACTION_TIME,
    PG_STAT_DATABASE_SESSION_TIME,
    PG_STAT_DATABASE_SESSIONS,
    PG_STAT_DATABASE_SESSIONS_ABANDONED,
    PG_STAT_DATABASE_SESSIONS_FATAL,
    PG_STAT_DATABASE_SESSIONS_KILLED,
    MetricSpec,
)
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, counter
from .snapshot import PgSnapshot

# The functions under the pg_stat_database view, called on pg_database directly: the view
# would add a union with the shared-objects row and a second pg_database scan.
_SESSION_COLUMNS = ", ".join(
    f"pg_stat_get_db_{name}(d.oid)"
    for name in (
        "sessions",
        "sessions_abandoned",
        "sessions_fatal",
        "sessions_killed",
        "session_time",
        "active_time",
        "idle_in_transaction_time",
    )
)

SQL = """
  (SELECT json_agg(json_build_array(d.datname, pg_stat_get_db_deadlocks(d.oid), {sessions})
                   ORDER BY d.datname)
     FROM pg_database d WHERE NOT d.datistemplate) AS database_stats"""

# Column order after datname, with the unit each one needs (times are milliseconds).
_FAMILIES: tuple[tuple[MetricSpec, float], ...] = (
    (PG_STAT_DATABASE_DEADLOCKS, 1.0),
    (PG_STAT_DATABASE_SESSIONS, 1.0),
    (PG_STAT_DATABASE_SESSIONS_ABANDONED, 1.0),
    (PG_STAT_DATABASE_SESSIONS_FATAL, 1.0),
    (PG_STAT_DATABASE_SESSIONS_KILLED, 1.0),
    (PG_STAT_DATABASE_SESSION_TIME, 0.001),
    (PG_STAT_DATABASE_ACTIVE_TIME, 0.001),
    (PG_STAT_DATABASE_IDLE_IN_TRANSACTION_TIME, 0.001),
)


class DatabaseStatsCollector:
    """Session, time and deadlock counters per database (pg_stat_database)."""

    name = "database_stats"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list (NULL without ``names``: it reads
        pg_database; the session columns only where the server has them)."""
        if not names:
            return "\n  NULL::json AS database_stats"
        sessions = _SESSION_COLUMNS if features.has_session_stats else "NULL"
        return SQL.format(sessions=sessions)

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """One counter family per column the server reported (NULL columns are left out)."""
        rows = snapshot.rows("database_stats")
        if not rows:
            return
        for index, (spec, scale) in enumerate(_FAMILIES, start=1):
            metric = counter(spec)
            for row in rows:
                value = row[index] if index < len(row) else None
                if value is not None:
                    metric.add_metric([row[0] or ""], float(value) * scale)
            if metric.points:
                yield metric
