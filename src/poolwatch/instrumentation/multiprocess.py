"""prometheus_client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): many worker processes.

In multiprocess mode a scrape lands on one worker and prometheus_client's
``MultiProcessCollector`` aggregates what every process *stored* in its mmap files; custom
collectors (poolwatch's scrape-time :class:`~poolwatch.instrumentation.prometheus.PoolCollector`)
are per-process and not aggregated. So each process runs a :class:`MultiprocessWriter` per
pool on the background flusher (every ``POOLWATCH_FLUSH_INTERVAL`` s, default 1, and right
before a scrape served by :func:`poolwatch.metrics_app`): it copies the live pool gauges and
the *deltas* of the counters and histograms since the last flush into prometheus_client
metrics. Checkouts pay nothing extra; gauges of other workers are at most one flush
interval stale (see docs/multiprocess.md).

Gauge aggregation across processes (``multiprocess_mode``):

* ``livesum``: size, max_overflow, checked_out, idle, overflow, waiting. The sum over
  workers is the number that matters (the connection budget is per worker x workers).
* ``livemax``: timeout_seconds and through_pgbouncer (configuration, the same everywhere:
  a sum would read 4 for 4 workers), oldest_checkout_seconds (the oldest checkout anywhere
  is what leak alerts want) and the ``worker_max`` companions of utilization / checked_out /
  waiting (the busiest worker, which the sums hide).

Every counter and histogram series of a pool is written at 0 when it is instrumented, so
the first event is an increase Prometheus can see. Per-route series (RouteMiddleware) appear
with their route's first checkout; the connections a route holds now are ``livesum``.
The prometheus_client metrics and the delta writes live in
:mod:`~poolwatch.instrumentation.multiprocess_metrics`.

Live gauges of a dead worker disappear only through
``prometheus_client.multiprocess.mark_process_dead(pid)``: gunicorn's ``child_exit`` hook,
or :func:`mark_dead_processes` (called by :func:`poolwatch.metrics_app` at each scrape),
which also folds the dead worker's counter and histogram files into the archive
(:mod:`~poolwatch.instrumentation.archive`).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import threading
from time import perf_counter

from prometheus_client import CollectorRegistry, values

from poolwatch import metric_names as m
from poolwatch.instrumentation import archive
from poolwatch.instrumentation.archive import (
    LockedMultiProcessCollector,
    directory_lock,
    fold_dead_processes,
    remove_dead_live_gauges,
)
from poolwatch.instrumentation.flusher import flusher
from poolwatch.instrumentation.multiprocess_metrics import RouteSeries, add_histogram, get_metrics
from poolwatch.instrumentation.prometheus import pool_gauges
from poolwatch.instrumentation.stats import COUNTER_FIELDS, HISTOGRAM_FIELDS, StatsSnapshot
from poolwatch.instrumentation.tracker import PoolTracker

logger = logging.getLogger("poolwatch")

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"

_COUNTERS = {spec.name: attr for spec, attr in COUNTER_FIELDS}
_HISTOGRAMS = {spec.name: attr for spec, attr in HISTOGRAM_FIELDS}


def multiprocess_dir() -> str | None:
    """The multiprocess directory, when prometheus_client runs in multiprocess mode."""
    return os.environ.get(ENV_VAR) or None


def directory_problem(path: str | None = None) -> str | None:
    """One line saying what is wrong with the multiprocess directory and how to fix it.

    None when the directory exists and this process can create files in it.
    """
    path = path or multiprocess_dir()
    if path is None:
        return f"{ENV_VAR} is not set"
    fix = f"create it before the server starts: mkdir -p {path}"
    if not os.path.exists(path):
        return f"{ENV_VAR}={path} does not exist; {fix}"
    if not os.path.isdir(path):
        return f"{ENV_VAR}={path} is not a directory; point it at an empty directory ({fix})"
    if not os.access(path, os.W_OK | os.X_OK):
        return (
            f"{ENV_VAR}={path} is not writable by this process (uid {os.getuid()}); "
            f"chown or chmod it, or use another directory ({fix})"
        )
    return None


def check_available(*, explicit: bool) -> bool:
    """Whether multiprocess mode can work in this process; never raises for the environment.

    ``explicit`` (``multiprocess=True``) without ``PROMETHEUS_MULTIPROC_DIR`` is a programming
    error (ValueError). Problems of the environment are one logged line each: a variable set
    after prometheus_client was imported cannot be repaired (False: the pool is exported by
    this process alone); a missing or unwritable directory can (True: the writer waits and
    starts writing once the directory is usable, see :class:`MultiprocessWriter`).
    """
    path = multiprocess_dir()
    if path is None:
        if explicit:
            raise ValueError(
                f"multiprocess=True needs {ENV_VAR} set (to an empty, writable directory) "
                "before the process starts"
            )
        return False
    if not getattr(values.ValueClass, "_multiprocess", False):
        _log_directory_problem(
            f"{ENV_VAR} was set after prometheus_client was imported (this process's pools "
            "are exported by this process alone); set it in the environment before the "
            "server starts"
        )
        return False
    problem = directory_problem(path)
    if problem is not None:
        _log_directory_problem(problem)
    return True


_logged_problems: set[str] = set()


def _log_directory_problem(problem: str) -> None:
    if problem not in _logged_problems:  # once per process and problem, not per pool/flush
        _logged_problems.add(problem)
        logger.error("pool metrics are not written: %s", problem)


class MultiprocessWriter:
    """Copies one pool's state into this process's multiprocess files, off the hot path.

    Every counter and histogram of the pool (each invalidation reason too) is written at 0
    as soon as the directory is usable, so ``increase()`` and ``rate()`` see the first event
    (a series born at 1 has no earlier sample to increase from). A missing or unwritable
    directory is logged once; the writer retries at every flush and starts when it is fixed.
    """

    def __init__(self, tracker: PoolTracker) -> None:
        self.tracker = tracker
        self._metrics = get_metrics()
        self._routes = RouteSeries(self._metrics, tracker.name)
        self._last: StatsSnapshot | None = None
        self._last_gauges: dict[str, float] = {}
        self._lock = threading.Lock()
        self._ready = False  # this pool's zero series exist in the directory
        # A process that forked workers before using its pool (gunicorn --preload master)
        # does not count that pool's capacity; it reports again once it checks out.
        self.dormant = False
        with self._lock:
            self._ensure_series()

    def __repr__(self) -> str:
        return f"<MultiprocessWriter pool={self.tracker.name!r}>"

    def _ensure_series(self) -> bool:
        """Create every counter/histogram series of the pool at 0; False if not possible."""
        if self._ready:
            return True
        problem = directory_problem()
        if problem is not None:
            _log_directory_problem(problem)
            return False
        label = self.tracker.name
        try:
            for counter in self._metrics.counters.values():
                counter.labels(label)
            for reason in m.INVALIDATION_REASONS:
                self._metrics.invalidations.labels(label, reason)
            for histogram in self._metrics.histograms.values():
                histogram.labels(label)
        except OSError as exc:
            _log_directory_problem(directory_problem() or f"{ENV_VAR}: {exc}")
            return False
        if _logged_problems:
            logger.info("pool %r: writing multiprocess metrics now", label)
        self._ready = True
        return True

    def flush(self) -> None:
        """Write gauges and counter/histogram deltas since the previous flush."""
        tracker = self.tracker
        if tracker.closed or tracker.engine is None:
            return
        with self._lock:
            if not self._ensure_series():
                return  # deltas accumulate in the stats and are written once it works
            snap = tracker.stats.snapshot(perf_counter())
            gauges = self._live_gauges(snap)
            try:
                self._write_gauges(gauges)
                self._write_deltas(snap)
            except OSError as exc:  # the directory went away under a running server
                self._ready = False
                self._last_gauges = {}
                self._routes.forget_gauges()
                _log_directory_problem(directory_problem() or f"{ENV_VAR}: {exc}")
                return
            self._last = snap

    def _live_gauges(self, snap: StatsSnapshot) -> dict[str, float]:
        if self.dormant and snap.checkouts == 0:
            return {name: 0.0 for name in self._last_gauges}
        self.dormant = False
        gauges = pool_gauges(self.tracker)
        gauges[m.POOL_OLDEST_CHECKOUT_SECONDS.name] = snap.oldest_checkout_age
        return gauges

    def _write_gauges(self, gauges: dict[str, float]) -> None:
        label = self.tracker.name
        for name, value in gauges.items():
            if self._last_gauges.get(name) != value:
                self._metrics.gauges[name].labels(label).set(value)
                self._last_gauges[name] = value

    def _write_deltas(self, snap: StatsSnapshot) -> None:
        label = self.tracker.name
        last = self._last
        for name, attr in _COUNTERS.items():
            delta = getattr(snap, attr) - (getattr(last, attr) if last is not None else 0)
            if delta > 0:
                self._metrics.counters[name].labels(label).inc(delta)
        for reason, count in snap.invalidations.items():
            delta = count - (last.invalidations.get(reason, 0) if last is not None else 0)
            if delta > 0:
                self._metrics.invalidations.labels(label, reason).inc(delta)
        for name, attr in _HISTOGRAMS.items():
            before = getattr(last, attr) if last is not None else None
            child = self._metrics.histograms[name].labels(label)
            add_histogram(child, getattr(snap, attr), before)
        self._routes.write(snap.routes)

    def close(self) -> None:
        """Final flush, then zero this process's live gauges for the pool."""
        try:
            self.flush()
        finally:
            with self._lock:
                with contextlib.suppress(OSError):
                    for name in list(self._last_gauges):
                        self._metrics.gauges[name].labels(self.tracker.name).set(0)
                    self._routes.zero_gauges()
                self._last_gauges.clear()

    # --- fork ----------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """The child writes its own files from zero (prometheus_client switches files)."""
        self._lock = threading.Lock()
        self._last = None
        self._last_gauges = {}
        self._routes.reset()
        self.dormant = False

    def after_fork_in_parent(self) -> None:
        """A parent that forked before using the pool stops counting its capacity."""
        with self._lock:
            stats = self.tracker.stats
            with stats.lock:  # successful checkouts, as _live_gauges counts them
                used = stats.successful_checkouts() > 0
            if not used:
                self.dormant = True
        flusher.wake()


