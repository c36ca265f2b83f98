"""Collectors, postgres_exporter style: one module per metric group, each with its SQL as a
module constant and a ``collect`` function, and a registry of them by name.

Unlike postgres_exporter, the collectors do not each run a query: their SQL fragments are
columns of ONE statement (:func:`build_sql`) over one snapshot of ``pg_stat_activity``
(the ``act`` CTE: every backend but the exporter's own; ``cli``: client backends only), so a
scrape is one round trip and all metrics describe the same instant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from prometheus_client.core import Metric

from ..database import Features
from . import connections, locks, sessions, transactions
from .base import LabelFolder

COLLECTORS: dict[str, ModuleType] = {
    module.NAME: module for module in (connections, sessions, locks, transactions)
}

# ``pg_stat_get_activity(NULL)`` is the documented function under the pg_stat_activity
# view; reading it directly and naming databases and roles only per group (not per
# session, as the view's joins do) makes the statement cost little more than the
# snapshot itself: at 2,000 sessions, about a third less than going through the view.
ACTIVITY_SQL = """
WITH act AS MATERIALIZED (
  SELECT pid, datid, usesysid, application_name, state, {backend_type} AS backend_type,
         wait_event_type, state_change, xact_start, query_start,
         CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid) END AS blockers
    FROM pg_stat_get_activity(NULL)
   WHERE pid <> pg_backend_pid()
)
SELECT"""

# backend_type is NULL for other roles' processes when the exporter's role lacks
# pg_read_all_stats (and absent before PostgreSQL 10): such a process with a database is
# counted as a client session (with state "unknown"), never silently dropped.
_BACKEND_TYPE = (
    "coalesce({column}, CASE WHEN datid IS NOT NULL THEN 'client backend' END, 'unknown')"
)


def build_sql(features: Features, stale_threshold: float = 5.0) -> str:
    """The one scrape statement for a server with ``features``."""
    head = ACTIVITY_SQL.format(
        backend_type=_BACKEND_TYPE.format(
            column="backend_type" if features.has_backend_type else "NULL::text"
        )
    )
    parts = [
        sessions.columns(features, stale_threshold)
        if module is sessions
        else module.columns(features)
        for module in COLLECTORS.values()
    ]
    return head + ",".join(part for part in parts if part.strip())


def make_sql_builder(stale_threshold: float) -> Callable[[Features], str]:
    """:func:`build_sql`, memoised per feature set (the statement is prepared once)."""
    cache: dict[Features, str] = {}

    def sql_for(features: Features) -> str:
        if features not in cache:
            cache[features] = build_sql(features, stale_threshold)
        return cache[features]

    return sql_for


def collect_all(row: Mapping[str, Any], top_n: int) -> list[Metric]:
    """Every collector's metric families for one result row, labels folded to ``top_n``."""
    data = {key: json.loads(v) if isinstance(v, str) else v for key, v in row.items()}
    raw = sessions.all_groups(data)
    clients = [g for g in raw if g.client]
    fold = LabelFolder.from_counts(
        {
            "datname": [(g.datname, g.sessions) for g in clients],
            "usename": [(g.usename, g.sessions) for g in clients],
            "application_name": [(g.application_name, g.sessions) for g in clients],
        },
        top_n,
    )
    # Fold each client group's names once; the collectors read them as they are.
    data[sessions.GROUPS_KEY] = [
        g._replace(
            datname=fold("datname", g.datname),
            usename=fold("usename", g.usename),
            application_name=fold("application_name", g.application_name),
        )
        if g.client
        else g
        for g in raw
    ]
    families: list[Metric] = []
    for module in COLLECTORS.values():
        collect: Callable[[Mapping[str, Any], LabelFolder], Iterator[Metric]] = module.collect
        families.extend(collect(data, fold))
    return families


__all__ = ["COLLECTORS", "LabelFolder", "build_sql", "collect_all", "make_sql_builder"]
