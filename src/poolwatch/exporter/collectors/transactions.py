"""Collector ``transactions``: idle-in-transaction sessions and their ages, the oldest
transaction per state, and the longest-running active query.

It adds no SQL of its own: the ages are aggregated per session group by the ``sessions``
collector's pass over ``pg_stat_activity`` (max state age, max transaction age, max query
age, sessions over the stale threshold), and re-aggregated here per label set. Ages are
measured against ``now()`` of the one scrape statement, so all come from the same moment;
a state change during the scrape clamps to 0. Sessions "idle in transaction (aborted)"
count as idle in transaction: they hold their connection and locks just the same.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import (
    PG_IDLE_IN_TRANSACTION_MAX_AGE_SECONDS,
    PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS,
    PG_IDLE_IN_TRANSACTION_SESSIONS,
    PG_IDLE_IN_TRANSACTION_STALE_SESSIONS,
    PG_QUERY_MAX_AGE_SECONDS,
    PG_TRANSACTION_MAX_AGE_SECONDS,
)
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, add_max, add_sum, family
from .sessions import UNKNOWN_STATE
from .snapshot import PgSnapshot

IDLE_IN_TRANSACTION = frozenset({"idle in transaction", "idle in transaction (aborted)"})


class TransactionsCollector:
    """Idle-in-transaction sessions, transaction and query ages (from the session groups)."""

    name = "transactions"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list: none, it reads the session groups."""
        return ""

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """The idle-in-transaction family, pg_transaction_max_age_seconds, pg_query_max_age."""
        count: dict[tuple[str, ...], float] = {}
        idle: dict[tuple[str, ...], float] = {}
        age: dict[tuple[str, ...], float] = {}
        stale: dict[tuple[str, ...], float] = {}
        tx_age: dict[tuple[str, ...], float] = {}
        query_age: dict[tuple[str, ...], float] = {}
        for g in snapshot.client_groups:
            datname = g.datname  # already folded
            if g.state in IDLE_IN_TRANSACTION:
                key = (datname, g.application_name)
                add_sum(count, key, g.sessions)
                add_max(idle, key, g.max_state_age)
                add_max(age, key, g.max_xact_age)
                add_sum(stale, (datname,), g.over_threshold)
            if g.max_xact_age is not None:
                add_max(
                    tx_age, (datname, UNKNOWN_STATE if g.state is None else g.state), g.max_xact_age
                )
            if g.state == "active":
                add_max(query_age, (datname,), g.max_query_age)
        yield family(PG_IDLE_IN_TRANSACTION_SESSIONS, count)
        yield family(PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS, idle)
        yield family(PG_IDLE_IN_TRANSACTION_MAX_AGE_SECONDS, age)
        yield family(PG_IDLE_IN_TRANSACTION_STALE_SESSIONS, stale)
        yield family(PG_TRANSACTION_MAX_AGE_SECONDS, tx_age)
        yield family(PG_QUERY_MAX_AGE_SECONDS, query_age)
