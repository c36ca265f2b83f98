"""A single background thread per process that reports connections held past the threshold.

A checkin already reports a leak it finds (cheap: one comparison); this thread catches the
ones that are *still* out, like HikariCP's leakDetectionThreshold, without a timer per
checkout. It wakes every quarter of the smallest threshold (between 50 ms and 1 s) and
exits when no tracker needs it.
"""

from __future__ import annotations

import os
import threading
import weakref

from poolwatch.instrumentation.tracker import PoolTracker


class LeakReaper:
    """Scans registered trackers for long-held connections."""

    def __init__(self) -> None:
        self._trackers: weakref.WeakSet[PoolTracker] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, tracker: PoolTracker) -> None:
        """Watch ``tracker`` (which has a leak threshold)."""
        with self._lock:
            self._trackers.add(tracker)
            self._ensure_thread()

    def remove(self, tracker: PoolTracker) -> None:
        """Stop watching ``tracker``."""
        with self._lock:
            self._trackers.discard(tracker)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="poolwatch-leak-detector", daemon=True
        )
        self._thread.start()

    def _interval(self) -> float | None:
        thresholds = [
            t.leak_threshold for t in list(self._trackers) if t.leak_threshold is not None
        ]
        if not thresholds:
            return None
        return min(1.0, max(0.05, min(thresholds) / 4))

    def _run(self) -> None:
        while True:
            with self._lock:
                interval = self._interval()
                if interval is None:
                    self._thread = None
                    return
            if self._stop.wait(interval):
                return
            for tracker in list(self._trackers):
                try:
                    tracker.scan_for_leaks()
                except Exception:
                    tracker.internal_error()

    def after_fork_in_child(self) -> None:
        """Threads do not survive fork(): start a fresh one if anything is watched."""
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        if len(self._trackers):
            self._ensure_thread()


reaper = LeakReaper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reaper.after_fork_in_child)