_PID_FILE = re.compile(r"_(\d+)\.db$")


def mark_dead_processes(path: str | None = None) -> list[int]:
    """``mark_process_dead`` for every pid in the multiprocess directory that is not running.

    For servers without a child-exit hook (``uvicorn --workers``). A pid is dead when
    ``os.kill(pid, 0)`` says it does not exist; only use this when the directory is not
    shared with processes in another PID namespace (another container). Unlike
    ``mark_process_dead`` it leaves the files alone when the pid turns out to be reused by
    a new process (:func:`~poolwatch.instrumentation.archive.claim_dead_file`). Returns the
    pids.
    """
    path = path or multiprocess_dir()
    if path is None:
        return []
    pids: set[int] = set()
    for filename in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _PID_FILE.search(filename)
        if match:
            pids.add(int(match.group(1)))
    dead = [pid for pid in sorted(pids) if not archive.pid_exists(pid)]
    if not dead:
        return dead
    with directory_lock(path, exclusive=True):  # not while a fold tidies the staging area
        for pid in dead:
            try:
                remove_dead_live_gauges(path, pid)  # mark_process_dead, safe against pid reuse
            except OSError:
                logger.debug("removing the live gauges of pid %d failed", pid, exc_info=True)
    return dead


class ScrapeUnavailable(Exception):
    """The multiprocess directory cannot be read; ``str()`` is one line with the fix."""


