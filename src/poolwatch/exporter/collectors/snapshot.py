"""What one PostgreSQL scrape statement returned, parsed once: :class:`PgSnapshot`.

The statement's columns are JSON arrays of arrays (one per group of backends, per
database with lock waiters, ...). :meth:`PgSnapshot.from_row` decodes each column once,
turns the ``sessions`` column into :class:`Group` rows with their names folded to the
top N, and keeps the rest for the collector that owns it. Collectors read the snapshot,
never the row, so a unit test feeds them plain rows.

Degraded snapshots come from the statement that avoids ``pg_database`` and ``pg_authid``
(held ACCESS EXCLUSIVE by someone): names are NULL there and are taken from the last
complete snapshot (:class:`Names`) by oid. While either catalog is locked no new session
can start (start-up reads both), so every session seen then was seen before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ...metric_names import OTHER_LABEL_VALUE
from .base import LabelFolder

CLIENT_BACKEND = "client backend"


class Group(NamedTuple):
    """Backends sharing database, role, application_name, state and backend type.

    The groups of a :class:`PgSnapshot` carry folded names (a value beyond the top N
    reads ``other``).
    """

    datname: str
    usename: str
    application_name: str
    state: str | None
    backend_type: str
    sessions: int
    max_state_age: float | None  # seconds since the oldest state change
    max_xact_age: float | None  # seconds since the oldest transaction began
    max_query_age: float | None  # seconds since the oldest active statement began
    over_threshold: int  # sessions whose state is older than the stale threshold
    client: bool  # a client backend (an application's session)
    wait_event_type: str | None = None  # active sessions only: what they wait on now
    wait_event: str | None = None


@dataclass(frozen=True)
class Names:
    """Database and role names by oid, from a complete snapshot's ``sessions`` rows."""

    databases: Mapping[int, str] = field(default_factory=dict)
    roles: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def from_sessions(cls, raw: Iterable[list[Any]]) -> Names:
        """The names a complete ``sessions`` column mentions (datid, usesysid last)."""
        databases: dict[int, str] = {}
        roles: dict[int, str] = {}
        for d, u, *_, datid, usesysid in raw:
            if datid is not None and d is not None:
                databases[int(datid)] = d
            if usesysid is not None and u is not None:
                roles[int(usesysid)] = u
        return cls(databases, roles)

    def database(self, name: str | None, oid: Any) -> str:
        """``name``, else the remembered name of database ``oid``, else ``oid:<oid>``."""
        if name is not None or oid is None:
            return name or ""
        return self.databases.get(int(oid)) or f"oid:{oid}"

    def role(self, name: str | None, oid: Any) -> str:
        """``name``, else the remembered name of role ``oid``, else ``oid:<oid>``."""
        if name is not None or oid is None:
            return name or ""
        return self.roles.get(int(oid)) or f"oid:{oid}"


NO_NAMES = Names()


def decode(value: Any) -> list[list[Any]]:
    """A JSON array-of-arrays column (``[]`` when SQL returned NULL)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, list) else list(value)


def label_counts(raw: Iterable[list[Any]]) -> dict[str, list[tuple[str, int]]]:
    """(value, sessions) pairs per folded label over the client groups of ``raw`` (the
    ``sessions`` column's rows, names resolved): what :meth:`LabelFolder.from_counts` ranks."""
    counts: dict[str, list[tuple[str, int]]] = {
        "datname": [],
        "usename": [],
        "application_name": [],
    }
    datnames, usenames, apps = counts.values()
    for d, u, a, _st, bt, n, *_ in raw:
        if bt == CLIENT_BACKEND:  # names are JSON strings or null
            datnames.append((d or "", n))
            usenames.append((u or "", n))
            apps.append((a or "", n))
    return counts


def build_groups(raw: Iterable[list[Any]], fold: LabelFolder | None = None) -> list[Group]:
    """The groups of ``raw`` (the ``sessions`` column's rows), client groups' names folded
    by ``fold`` when given."""
    kept = fold.kept if fold is not None else {}
    keep_d, keep_u, keep_a = (kept.get(k) for k in ("datname", "usename", "application_name"))
    groups = []
    for d, u, a, st, bt, n, sa, xa, qa, over, wt, we, _datid, _usesysid in raw:
        d, u, a = d or "", u or "", a or ""  # JSON strings or null
        client = bt == CLIENT_BACKEND
        if client:
            if keep_d is not None and d not in keep_d:
                d = OTHER_LABEL_VALUE
            if keep_u is not None and u not in keep_u:
                u = OTHER_LABEL_VALUE
            if keep_a is not None and a not in keep_a:
                a = OTHER_LABEL_VALUE
        groups.append(
            Group(
                d,
                u,
                a,
                st,
                bt or "",
                int(n),
                None if sa is None else max(0.0, float(sa)),
                None if xa is None else max(0.0, float(xa)),
                None if qa is None else max(0.0, float(qa)),
                int(over),
                client,
                wt,
                we,
            )
        )
    return groups


@dataclass(frozen=True)
class PgSnapshot:
    """One scrape statement's result: session groups (folded), the other columns decoded."""

    columns: Mapping[str, Any]
    groups: Sequence[Group]
    client_groups: Sequence[Group]
    fold: LabelFolder
    sessions_raw: Sequence[list[Any]] = ()
    degraded: bool = False
    names: Names = NO_NAMES
    top_n: int = 0  # how many values per label are kept (for collectors that fold their own)

    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        top_n: int,
        *,
        degraded: bool = False,
        names: Names = NO_NAMES,
    ) -> PgSnapshot:
        """Parse ``row`` (column -> JSON text or value); ``names`` fills the NULL names
        of a ``degraded`` row."""
        columns = {key: json.loads(v) if isinstance(v, str) else v for key, v in row.items()}
        raw = decode(columns.get("sessions"))
        if degraded:
            raw = [[names.database(r[0], r[-2]), names.role(r[1], r[-1]), *r[2:]] for r in raw]
        fold = LabelFolder.from_counts(label_counts(raw), top_n)
        groups = build_groups(raw, fold)
        return cls(
            columns=columns,
            groups=groups,
            client_groups=[g for g in groups if g.client],
            fold=fold,
            sessions_raw=raw,
            degraded=degraded,
            names=names,
            top_n=top_n,
        )

    def rows(self, column: str) -> list[list[Any]]:
        """The decoded JSON array-of-arrays in ``column`` (``[]`` for NULL)."""
        return decode(self.columns.get(column))

    def database(self, name: str | None, oid: Any) -> str:
        """A database label for ``name`` (NULL in a degraded row: named by ``oid``)."""
        return self.names.database(name, oid) if self.degraded else (name or "")


__all__ = ["CLIENT_BACKEND", "Group", "Names", "PgSnapshot", "build_groups", "label_counts"]
