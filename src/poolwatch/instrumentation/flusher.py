"""One background thread per process for everything poolwatch does off the hot path.

The hot path (checkout / checkin) only updates :class:`~poolwatch.instrumentation.stats.PoolStats`
or appends to a buffer. Two kinds of periodic work run here, on one daemon thread
("poolwatch-flusher"):

* sinks that are expensive to write (prometheus_client's mmap files in multiprocess mode, the
  OpenTelemetry SDK's synchronous histograms), fed every ``POOLWATCH_FLUSH_INTERVAL`` seconds
  (default 1), when a sink asks for an early flush (:meth:`Flusher.wake`), and synchronously
  before a scrape (:meth:`Flusher.flush_now`);
* tasks with a cadence of their own (the leak scan, :mod:`~poolwatch.instrumentation.leaks`),
  passed to :meth:`Flusher.add` with an ``interval`` callable.

The thread starts with the first task and ends once the last one is removed, so nothing runs
in a process where nothing is instrumented.

Fork safety: ``fork()`` while this thread is mid-flush would copy a held lock (ours or
prometheus_client's) into the child, which would then deadlock on its first write. A
``before`` fork handler therefore waits for a running flush to finish and holds the flush
lock across the fork; the child gets fresh locks and a fresh thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

logger = logging.getLogger("poolwatch")

DEFAULT_INTERVAL = 1.0


class FlushTask(Protocol):
    """Something the flusher calls periodically."""

    def flush(self) -> None:
        """Copy pending values into the sink; must not raise for long (errors are logged)."""


#: Seconds until a task's next run, asked after each run; ``None`` when it has nothing left to
#: do (the flusher then drops it).
Interval = Callable[[], "float | None"]


def interval_from_env() -> float:
    """``POOLWATCH_FLUSH_INTERVAL`` in seconds (default 1.0, minimum 0.01)."""
    raw = os.environ.get("POOLWATCH_FLUSH_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        logger.warning("ignoring POOLWATCH_FLUSH_INTERVAL=%r (not a number)", raw)
        value = DEFAULT_INTERVAL
    return max(0.01, value)


@dataclass(eq=False)
class _Entry:
    task: FlushTask
    interval: Interval | None  # None: the flusher's own interval, and woken by wake()
    due: float


class Flusher:
    """Runs every registered task's ``flush()`` periodically on one daemon thread."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()  # guards _entries and _thread
        self._flush_lock = threading.Lock()  # held while flushing and across fork()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval = interval_from_env()

    def add(self, task: FlushTask, interval: Interval | None = None) -> None:
        """Flush ``task`` periodically from now on (starts the thread if needed).

        Without ``interval`` the task runs every :attr:`interval` seconds and on :meth:`wake`;
        with it, ``interval()`` seconds after it was added and after each run.
        """
        first = self.interval if interval is None else interval()
        if first is None:
            return
        with self._lock:
            if not any(entry.task is task for entry in self._entries):
                self._entries.append(_Entry(task, interval, monotonic() + first))
            self._ensure_thread()

    def remove(self, task: FlushTask) -> None:
        """Stop flushing ``task`` (the caller flushes it one last time if it wants)."""
        with self._lock:
            self._entries = [entry for entry in self._entries if entry.task is not task]
            if not self._entries:
                self._wake.set()  # let the thread see it has nothing left to do, and end

    def wake(self) -> None:
        """Ask for an early flush of the sinks (cheap: sets an event)."""
        self._wake.set()

    def flush_now(self) -> None:
        """Run every task synchronously in the calling thread."""
        with self._lock:
            entries = list(self._entries)
        with self._flush_lock:
            for entry in entries:
                self._run_task(entry.task)

    def _run_task(self, task: FlushTask) -> None:
        try:
            task.flush()
        except Exception:
            logger.warning("background flush of %r failed", task, exc_info=True)

    def _run_due(self, woken: bool) -> None:
        """Run the tasks that are due (and the sinks when woken); schedule their next run."""
        with self._lock:
            entries = list(self._entries)
        done: list[_Entry] = []
        now = monotonic()
        for entry in entries:
            if not (entry.due <= now or (woken and entry.interval is None)):
                continue
            self._run_task(entry.task)
            # asked outside self._lock: a task's interval may take the task's own lock
            following = self.interval if entry.interval is None else entry.interval()
            if following is None:
                done.append(entry)
            else:
                entry.due = monotonic() + following
        if done:
            with self._lock:
                self._entries = [entry for entry in self._entries if entry not in done]

    def _seconds_to_next_run(self) -> float:
        with self._lock:
            if not self._entries:
                return 0.0
            return max(0.0, min(entry.due for entry in self._entries) - monotonic())

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="poolwatch-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self._seconds_to_next_run())
            self._wake.clear()
            with self._lock:
                if not self._entries:
                    self._thread = None
                    return
            with self._flush_lock:
                self._run_due(woken)

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
        if self._entries:
            self._ensure_thread()


flusher = Flusher()
