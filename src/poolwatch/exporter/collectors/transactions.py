"""Collector ``transactions``: idle-in-transaction sessions and their ages, the oldest
transaction per state, and the longest-running active query.

Ages are measured against ``now()`` of the one scrape statement, so all of them come from
the same moment; negative ages (a state change during the scrape) are clamped to 0.
Sessions "idle in transaction (aborted)" count as idle in transaction: they hold their
connection and locks just the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import Metric

from ...metric_names import (
    PG_IDLE_IN_TRANSACTION_MAX_AGE_SECONDS,
    PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS,
    PG_IDLE_IN_TRANSACTION_SESSIONS,
    PG_IDLE_IN_TRANSACTION_STALE_SESSIONS,
    PG_QUERY_MAX_AGE_SECONDS,
    PG_TRANSACTION_MAX_AGE_SECONDS,
)
from ..database import Features
from .base import LabelFolder, add_max, add_sum, family, rows

NAME = "transactions"

# $1 = the stale threshold in seconds.
SQL = """
  (SELECT json_agg(json_build_array(datname, application_name, n, max_idle, max_age, stale))
     FROM (SELECT datname, application_name, count(*) AS n,
                  max(state_age) AS max_idle, max(xact_age) AS max_age,
                  count(*) FILTER (WHERE state_age > $1::float8) AS stale
             FROM cli
            WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
            GROUP BY 1, 2) s) AS idle_in_transaction,
  (SELECT json_agg(json_build_array(datname, state, max_age))
     FROM (SELECT datname, state, max(xact_age) AS max_age FROM cli
            WHERE xact_age IS NOT NULL GROUP BY 1, 2) s) AS transaction_age,
  (SELECT json_agg(json_build_array(datname, max_age))
     FROM (SELECT datname, max(query_age) AS max_age FROM cli
            WHERE state = 'active' GROUP BY 1) s) AS query_age"""


def columns(features: Features) -> str:
    """This collector's part of the select list."""
    return SQL


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Metric]:
    """The idle-in-transaction family, pg_transaction_max_age_seconds, pg_query_max_age."""
    count: dict[tuple[str, ...], float] = {}
    idle: dict[tuple[str, ...], float] = {}
    age: dict[tuple[str, ...], float] = {}
    stale: dict[tuple[str, ...], float] = {}
    for datname, app, n, max_idle, max_age, n_stale in rows(row, "idle_in_transaction"):
        key = (fold("datname", datname), fold("application_name", app))
        add_sum(count, key, n)
        add_max(idle, key, max_idle)
        add_max(age, key, max_age)
        add_sum(stale, key[:1], n_stale)
    yield family(PG_IDLE_IN_TRANSACTION_SESSIONS, count)
    yield family(PG_IDLE_IN_TRANSACTION_MAX_IDLE_SECONDS, idle)
    yield family(PG_IDLE_IN_TRANSACTION_MAX_AGE_SECONDS, age)
    yield family(PG_IDLE_IN_TRANSACTION_STALE_SESSIONS, stale)
    tx_age: dict[tuple[str, ...], float] = {}
    for datname, state, max_age in rows(row, "transaction_age"):
        add_max(tx_age, (fold("datname", datname), "unknown" if state is None else state), max_age)
    yield family(PG_TRANSACTION_MAX_AGE_SECONDS, tx_age)
    query_age: dict[tuple[str, ...], float] = {}
    for datname, max_age in rows(row, "query_age"):
        add_max(query_age, (fold("datname", datname),), max_age)
    yield family(PG_QUERY_MAX_AGE_SECONDS, query_age)
