"""PostgreSQL collectors, postgres_exporter style: one module per metric group, each with
its SQL as a module constant and a collector class, and a registry of them by name.

Unlike postgres_exporter, the collectors do not each run a query: their SQL fragments are
columns of ONE statement (:func:`build_sql`) over one snapshot of ``pg_stat_activity``
(the ``grp`` CTE: every backend but the exporter's own, grouped), so a scrape is one round
trip and all metrics describe the same instant. The row is parsed once into a
:class:`~.snapshot.PgSnapshot`, which every collector reads (see
:mod:`poolwatch.exporter.target` for the protocol and the wrapper that isolates them).

``build_sql(features, names=False)`` is the degraded statement: the same columns without
``pg_database`` / ``pg_roles`` (``pg_authid``), for when one of them is locked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from ..database import Features
from ..exposition import Family
from .base import LabelFolder
from .connections import ConnectionsCollector
from .database_stats import DatabaseStatsCollector
from .limits import LimitsCollector
from .locks import LocksCollector
from .server import ServerCollector
from .sessions import SessionsCollector, groups_sql
from .snapshot import PgSnapshot
from .transactions import TransactionsCollector
from .waits import WaitEventsCollector


class PgCollector(Protocol):
    """A PostgreSQL collector: its part of the one statement, and its families."""

    @property
    def name(self) -> str:
        """The ``collector`` label value."""
        ...

    def columns(self, features: Features, names: bool) -> str:
        """Its select-list columns for a server with ``features``; with ``names`` False
        they must not read ``pg_database`` or ``pg_authid`` (ids only)."""
        ...

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterable[Family]:
        """Its families for ``snapshot``."""
        ...


REGISTRY: dict[str, PgCollector] = {
    c.name: c
    for c in (
        ConnectionsCollector(),
        SessionsCollector(),
        LocksCollector(),
        TransactionsCollector(),
        WaitEventsCollector(),
        DatabaseStatsCollector(),
        LimitsCollector(),
        ServerCollector(),
    )
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


def build_sql(
    features: Features,
    stale_threshold: float = 5.0,
    *,
    names: bool = True,
    collectors: Iterable[PgCollector] | None = None,
) -> str:
    """The one scrape statement for a server with ``features`` (without catalog joins when
    ``names`` is False)."""
    backend_type = _BACKEND_TYPE.format(
        column="backend_type" if features.has_backend_type else "NULL::text"
    )
    head = ACTIVITY_SQL.format(
        groups=groups_sql(backend_type, stale_threshold), backend_type=backend_type
    )
    chosen = REGISTRY.values() if collectors is None else collectors
    parts = [c.columns(features, names) for c in chosen]
    return head + ",".join(part for part in parts if part.strip())


def make_sql_builder(stale_threshold: float, *, names: bool = True) -> Callable[[Features], str]:
    """:func:`build_sql`, memoised per feature set (the statement is prepared once)."""
    cache: dict[Features, str] = {}

    def sql_for(features: Features) -> str:
        if features not in cache:
            cache[features] = build_sql(features, stale_threshold, names=names)
        return cache[features]

    return sql_for


def collect_all(row: Mapping[str, Any], top_n: int) -> list[Family]:
    """Every registered collector's families for one result row, without the isolating
    wrapper (for tests and benchmarks; the exporter runs them through
    :class:`~poolwatch.exporter.target.CollectorRunner`)."""
    snapshot = PgSnapshot.from_row(row, top_n)
    families: list[Family] = []
    for collector in REGISTRY.values():
        families.extend(collector.collect(snapshot, snapshot.fold))
    return families


__all__ = [
    "REGISTRY",
    "LabelFolder",
    "PgCollector",
    "PgSnapshot",
    "build_sql",
    "collect_all",
    "make_sql_builder",
]
