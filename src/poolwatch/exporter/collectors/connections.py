"""Collector ``connections``: the connection ceiling and the slots ordinary roles cannot use.

``reserved_connections`` exists from PostgreSQL 16 on; ``current_setting(name, true)``
returns NULL where it does not, so one statement serves every supported version.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ...metric_names import PG_MAX_CONNECTIONS, PG_RESERVED_CONNECTIONS
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, gauge

NAME = "connections"

SQL = """
  current_setting('max_connections')::int AS max_connections,
  current_setting('superuser_reserved_connections')::int
    + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)
    AS reserved_connections"""


def columns(features: Features) -> str:
    """This collector's part of the select list."""
    return SQL


def collect(row: Mapping[str, Any], fold: LabelFolder) -> Iterator[Family]:
    """pg_max_connections and pg_reserved_connections."""
    for spec, column in (
        (PG_MAX_CONNECTIONS, "max_connections"),
        (PG_RESERVED_CONNECTIONS, "reserved_connections"),
    ):
        metric = gauge(spec)
        metric.add_metric([], float(row[column]))
        yield metric
