"""The leak scan: reports connections *still* held past the threshold.

A checkin already reports a leak it finds (cheap: one comparison); this scan catches the
ones that are still out, like HikariCP's leakDetectionThreshold, without a timer per
checkout. It is a task of the background flusher
(:mod:`~poolwatch.instrumentation.flusher`) that runs every quarter of the smallest
threshold (between 50 ms and 1 s) and is dropped when no tracker needs it.
"""

from __future__ import annotations

import threading
import weakref

from poolwatch.instrumentation import forking
from poolwatch.instrumentation.flusher import flusher
from poolwatch.instrumentation.tracker import PoolTracker

MIN_INTERVAL = 0.05
MAX_INTERVAL = 1.0


class LeakScan:
    """Scans registered trackers for long-held connections, as a task of the flusher."""

    def __init__(self) -> None:
        self._trackers: weakref.WeakSet[PoolTracker] = weakref.WeakSet()
        # re-entrant: add() asks interval() while holding it, so that an add() and the
        # removal of the last tracker cannot interleave between the set and the flusher
        self._lock = threading.RLock()

    def add(self, tracker: PoolTracker) -> None:
        """Watch ``tracker`` (which has a leak threshold)."""
        with self._lock:
            self._trackers.add(tracker)
            flusher.add(self, interval=self.interval)

    def remove(self, tracker: PoolTracker) -> None:
        """Stop watching ``tracker``; the last one removed takes the scan off the flusher."""
        with self._lock:
            self._trackers.discard(tracker)
            if not self._trackers:
                flusher.remove(self)

    def interval(self) -> float | None:
        """Seconds to the next scan; ``None`` when no tracker is left (garbage collected)."""
        thresholds = [t.leak_threshold for t in self._watched() if t.leak_threshold is not None]
        if not thresholds:
            return None
        return min(MAX_INTERVAL, max(MIN_INTERVAL, min(thresholds) / 4))

    def flush(self) -> None:
        """Scan every watched tracker once (a tracker's own failure is counted, not raised)."""
        for tracker in self._watched():
            try:
                tracker.scan_for_leaks()
            except Exception:
                tracker.internal_error()

    def _watched(self) -> list[PoolTracker]:
        with self._lock:
            return list(self._trackers)

    def after_fork_in_child(self) -> None:
        """A lock another parent thread held at fork() would stay held: a fresh one."""
        self._lock = threading.RLock()

    def after_fork_in_parent(self) -> None:
        """Nothing to do in the parent."""


leak_scan = LeakScan()
forking.watch_sink(leak_scan)
