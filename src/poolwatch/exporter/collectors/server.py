"""Collector ``server``: whether the server is a primary or a standby, and when it started.

Read next to ``PoolwatchPoolInvalidationBurst``: a pool that just lost its connections to a
server whose start time moved was restarted under it; one whose server became a standby (or
whose exporter now reaches a new primary with another start time) went through a fail-over.
Both are functions, no catalog: a degraded scrape keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import PG_POSTMASTER_START_TIME, PG_REPLICATION_IS_REPLICA
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, gauge
from .snapshot import PgSnapshot

SQL = """
  pg_is_in_recovery() AS in_recovery,
  extract(epoch FROM pg_postmaster_start_time())::float8 AS postmaster_start_time"""


class ServerCollector:
    """pg_replication_is_replica and pg_postmaster_start_time_seconds."""

    name = "server"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list (the same with or without ``names``)."""
        return SQL

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """The two gauges (left out when the row lacks them)."""
        in_recovery = snapshot.columns.get("in_recovery")
        if in_recovery is not None:
            replica = gauge(PG_REPLICATION_IS_REPLICA)
            replica.add_metric([], 1.0 if in_recovery else 0.0)
            yield replica
        started = snapshot.columns.get("postmaster_start_time")
        if started is not None:
            start = gauge(PG_POSTMASTER_START_TIME)
            start.add_metric([], float(started))
            yield start
