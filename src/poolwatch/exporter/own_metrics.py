"""The exporter's own metrics: always served, also when the database is down."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator

from .. import __version__
from ..metric_names import (
    EXPORTER_BUILD_INFO,
    EXPORTER_CONNECTIONS_OPENED,
    EXPORTER_DEGRADED,
    EXPORTER_QUERIES,
    EXPORTER_SCRAPE_DURATION,
    EXPORTER_SCRAPE_ERRORS,
    EXPORTER_SNAPSHOT_AGE,
)
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
