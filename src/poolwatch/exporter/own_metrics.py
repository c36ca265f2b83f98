"""The exporter's own metrics: always served, also when the database is down.

With several targets (PostgreSQL and PgBouncer), the first one's scrape is what the
exporter-wide metrics describe (duration, errors, queries, connections, snapshot age);
every other target adds its ``up`` metric, and all targets' collectors share the
``poolwatch_exporter_collector_*`` families (:func:`merge_health`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Sequence

from .. import __version__
from ..metric_names import (
    EXPORTER_BCRYPT_CHECKS,
    EXPORTER_BUILD_INFO,
    EXPORTER_CONNECTIONS_OPENED,
    EXPORTER_DEGRADED,
    EXPORTER_QUERIES,
    EXPORTER_SCRAPE_DURATION,
    EXPORTER_SCRAPE_ERRORS,
    EXPORTER_SNAPSHOT_AGE,
)
from .basicauth import BasicAuth
from .collectors.base import counter, gauge
from .exposition import Family
from .scraper import Scraper, Snapshot


def collect_own(scraper: Scraper, snap: Snapshot) -> Iterator[Family]:
    """The target's up metric (pg_up), degraded, build info, scrape duration/errors,
    queries, connections, snapshot age."""
    up = gauge(scraper.target.up)
    up.add_metric([], 1.0 if snap.up else 0.0)
    yield up
    degraded = gauge(EXPORTER_DEGRADED)
    degraded.add_metric([], 1.0 if snap.degraded else 0.0)
    yield degraded
    info = gauge(EXPORTER_BUILD_INFO)
    info.add_metric([__version__, platform.python_version()], 1.0)
    yield info
    duration = gauge(EXPORTER_SCRAPE_DURATION)
    duration.add_metric([], snap.duration)
    yield duration
    age = gauge(EXPORTER_SNAPSHOT_AGE)
    age.add_metric([], max(0.0, time.monotonic() - snap.taken_at))
    yield age
    for spec, value in (
        (EXPORTER_SCRAPE_ERRORS, scraper.errors),
        (EXPORTER_QUERIES, scraper.queries),
        (EXPORTER_CONNECTIONS_OPENED, scraper.target.source.connections_opened),
    ):
        metric = counter(spec)
        metric.add_metric([], float(value))
        yield metric


def collect_auth(auth: BasicAuth) -> Family:
    """poolwatch_exporter_bcrypt_checks_total (with basic auth configured)."""
    checks = counter(EXPORTER_BCRYPT_CHECKS)
    checks.add_metric([], float(auth.bcrypt_checks))
    return checks


def collect_up(scraper: Scraper, snap: Snapshot) -> Family:
    """A further target's up metric (``pgbouncer_up`` next to ``pg_up``)."""
    up = gauge(scraper.target.up)
    up.add_metric([], 1.0 if snap.up else 0.0)
    return up


def merge_health(snaps: Sequence[Snapshot]) -> list[Family]:
    """The collector success/duration families of every target's snapshot, one each."""
    merged: dict[str, Family] = {}
    for snap in snaps:
        for fam in snap.health:
            into = merged.get(fam.name)
            if into is None:
                merged[fam.name] = Family(
                    fam.name, fam.documentation, fam.type, fam.label_names, fam.points
                )
            else:
                into.points.extend(fam.points)
    return list(merged.values())
