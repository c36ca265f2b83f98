"""What one PgBouncer scrape read, parsed once: :class:`PgBouncerSnapshot`.

It keeps each ``SHOW`` command's rows as PgBouncer sent them (columns differ between
versions: collectors look at ``rows.columns``, never at a version number) or the error a
command got, so one failing command costs only its collector. Label values are bounded as
on the PostgreSQL side: the ``top_n`` pools by clients keep their ``database``/``user``,
the rest are summed into ``other``/``other``; per-database series (SHOW DATABASES, SHOW
STATS) keep the ``top_n`` databases by clients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from poolwatch.pgbouncer.console import Rows
from poolwatch.pgbouncer.target import ConsoleError

from ...metric_names import OTHER_LABEL_VALUE
from ..collectors.base import LabelFolder, text

#: The SHOW commands of one scrape, in the order they are pipelined.
COMMANDS = ("POOLS", "DATABASES", "STATS", "LISTS", "CONFIG", "VERSION")


def number(value: Any) -> float:
    """A column value as a float (NULL and non-numbers read 0)."""
    if value is None:
        return 0.0
    try:
        found = float(value)
    except (TypeError, ValueError):
        return 0.0
    return found if math.isfinite(found) else 0.0


def pool_clients(row: Mapping[str, Any]) -> float:
    """Client connections of one SHOW POOLS row (what ranks pools for the top N)."""
    return sum(number(v) for k, v in row.items() if k.startswith("cl_"))


@dataclass(frozen=True)
class PgBouncerSnapshot:
    """Each SHOW command's rows (or its error) and the label folding for this scrape."""

    results: Mapping[str, Rows | ConsoleError]
    kept_pools: frozenset[tuple[str, str]] | None  # None: keep every pool
    fold: LabelFolder
    degraded: bool = False

    @classmethod
    def from_results(
        cls, results: Mapping[str, Rows | ConsoleError], top_n: int
    ) -> PgBouncerSnapshot:
        """Rank pools and databases by clients and keep the ``top_n`` of each."""
        pools = results.get("POOLS")
        if not isinstance(pools, Rows):
            return cls(results, None, LabelFolder({}))
        by_pool: dict[tuple[str, str], float] = {}
        by_database: dict[str, float] = {}
        for row in pools:
            key = (text(row.get("database")), text(row.get("user")))
            clients = pool_clients(row)
            by_pool[key] = by_pool.get(key, 0.0) + clients
            by_database[key[0]] = by_database.get(key[0], 0.0) + clients
        ranked = sorted(by_pool.items(), key=lambda item: (-item[1], item[0]))
        kept = frozenset(key for key, _ in ranked[:top_n])
        # databases with no pool (no client yet) rank last, by name
        for command in ("DATABASES", "STATS"):
            rows = results.get(command)
            if isinstance(rows, Rows):
                for row in rows:
                    name = text(row.get("name" if command == "DATABASES" else "database"))
                    by_database.setdefault(name, -1.0)
        counts = {"database": [(name, n) for name, n in by_database.items()]}
        return cls(results, kept, _ranked_folder(counts, top_n))

    def rows(self, command: str) -> Rows:
        """The rows of ``command``; raises the error PgBouncer answered it with."""
        found = self.results.get(command)
        if isinstance(found, ConsoleError):
            raise found
        if found is None:
            raise ConsoleError(f"SHOW {command} was not read")
        return found

    def pool_key(self, database: Any, user: Any) -> tuple[str, str]:
        """The (database, user) labels of a pool: itself, or (other, other)."""
        key = (text(database), text(user))
        if self.kept_pools is None or key in self.kept_pools:
            return key
        return (OTHER_LABEL_VALUE, OTHER_LABEL_VALUE)


def _ranked_folder(counts: Mapping[str, list[tuple[str, float]]], top_n: int) -> LabelFolder:
    kept: dict[str, frozenset[str]] = {}
    for label, pairs in counts.items():
        ranked = sorted(pairs, key=lambda item: (-item[1], item[0]))
        kept[label] = frozenset(value for value, _ in ranked[:top_n])
    return LabelFolder(kept)


__all__ = ["COMMANDS", "PgBouncerSnapshot", "number", "pool_clients"]
