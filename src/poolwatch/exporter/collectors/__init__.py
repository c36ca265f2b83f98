"""Collectors, postgres_exporter style: one module per metric group, each with its SQL as a
module constant and a ``collect`` function, and a registry of them by name.

Unlike postgres_exporter, the collectors do not each run a query: their SQL fragments are
columns of ONE statement (:func:`build_sql`) over one snapshot of ``pg_stat_activity``
(the ``grp`` CTE: every backend but the exporter's own, grouped), so a scrape is one round
trip and all metrics describe the same instant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from ..database import Features
from ..exposition import Family
from . import connections, locks, sessions, transactions
from .base import LabelFolder, rows

COLLECTORS: dict[str, ModuleType] = {
    module.NAME: module for module in (connections, sessions, locks, transactions)
}

# ``pg_stat_get_activity(NULL)`` is the documented function under the pg_stat_activity
# view. The scrape reads it once, aggregating straight into per-group rows (``grp``, see
# the sessions collector) and naming databases and roles only per group, not per session
# as the view's joins do. Sessions are kept one by one (``act``, read by the locks
# collector) only when some session waits for a lock: ``act`` is evaluated on demand and
# its gate makes an ordinary scrape skip it. Both read the same per-transaction snapshot
# of the activity array; only wait events (read live from the process array) can move in
# between, so the lock metrics all come from ``act``. At 2,000 sessions this costs about
# a third more than ``SELECT count(*)`` over the function, where materialising every
# session for several passes cost three quarters more.
ACTIVITY_SQL = """
WITH grp AS ({groups}), act AS MATERIALIZED (
  SELECT pid, datid, {backend_type} AS backend_type, wait_event_type, state_change,
         CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid) END AS blockers
    FROM pg_stat_get_activity(NULL)
   WHERE pid <> pg_backend_pid()
     AND EXISTS (SELECT 1 FROM grp WHERE lock_waits > 0)
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
    backend_type = _BACKEND_TYPE.format(
        column="backend_type" if features.has_backend_type else "NULL::text"
    )
    head = ACTIVITY_SQL.format(
        groups=sessions.groups_sql(backend_type, stale_threshold), backend_type=backend_type
    )
    parts = [module.columns(features) for module in COLLECTORS.values()]
    return head + ",".join(part for part in parts if part.strip())


def make_sql_builder(stale_threshold: float) -> Callable[[Features], str]:
    """:func:`build_sql`, memoised per feature set (the statement is prepared once)."""
    cache: dict[Features, str] = {}

    def sql_for(features: Features) -> str:
        if features not in cache:
            cache[features] = build_sql(features, stale_threshold)
        return cache[features]

    return sql_for


def collect_all(row: Mapping[str, Any], top_n: int) -> list[Family]:
    """Every collector's metric families for one result row, labels folded to ``top_n``."""
    data = {key: json.loads(v) if isinstance(v, str) else v for key, v in row.items()}
    raw = rows(data, "sessions")
    fold = LabelFolder.from_counts(sessions.label_counts(raw), top_n)
    # Parse and fold each group once; the collectors read them as they are.
    groups = sessions.build_groups(raw, fold)
    data[sessions.GROUPS_KEY] = groups
    data[sessions.CLIENT_GROUPS_KEY] = [g for g in groups if g.client]
    families: list[Family] = []
    for module in COLLECTORS.values():
        collect: Callable[[Mapping[str, Any], LabelFolder], Iterator[Family]] = module.collect
        families.extend(collect(data, fold))
    return families


__all__ = ["COLLECTORS", "LabelFolder", "build_sql", "collect_all", "make_sql_builder"]
