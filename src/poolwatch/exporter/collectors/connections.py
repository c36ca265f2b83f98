"""Collector ``connections``: the connection ceiling and the slots ordinary roles cannot use.

``reserved_connections`` exists from PostgreSQL 16 on; ``current_setting(name, true)``
returns NULL where it does not, so one statement serves every supported version.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import PG_MAX_CONNECTIONS, PG_RESERVED_CONNECTIONS
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, gauge
from .snapshot import PgSnapshot

SQL = """
  current_setting('max_connections')::int AS max_connections,
  current_setting('superuser_reserved_connections')::int
    + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)
    AS reserved_connections"""


class ConnectionsCollector:
    """pg_max_connections and pg_reserved_connections (settings: no catalog is read)."""

    name = "connections"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list (the same with or without ``names``)."""
        return SQL

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """The two settings as gauges."""
        for spec, column in (
            (PG_MAX_CONNECTIONS, "max_connections"),
            (PG_RESERVED_CONNECTIONS, "reserved_connections"),
        ):
            metric = gauge(spec)
            metric.add_metric([], float(snapshot.columns[column]))
            yield metric
