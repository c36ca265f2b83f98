"""The PgBouncer target: one admin-console connection (:mod:`.source`), its typed snapshot
(:mod:`.snapshot`) and one collector per ``SHOW`` command (:mod:`.collectors`).

Plugs into the same :class:`~poolwatch.exporter.scraper.Scraper` as the PostgreSQL target
(single flight, minimum interval, ``up`` metric: ``pgbouncer_up``).
"""

from __future__ import annotations

from ...metric_names import PGBOUNCER_UP
from ..dsn import Dsn
from ..target import Target
from .collectors import COLLECTORS
from .snapshot import PgBouncerSnapshot
from .source import PgBouncerSource


def pgbouncer_target(dsn: Dsn, *, timeout: float, top_n: int) -> Target[PgBouncerSnapshot]:
    """The PgBouncer target for the admin console at ``dsn`` with every collector."""
    source = PgBouncerSource(dsn, timeout=timeout, top_n=top_n)
    return Target(source=source, collectors=COLLECTORS, up=PGBOUNCER_UP)


__all__ = ["COLLECTORS", "PgBouncerSnapshot", "PgBouncerSource", "pgbouncer_target"]
