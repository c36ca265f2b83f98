"""Collector ``waits``: active client sessions by what they wait on now.

It adds no SQL of its own: the ``sessions`` collector's groups split active sessions by
``wait_event_type`` / ``wait_event`` (read live from the process array, like
``pg_stat_activity`` does). An active session with no wait event is running (on CPU, or in
a wait PostgreSQL does not instrument): it reads ``CPU``, the name Performance Insights and
pgwatch use. ``wait_event_type`` is a short fixed list; ``wait_event`` keeps the ``top_n``
most frequent events of the snapshot and folds the rest into ``other`` under their own type,
so ``sum by (wait_event_type)`` stays exact.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...metric_names import OTHER_LABEL_VALUE, PG_ACTIVE_SESSIONS
from ..database import Features
from ..exposition import Family
from .base import LabelFolder, add_sum, family
from .snapshot import PgSnapshot

NOT_WAITING = "CPU"


class WaitEventsCollector:
    """pg_active_sessions{datname, wait_event_type, wait_event} (from the session groups)."""

    name = "waits"

    def columns(self, features: Features, names: bool) -> str:
        """This collector's part of the select list: none, it reads the session groups."""
        return ""

    def collect(self, snapshot: PgSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """Active sessions per database and wait event, the rare events folded."""
        active = [g for g in snapshot.client_groups if g.state == "active"]
        per_event: dict[str, int] = {}
        for g in active:
            event = g.wait_event or NOT_WAITING
            per_event[event] = per_event.get(event, 0) + g.sessions
        ranked = sorted(per_event.items(), key=lambda item: (-item[1], item[0]))
        kept = {event for event, _ in ranked[: snapshot.top_n]}
        values: dict[tuple[str, ...], float] = {}
        for g in active:
            kind = g.wait_event_type or NOT_WAITING
            event = g.wait_event or NOT_WAITING
            shown = event if event in kept else OTHER_LABEL_VALUE
            add_sum(values, (g.datname, kind, shown), g.sessions)
        yield family(PG_ACTIVE_SESSIONS, values)
