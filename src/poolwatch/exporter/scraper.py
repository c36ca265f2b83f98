"""One scrape of a target at a time, shared by every HTTP request that wants it.

- concurrent ``/metrics`` requests await the same in-flight query (single flight);
- a request within ``min_interval`` of the last scrape gets the cached snapshot;
- a failed scrape yields a snapshot with ``up = False`` and no database metrics, promptly:
  the database layer bounds every wait by the query timeout and backs off reconnects;
- the target's collectors read the snapshot through one :class:`CollectorRunner`, so a
  failing collector costs only its own families.

One :class:`Scraper` serves one target (:mod:`poolwatch.exporter.target`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .database import DatabaseUnavailable
from .exposition import Family, render
from .target import CollectorRunner, Target

log = logging.getLogger("poolwatch.exporter.scraper")


@dataclass(frozen=True)
class Snapshot:
    """The result of one scrape: ``up`` when the server answered, ``degraded`` when it
    answered but not everything could be read (see :mod:`poolwatch.exporter.postgres`)."""

    up: bool
    families: list[Family] = field(default_factory=list)
    duration: float = 0.0
    taken_at: float = field(default_factory=time.monotonic)
    error: str | None = None
    degraded: bool = False
    #: poolwatch_exporter_collector_success / _duration_seconds, kept apart from
    #: ``families`` so that several targets' collectors can share one family each
    health: list[Family] = field(default_factory=list)
    _encoded: dict[bool, bytes] = field(default_factory=dict, repr=False, compare=False)

    def encoded(self, openmetrics: bool = False) -> bytes:
        """The families in the text format (or OpenMetrics, without ``# EOF``), encoded
        once per snapshot and format: scrapes within ``min_interval`` reuse it."""
        body = self._encoded.get(openmetrics)
        if body is None:
            body = self._encoded[openmetrics] = render(self.families, openmetrics)
        return body


class Scraper:
    """Turns HTTP scrapes of one target into at most one snapshot per ``min_interval``."""

    def __init__(
        self, target: Target[Any], *, min_interval: float, name: str | None = None
    ) -> None:
        self.target = target
        self.name = name  # logged with each transition: /probe has many scrapers
        self.runner: CollectorRunner[Any] = CollectorRunner(target.collectors)
        self.min_interval = min_interval
        self.queries = 0
        self.errors = 0
        self._last: Snapshot | None = None
        self._inflight: asyncio.Future[Snapshot] | None = None
        self._was_up: bool | None = None

    async def snapshot(self) -> Snapshot:
        """The current snapshot: cached, joined in flight, or freshly taken."""
        last = self._last
        if last is not None and time.monotonic() - last.taken_at < self.min_interval:
            return last
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._scrape())
            self._inflight.add_done_callback(self._clear)
        # shield: one impatient client that disconnects must not cancel everyone's query
        return await asyncio.shield(self._inflight)

    def _clear(self, _: object) -> None:
        self._inflight = None

    async def _scrape(self) -> Snapshot:
        start = time.monotonic()
        self.queries += 1
        try:
            taken = await self.target.source.take()
            families, health = self.runner.run_split(taken)
            snap = Snapshot(
                up=True,
                families=families,
                health=health,
                duration=time.monotonic() - start,
                degraded=taken.degraded,
            )
        except DatabaseUnavailable as exc:
            self.errors += 1
            snap = Snapshot(up=False, duration=time.monotonic() - start, error=str(exc))
        except Exception as exc:  # a bug must not take the exporter down; say what it was
            self.errors += 1
            log.exception("scrape failed unexpectedly")
            snap = Snapshot(up=False, duration=time.monotonic() - start, error=repr(exc))
        self._report(snap)
        self._last = snap
        return snap

    def _report(self, snap: Snapshot) -> None:
        """Log transitions (down, back up) once, not every scrape."""
        # pg, pgbouncer; a /probe scraper also names its target
        which = {"target": self.name or self.target.up.name.removesuffix("_up")}
        if not snap.up and self._was_up is not False:
            log.warning("scrape failed", extra={"fields": {**which, "err": snap.error}})
        elif snap.up and self._was_up is False:
            log.info("scrapes work again", extra={"fields": which})
        elif not snap.up:
            log.debug("scrape failed", extra={"fields": {**which, "err": snap.error}})
        self._was_up = snap.up
