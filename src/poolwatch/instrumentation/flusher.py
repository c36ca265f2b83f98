"""One background thread per process that copies pool bookkeeping into slower sinks.

The hot path (checkout / checkin) only updates :class:`~poolwatch.instrumentation.stats.PoolStats`
or appends to a buffer. Sinks that are expensive to write (prometheus_client's mmap files in
multiprocess mode, the OpenTelemetry SDK's synchronous histograms) are fed from here every
``POOLWATCH_FLUSH_INTERVAL`` seconds (default 1), when a sink asks for an early flush
(:meth:`Flusher.wake`), and synchronously before a scrape (:meth:`Flusher.flush_now`).

Fork safety: ``fork()`` while this thread is mid-flush would copy a held lock (ours or
prometheus_client's) into the child, which would then deadlock on its first write. A
``before`` fork handler therefore waits for a running flush to finish and holds the flush
lock across the fork; the child gets fresh locks and a fresh thread.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol

logger = logging.getLogger("poolwatch")

DEFAULT_INTERVAL = 1.0


class FlushTask(Protocol):
    """Something the flusher calls periodically."""

    def flush(self) -> None:
        """Copy pending values into the sink; must not raise for long (errors are logged)."""


def interval_from_env() -> float:
    """``POOLWATCH_FLUSH_INTERVAL`` in seconds (default 1.0, minimum 0.01)."""
    raw = os.environ.get("POOLWATCH_FLUSH_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        logger.warning("ignoring POOLWATCH_FLUSH_INTERVAL=%r (not a number)", raw)
        value = DEFAULT_INTERVAL
    return max(0.01, value)


class Flusher:
    """Runs every registered task's ``flush()`` periodically on one daemon thread."""

    def __init__(self) -> None:
        self._tasks: list[FlushTask] = []
        self._lock = threading.Lock()  # guards _tasks and _thread
        self._flush_lock = threading.Lock()  # held while flushing and across fork()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval = interval_from_env()

    def add(self, task: FlushTask) -> None:
        """Flush ``task`` periodically from now on (starts the thread if needed)."""
        with self._lock:
            if task not in self._tasks:
                self._tasks.append(task)
            self._ensure_thread()

    def remove(self, task: FlushTask) -> None:
        """Stop flushing ``task`` (the caller flushes it one last time if it wants)."""
        with self._lock:
            if task in self._tasks:
                self._tasks.remove(task)

    def wake(self) -> None:
        """Ask for a flush soon (cheap: sets an event)."""
        self._wake.set()

    def flush_now(self) -> None:
        """Flush every task synchronously in the calling thread."""
        with self._flush_lock:
            self._flush_all()

    def _flush_all(self) -> None:
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            try:
                task.flush()
            except Exception:
                logger.warning("background flush of %r failed", task, exc_info=True)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="poolwatch-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                if not self._tasks:
                    self._thread = None
                    return
            with self._flush_lock:
                self._flush_all()

    # --- fork handlers (registered by poolwatch.instrumentation.forking) -----------------

    def before_fork(self) -> None:
        """Wait for a running flush to finish; hold the flush lock across fork()."""
        self._flush_lock.acquire()

    def after_fork_in_parent(self) -> None:
        """Release what :meth:`before_fork` took."""
        self._flush_lock.release()

    def after_fork_in_child(self) -> None:
        """The thread did not survive fork(): fresh locks, and a new thread if needed."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        if self._tasks:
            self._ensure_thread()


flusher = Flusher()
