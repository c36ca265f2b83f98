"""Collector ``limits``: per-role and per-database connection limits, and the sessions
PostgreSQL counts against them.

"too many connections for role" (``CREATE ROLE ... CONNECTION LIMIT``) and "too many
connections for database" (``ALTER DATABASE ... CONNECTION LIMIT``) arrive before
``max_connections`` does. Only limits that can refuse someone are exported, so the series are
bounded by what an administrator set: roles that may log in, are not superusers (PostgreSQL
does not apply either limit to superusers) and have a limit (``rolconnlimit >= 0``);
databases with ``datconnlimit >= 0``. The session count is of client backends, the exporter's
own session included (PostgreSQL counts it too), so a role with ``CONNECTION LIMIT 3`` and 3
sessions reads 3 of 3 and refuses the next login. Both lists read ``pg_roles`` /
``pg_database``: a degraded scrape leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import (
    PG_DATABASE_CONNECTION_LIMIT,
    PG_DATABASE_CONNECTIONS,
    PG_ROLES_CONNECTION_LIMIT,
    PG_ROLES_CONNECTIONS,
    MetricSpec,
)
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, family
from .snapshot import PgSnapshot

SQL = """
  (SELECT json_agg(json_build_array(r.rolname, r.rolconnlimit,
            (r.rolname = current_user)::int + coalesce((SELECT sum(g.n) FROM grp g
              WHERE g.usesysid = r.oid AND g.backend_type = 'client backend'), 0)))
     FROM pg_roles r
    WHERE r.rolconnlimit >= 0 AND r.rolcanlogin AND NOT r.rolsuper) AS role_limits,
  (SELECT json_agg(json_build_array(d.datname, d.datconnlimit,
            (d.datname = current_database())::int + coalesce((SELECT sum(g.n) FROM grp g
              WHERE g.datid = d.oid AND g.backend_type = 'client backend'), 0)))
     FROM pg_database d WHERE d.datconnlimit >= 0) AS database_limits"""

_IDS_ONLY = """
  NULL::json AS role_limits,
  NULL::json AS database_limits"""

_COLUMNS: tuple[tuple[str, MetricSpec, MetricSpec], ...] = (
    ("role_limits", PG_ROLES_CONNECTION_LIMIT, PG_ROLES_CONNECTIONS),
    ("database_limits", PG_DATABASE_CONNECTION_LIMIT, PG_DATABASE_CONNECTIONS),
)


class LimitsCollector:
    """pg_roles_connection_limit / _connections, pg_database_connection_limit / _connections."""

    name = "limits"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list (NULL without ``names``)."""
        return SQL if names else _IDS_ONLY

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """The limits and the sessions against them (nothing in a degraded snapshot)."""
        if snapshot.degraded:
            return
        for column, limit_spec, used_spec in _COLUMNS:
            limits: dict[tuple[str, ...], float] = {}
            used: dict[tuple[str, ...], float] = {}
            for name, limit, sessions in snapshot.rows(column):
                limits[(name,)] = float(limit)
                used[(name,)] = float(sessions)
            yield family(limit_spec, limits)
            yield family(used_spec, used)
