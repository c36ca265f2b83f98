"""Fold dead worker processes' counter, histogram and summary files into one archive per type.

prometheus_client's multiprocess mode keeps one file per type and pid. ``mark_process_dead``
removes only live-gauge files, so with every worker replaced (gunicorn ``--max-requests``,
OOM kills, deploys) the directory grows and every scrape reads every file ever written
(client_python #367, #204, #275). Here the files of pids that no longer exist are merged
into ``counter_archive.db``, ``histogram_archive.db`` and ``summary_archive.db`` (ordinary
prometheus_client files, so any reader sums them like the others) and removed: the
directory holds the live workers' files plus at most three archives, whatever the churn.

The two reasons client_python's maintainers refused compaction (PR #518), and the answers:

* **A scrape at the same moment in another worker** would see a file's values twice (already
  in the archive, not yet removed) or not at all: a counter that goes back is a reset to
  Prometheus. Every poolwatch scrape reads the directory under a shared ``flock`` on
  ``.poolwatch.lock`` (:class:`LockedMultiProcessCollector`) and a fold runs under the
  exclusive lock, taken without waiting (a worker that finds it taken skips folding this
  time). A scrape therefore sees the directory either before or after a fold, never halfway.
  Readers that do not take the lock (a plain ``MultiProcessCollector`` elsewhere) must not
  share the directory with folding: ``POOLWATCH_FOLD_DEAD_PROCESSES=0`` turns it off.
* **pid reuse**: a new process with a dead worker's pid opens (and keeps adding to) the dead
  one's file. A file is taken out of the directory by a rename, and the pid is checked again
  *after* the rename: if a process with that pid exists now, the file is linked back under
  its name (it may be that process's file now) unless that process already created a fresh
  file of its own, in which case the renamed one holds dead data only. prometheus_client
  writes a pid's file only from the process whose ``os.getpid()`` is that pid, so a file
  whose pid does not exist after the rename has no writer left.

Crash safety: a fold writes the merged archive to a temporary file, records the
temporary's inode and the sources in an intent file, renames the temporary over the
archive (the commit) and then deletes the sources. A fold interrupted anywhere is finished
or undone by the next one: sources whose intent's inode is the archive's were committed and
are deleted; otherwise they are folded again from scratch.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from poolwatch.instrumentation import forking
from poolwatch.pids import pid_exists as pid_exists  # also archive.pid_exists (multiprocess.py)

logger = logging.getLogger("poolwatch")

LOCK_FILE = ".poolwatch.lock"
STAGING_DIR = ".poolwatch-fold"  # not matched by the readers' "*.db" glob
FOLDED_TYPES = ("counter", "histogram", "summary")
MAX_FILES_PER_FOLD = 256  # per type and fold: bounds how long a fold holds scrapes back
_DEAD_FILE = re.compile(r"^(counter|histogram|summary)_(\d+)\.db$")


@contextlib.contextmanager
def directory_lock(path: str, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """``flock`` on the directory's lock file; yields False when ``wait=False`` and taken.

    A directory this process cannot create the lock file in is read without the lock
    (nothing can be folded there either: a fold needs to rename files).
    """
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield not exclusive
        return
    _open_lock_fds.add(fd)
    try:
        flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, flags if wait else flags | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        _open_lock_fds.discard(fd)
        os.close(fd)  # releases the lock


# A child forked while this process holds the lock would keep it (flock belongs to the open
# file, which the child shares) for as long as it lives: every fold and scrape would wait.
_open_lock_fds: set[int] = set()


class _InheritedLocks:
    """Closes, in a forked child, the lock files this process had open at fork() (run by
    the one at-fork path, :mod:`~poolwatch.instrumentation.forking`, before the child's
    flusher thread starts)."""

    def after_fork_in_child(self) -> None:
        for fd in list(_open_lock_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        _open_lock_fds.clear()

    def after_fork_in_parent(self) -> None:
        """Nothing to do in the parent."""


_inherited_locks = _InheritedLocks()
forking.watch_sink(_inherited_locks)


class LockedMultiProcessCollector(MultiProcessCollector):
    """prometheus_client's ``MultiProcessCollector`` reading under the directory's shared lock."""

    def __init__(self, registry: CollectorRegistry | None, path: str | None = None) -> None:
        super().__init__(registry, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        """Every process's metrics, merged, as of one consistent state of the directory."""
        with directory_lock(self._path, exclusive=False):
            files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _has_header(f)]
            return list(self.merge(files, accumulate=True))  # type: ignore[no-untyped-call]


def _has_header(filename: str) -> bool:
    """False for a file a starting process has created but not sized yet (no samples in it).

    prometheus_client creates a file empty and then extends it; a scrape reading it in
    between fails on the empty header (upstream's race, met at every worker start).
    """
    try:
        return os.stat(filename).st_size >= 8
    except FileNotFoundError:  # a live-gauge file removed by mark_process_dead
        return False


def fold_dead_processes(path: str) -> int:
    """Fold the files of pids that no longer exist into the archives; returns files folded.

    Returns 0 at once when another process is folding or scraping right now, or when there
    is nothing to fold (the common case: one directory listing, one pid check per file).
    """
    if not _anything_to_fold(path):
        return 0
    with directory_lock(path, exclusive=True, wait=False) as locked:
        if not locked:
            return 0
        staging = os.path.join(path, STAGING_DIR)
        os.makedirs(staging, exist_ok=True)
        folded = 0
        for typ in FOLDED_TYPES:
            _recover(path, staging, typ)
            staged = _stage_dead_files(path, staging, typ)
            if staged:
                _commit(path, staging, typ, staged)
                folded += len(staged)
        return folded


