"""The seam every scrape target plugs into: a source, its collectors, and the wrapper that
runs each collector so that its failure costs only its own families.

A *target* is one server the exporter watches. Its :class:`Source` takes a snapshot over
its own single connection (one round trip where it can: PostgreSQL's one statement, or a
PgBouncer admin console's few ``SHOW`` commands on one connection) and hands back a typed,
immutable snapshot. Its :class:`Collector` objects read that snapshot, never the server,
and turn it into metric families. The :class:`~poolwatch.exporter.scraper.Scraper` (one
per target) adds single flight, the minimum interval and the ``up`` metric, so a new kind
of target is a new source + collectors and touches none of the existing ones.

:class:`CollectorRunner` is postgres_exporter's ``collector.go`` ``execute()``: every
collector runs through it, and it exports
``poolwatch_exporter_collector_success{collector}`` and
``poolwatch_exporter_collector_duration_seconds{collector}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ..metric_names import EXPORTER_COLLECTOR_DURATION, EXPORTER_COLLECTOR_SUCCESS, MetricSpec
from .exposition import Family

if TYPE_CHECKING:
    from .collectors.base import LabelFolder

log = logging.getLogger("poolwatch.exporter.collectors")

SnapT = TypeVar("SnapT", bound="SourceSnapshot")
SnapT_co = TypeVar("SnapT_co", bound="SourceSnapshot", covariant=True)
SnapT_contra = TypeVar("SnapT_contra", bound="SourceSnapshot", contravariant=True)


class SourceSnapshot(Protocol):
    """What every snapshot offers the scraper besides its own typed data."""

    @property
    def fold(self) -> LabelFolder:
        """The top-N label folder every collector of this snapshot shares."""
        ...

    @property
    def degraded(self) -> bool:
        """True when the server answered but part of what it was asked could not be read."""
        ...


class Collector(Protocol[SnapT_contra]):
    """One metric group: reads a snapshot and yields its families (never raises on purpose;
    when it does, :class:`CollectorRunner` drops only its families)."""

    @property
    def name(self) -> str:
        """The ``collector`` label value (``sessions``, ``locks``, ...)."""
        ...

    def collect(self, snapshot: SnapT_contra, fold: LabelFolder) -> Iterable[Family]:
        """The families for ``snapshot``, label values folded with ``fold``."""
        ...


class Source(Protocol[SnapT_co]):
    """Takes a snapshot of one server over its own single connection.

    :meth:`take` raises :class:`~poolwatch.exporter.database.DatabaseUnavailable` (a
    redacted one-line reason) when the server could not be used: the scrape is then
    ``up 0``.
    """

    @property
    def connections_opened(self) -> int:
        """Connections opened so far (1 plus one per reconnect)."""
        ...

    async def take(self) -> SnapT_co:
        """One snapshot: one round trip (plus a fallback one when degraded)."""
        ...

    async def check(self) -> None:
        """Connect now, ignoring any backoff, and take a snapshot: the start-up check."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


@dataclass(frozen=True)
class Target(Generic[SnapT]):
    """A source, the collectors that read its snapshots, and its ``up`` metric."""

    source: Source[SnapT]
    collectors: Sequence[Collector[SnapT]]
    up: MetricSpec


class CollectorRunner(Generic[SnapT]):
    """Runs collectors one by one: a collector that raises loses its own families only,
    reports ``success 0``, and is logged once when it starts failing and once when it
    works again (not at every scrape)."""

    def __init__(self, collectors: Sequence[Collector[SnapT]]) -> None:
        self.collectors = tuple(collectors)
        self._failing: set[str] = set()

    def run(self, snapshot: SnapT) -> list[Family]:
        """Every collector's families, then the success and duration families."""
        families, health = self.run_split(snapshot)
        return families + health

    def run_split(self, snapshot: SnapT) -> tuple[list[Family], list[Family]]:
        """(every collector's families, [success, duration]): the two health families
        apart, so an exporter serving several targets can merge them into one family each."""
        fold = snapshot.fold
        families: list[Family] = []
        success = _gauge(EXPORTER_COLLECTOR_SUCCESS)
        duration = _gauge(EXPORTER_COLLECTOR_DURATION)
        for collector in self.collectors:
            name = collector.name
            start = time.perf_counter()
            try:
                produced = list(collector.collect(snapshot, fold))
            except Exception as exc:  # a bug in one collector must not blank the others
                ok = False
                if name not in self._failing:
                    self._failing.add(name)
                    log.error(
                        "collector failed; its metrics are left out until it works again",
                        extra={"fields": {"collector": name, "err": repr(exc)}},
                        exc_info=True,
                    )
            else:
                ok = True
                families.extend(produced)
                if name in self._failing:
                    self._failing.discard(name)
                    log.info("collector works again", extra={"fields": {"collector": name}})
            duration.add_metric([name], time.perf_counter() - start)
            success.add_metric([name], 1.0 if ok else 0.0)
        return families, [success, duration]


def _gauge(spec: MetricSpec) -> Family:
    return Family(spec.name, spec.help, "gauge", spec.labels)


__all__ = ["Collector", "CollectorRunner", "Source", "SourceSnapshot", "Target"]
