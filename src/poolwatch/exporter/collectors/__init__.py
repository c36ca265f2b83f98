"""Collectors, postgres_exporter style: one module per metric group, each with its SQL as a
module constant and a ``collect`` function, and a registry of them by name.

Unlike postgres_exporter, the collectors do not each run a query: their SQL fragments are
columns of ONE statement (:func:`build_sql`) over one snapshot of ``pg_stat_activity``
(the ``act`` CTE: every backend but the exporter's own; ``cli``: client backends only), so a
scrape is one round trip and all metrics describe the same instant.
"""

from __future__ import annotations

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

ACTIVITY_SQL = """
WITH act AS MATERIALIZED (
  SELECT pid, datname, usename, application_name, state, {backend_type} AS backend_type,
         wait_event_type, state_change,
         {state_age} AS state_age, {xact_age} AS xact_age, {query_age} AS query_age,
         CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid) END AS blockers
    FROM pg_stat_activity
   WHERE pid <> pg_backend_pid()
),
cli AS (SELECT * FROM act WHERE backend_type = 'client backend')
SELECT"""

# backend_type is NULL for other roles' processes when the exporter's role lacks
# pg_read_all_stats (and absent before PostgreSQL 10): such a process with a database is
# counted as a client session (with state "unknown"), never silently dropped.
_BACKEND_TYPE = (
    "coalesce({column}, CASE WHEN datname IS NOT NULL THEN 'client backend' END, 'unknown')"
)


def _age(column: str) -> str:
    """Seconds since ``column`` (NULL stays NULL; a change during the scrape clamps to 0)."""
    return (
        f"CASE WHEN {column} IS NOT NULL"
        f" THEN greatest(0, extract(epoch FROM now() - {column}))::float8 END"
    )


def build_sql(features: Features) -> str:
    """The one scrape statement for a server with ``features`` ($1 = stale threshold, s)."""
    backend_type = _BACKEND_TYPE.format(
        column="backend_type" if features.has_backend_type else "NULL::text"
    )
    head = ACTIVITY_SQL.format(
        backend_type=backend_type,
        state_age=_age("state_change"),
        xact_age=_age("xact_start"),
        query_age=_age("query_start"),
    )
    return head + ",".join(module.columns(features) for module in COLLECTORS.values())


def make_sql_builder() -> Callable[[Features], str]:
    """:func:`build_sql`, memoised per feature set (the statement is prepared once)."""
    cache: dict[Features, str] = {}

    def sql_for(features: Features) -> str:
        if features not in cache:
            cache[features] = build_sql(features)
        return cache[features]

    return sql_for


def collect_all(row: Mapping[str, Any], top_n: int) -> list[Metric]:
    """Every collector's metric families for one result row, labels folded to ``top_n``."""
    groups = sessions.session_rows(row)
    fold = LabelFolder.from_counts(
        {
            "datname": [(str(g[0] or ""), int(g[4])) for g in groups],
            "usename": [(str(g[1] or ""), int(g[4])) for g in groups],
            "application_name": [(str(g[2] or ""), int(g[4])) for g in groups],
        },
        top_n,
    )
    families: list[Metric] = []
    for module in COLLECTORS.values():
        collect: Callable[[Mapping[str, Any], LabelFolder], Iterator[Metric]] = module.collect
        families.extend(collect(row, fold))
    return families


__all__ = ["COLLECTORS", "LabelFolder", "build_sql", "collect_all", "make_sql_builder"]