def _anything_to_fold(path: str) -> bool:
    """A dead pid's file, or an interrupted fold's leftovers (checked again under the lock)."""
    try:
        if os.listdir(os.path.join(path, STAGING_DIR)):
            return True
    except FileNotFoundError:
        pass
    checked: dict[int, bool] = {}
    for name in os.listdir(path):
        match = _DEAD_FILE.match(name)
        if match is not None:
            pid = int(match.group(2))
            if pid not in checked:
                checked[pid] = pid_exists(pid)
            if not checked[pid]:
                return True
    return False


def _archive(path: str, typ: str) -> str:
    return os.path.join(path, f"{typ}_archive.db")


def _intent(staging: str, typ: str) -> str:
    return os.path.join(staging, f"{typ}.intent")


def _recover(path: str, staging: str, typ: str) -> None:
    """Finish or undo a fold of ``typ`` that was interrupted (see the module docstring)."""
    intent_path = _intent(staging, typ)
    try:
        with open(intent_path) as f:
            intent = json.load(f)
    except FileNotFoundError:
        intent = None
    except ValueError:  # torn intent: it was never renamed into place, so nothing committed
        intent = None
    if intent is not None:
        try:
            committed = os.stat(_archive(path, typ)).st_ino == intent["inode"]
        except FileNotFoundError:
            committed = False
        if committed:
            for name in intent["sources"]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(staging, name))
        os.unlink(intent_path)
    # Only now: while a temporary exists its inode cannot be reused by another file.
    for leftover in glob.glob(os.path.join(staging, f"{typ}_archive.*.tmp")):
        os.unlink(leftover)
    for leftover in glob.glob(os.path.join(staging, "gauge_live*.*.db")):
        os.unlink(leftover)  # a dead live-gauge file whose removal was interrupted


def _stage_dead_files(path: str, staging: str, typ: str) -> list[str]:
    """Move dead pids' files of ``typ`` into the staging directory (plus earlier leftovers)."""
    staged = sorted(glob.glob(os.path.join(staging, f"{typ}_*.*.db")))
    for name in sorted(os.listdir(path)):
        if len(staged) >= MAX_FILES_PER_FOLD:
            break
        match = _DEAD_FILE.match(name)
        if match is None or match.group(1) != typ:
            continue
        pid = int(match.group(2))
        if pid_exists(pid):
            continue
        claimed = claim_dead_file(os.path.join(path, name), pid, staging)
        if claimed is not None:
            staged.append(claimed)
    return staged


def claim_dead_file(source: str, pid: int, staging: str) -> str | None:
    """Move the file of ``pid`` (found dead) into ``staging``; its new path, or None.

    None when it is gone already, or when a process with that pid exists once the file is
    out of the way: then the file is put back (it may be that new process's file), unless
    that process already created a fresh one, in which case the moved file is dead data.
    """
    base = os.path.basename(source)[: -len(".db")]
    target = os.path.join(staging, f"{base}.{uuid.uuid4().hex}.db")
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return None
    if pid_exists(pid):  # the pid was reused between the caller's check and the rename
        try:
            os.link(target, source)
        except FileExistsError:
            return target  # the new process created its own file
        os.unlink(target)
        return None
    return target


def remove_dead_live_gauges(path: str, pid: int) -> None:
    """``mark_process_dead(pid)`` safe against pid reuse (see :func:`claim_dead_file`)."""
    staging = os.path.join(path, STAGING_DIR)
    os.makedirs(staging, exist_ok=True)
    for source in glob.glob(os.path.join(path, f"gauge_live*_{pid}.db")):
        claimed = claim_dead_file(source, pid, staging)
        if claimed is not None:
            os.unlink(claimed)


def _commit(path: str, staging: str, typ: str, staged: list[str]) -> None:
    archive = _archive(path, typ)
    sources = [archive, *staged] if os.path.exists(archive) else list(staged)
    merged = MultiProcessCollector.merge(sources, accumulate=False)  # type: ignore[no-untyped-call]
    tmp = os.path.join(staging, f"{typ}_archive.{uuid.uuid4().hex}.tmp")
    _write(tmp, merged)
    intent = {"inode": os.stat(tmp).st_ino, "sources": [os.path.basename(s) for s in staged]}
    intent_tmp = _intent(staging, typ) + ".tmp"
    with open(intent_tmp, "w") as f:
        json.dump(intent, f)
    os.rename(intent_tmp, _intent(staging, typ))
    os.rename(tmp, archive)  # the commit: readers now see the archive with the dead files in it
    for source in staged:
        os.unlink(source)
    os.unlink(_intent(staging, typ))


def _write(filename: str, metrics: Iterable[Any]) -> None:
    """Write merged (non-cumulative) samples as a prometheus_client multiprocess file."""
    out = MmapedDict(filename)  # type: ignore[no-untyped-call]
    try:
        for metric in metrics:
            for sample in metric.samples:
                labels = sample.labels
                key = mmap_key(
                    metric.name, sample.name, list(labels), list(labels.values()),
                    metric.documentation,
                )  # fmt: skip
                out.write_value(key, sample.value, 0.0)  # type: ignore[no-untyped-call]
    finally:
        out.close()  # type: ignore[no-untyped-call]