def prepare_scrape() -> None:
    """Before a multiprocess scrape: drop dead workers' live gauges, fold their other files
    into the archive (:mod:`~poolwatch.instrumentation.archive`), flush this process."""
    path = multiprocess_dir()
    if path is not None and directory_problem(path) is None:
        mark_dead = os.environ.get("POOLWATCH_MARK_DEAD_PROCESSES", "1") != "0"
        if mark_dead:
            mark_dead_processes(path)
        # Folding trusts the same pid check: off with it unless asked for (gunicorn's
        # child_exit marks the dead, the pids are still this namespace's).
        fold = os.environ.get("POOLWATCH_FOLD_DEAD_PROCESSES", "1" if mark_dead else "0")
        if fold != "0":
            try:
                fold_dead_processes(path)
            except OSError:
                logger.warning("folding dead workers' metric files failed", exc_info=True)
    flusher.flush_now()


def scrape_registry() -> CollectorRegistry:
    """A fresh registry aggregating every worker's files, read under the directory lock.

    Raises :class:`ScrapeUnavailable` (logged once) when the directory is unusable.
    """
    problem = directory_problem()
    if problem is not None:
        _log_directory_problem(problem)
        raise ScrapeUnavailable(problem)
    prepare_scrape()
    registry = CollectorRegistry()
    LockedMultiProcessCollector(registry)
    return registry
