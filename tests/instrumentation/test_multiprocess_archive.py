"""Dead workers' counter, histogram and summary files folded into a bounded archive.

Real worker processes (tests/apps/pw_metrics_writer.py: poolwatch on real PostgreSQL plus the
app's own prometheus_client metrics) write a multiprocess directory and die; the fold must
keep every total exactly and leave the live workers' files plus one archive per type. The
two hazards client_python's maintainers named (PR #518) are tested with real processes: a
scrape in another process during a stream of folds (pw_churn.py + pw_scrape_loop.py) never
sees a total go down or a file vanish, and a pid reused by a new process keeps its file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolwatch.instrumentation import archive
from poolwatch.instrumentation.archive import (
    LockedMultiProcessCollector,
    directory_lock,
    fold_dead_processes,
)
from poolwatch.instrumentation.multiprocess import mark_dead_processes
from support import PgTarget, skip_or_fail, until

APPS = Path(__file__).parent.parent / "apps"
NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def totals(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the directory as a scrape aggregates it."""
    collector = LockedMultiProcessCollector(None, str(path))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in collector.collect()
        for s in metric.samples
    }


def db_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.db"))


class Writer:
    """One real worker process writing into ``path``."""

    def __init__(self, path: Path, pg: PgTarget, checkouts: int, *, wait: bool = True) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}
        self.proc = subprocess.Popen(
            [sys.executable, str(APPS / "pw_metrics_writer.py"), pg.url("psycopg"), str(checkouts)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.pid = self.proc.pid
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line

    def command(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def exit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


@pytest.fixture
def mpdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "multiproc"
    path.mkdir()
    yield path


def test_fold_keeps_every_total_and_bounds_the_directory(mpdir: Path, pg: PgTarget) -> None:
    live = Writer(mpdir, pg, checkouts=2)
    try:
        for round_ in range(2):
            dead = [Writer(mpdir, pg, checkouts=3 + i) for i in range(3)]
            dead[0].exit()  # a clean exit
            for writer in dead[1:]:
                writer.kill()  # and SIGKILLs: the files stay behind either way
            mark_dead_processes(str(mpdir))  # the scrape drops their live gauges first
            before = totals(mpdir)
            assert before[("app_requests_total", (("route", "/a"),))] == 2 + round_ * 12 + 12
            assert f"counter_{dead[1].pid}.db" in db_files(mpdir)

            assert fold_dead_processes(str(mpdir)) == 3 * 3  # counter, histogram, summary each
            after = totals(mpdir)
            assert after == before  # every sample, exactly (app metrics and poolwatch's)
            names = db_files(mpdir)
            assert not [n for n in names if any(f"_{w.pid}.db" in n for w in dead)], names
            assert {"counter_archive.db", "histogram_archive.db", "summary_archive.db"} <= set(
                names
            )
            # Only the live worker's files and the archives: bounded whatever the churn.
            assert all(n.endswith(f"_{live.pid}.db") or "_archive" in n for n in names), names
        assert fold_dead_processes(str(mpdir)) == 0  # nothing more to do
        # The live worker keeps counting on top of the archive.
        assert live.command("inc 5") == "ok"
        assert totals(mpdir)[("app_requests_total", (("route", "/a"),))] == 2 + 24 + 5
        pool_checkouts = ("sqlalchemy_pool_checkouts_total", (("pool", "w"),))
        assert totals(mpdir)[pool_checkouts] == 2 + (3 + 4 + 5) * 2
    finally:
        live.kill()


def test_a_scrape_holding_the_directory_blocks_the_fold(mpdir: Path, pg: PgTarget) -> None:
    writer = Writer(mpdir, pg, checkouts=1)
    writer.kill()
    with directory_lock(str(mpdir), exclusive=False) as locked:
        assert locked
        assert fold_dead_processes(str(mpdir)) == 0  # a scrape is reading: do not touch
        assert f"counter_{writer.pid}.db" in db_files(mpdir)
    assert fold_dead_processes(str(mpdir)) == 3


def test_scrapes_in_another_process_never_see_a_fold_halfway(mpdir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mpdir)}
    stop = tmp_path / "stop"
    scraper = subprocess.Popen(
        [sys.executable, str(APPS / "pw_scrape_loop.py"), str(mpdir), str(stop)],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    replacements = 300
    try:
        churn = subprocess.run(
            [sys.executable, str(APPS / "pw_churn.py"), str(replacements)],
            env=env, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
    finally:
        stop.touch()
        out, _ = scraper.communicate(timeout=60)
    result = json.loads(out)
    folded = int(churn.stdout.split()[1])
    assert folded == 2 * replacements  # a counter and a histogram file per dead worker
    assert result["scrapes"] > 0
    assert result["errors"] == []
    assert result["decreases"] == 0
    final = totals(mpdir)
    assert final[("churn_jobs_total", ())] == replacements
    assert final[("churn_job_seconds_count", ())] == replacements
    assert final[("churn_job_seconds_sum", ())] == 0.5 * replacements
    assert len(db_files(mpdir)) <= 4  # the churn process's own two files and two archives


def _writer_with_pid(pid: int, path: Path, pg: PgTarget) -> Writer:
    """A new writer process that gets ``pid`` (via ns_last_pid; retried: others fork too)."""
    for _ in range(100):
        NS_LAST_PID.write_text(str(pid - 1))
        writer = Writer(path, pg, checkouts=1, wait=False)
        if writer.pid == pid:
            writer.wait_ready()
            return writer
        writer.kill()
    pytest.fail(f"could not get pid {pid} for a new process")


def _can_choose_pids() -> bool:
    try:
        NS_LAST_PID.write_text(NS_LAST_PID.read_text())
    except OSError:
        return False
    return True


def test_a_reused_pid_keeps_its_file(
    mpdir: Path, pg: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _can_choose_pids():
        skip_or_fail("choosing a pid needs a writable /proc/sys/kernel/ns_last_pid (root)")
    old = Writer(mpdir, pg, checkouts=3)
    pid = old.pid
    old.kill()
    key = ("app_requests_total", (("route", "/a"),))
    assert totals(mpdir)[key] == 3

    # A new worker gets the dead one's pid and (as prometheus_client does) continues its file.
    new = _writer_with_pid(pid, mpdir, pg)
    assert totals(mpdir)[key] == 4
    assert fold_dead_processes(str(mpdir)) == 0  # the pid exists: its files are not folded
    assert new.command("inc 10") == "ok"
    assert totals(mpdir)[key] == 14

    # The race: the pid looked dead when checked, a process with that pid exists by the time
    # the file is renamed. Forced here by liveness answers that are stale until the rename.
    real, real_link = archive.pid_exists, os.link
    stale: dict[int, int] = {}
    relinked: list[str] = []

    def checked_too_early(p: int) -> bool:
        if stale.get(p, 0) > 0:
            stale[p] -= 1
            return False
        return real(p)

    def link(src: str, dst: str) -> None:
        relinked.append(os.path.basename(dst))
        real_link(src, dst)

    monkeypatch.setattr(archive, "pid_exists", checked_too_early)
    monkeypatch.setattr(archive.os, "link", link)
    stale[pid] = 2  # the fold's quick look and its check before the rename
    assert fold_dead_processes(str(mpdir)) == 0  # renamed, found alive, linked back
    assert relinked == [f"counter_{pid}.db"]
    assert f"counter_{pid}.db" in db_files(mpdir)
    live_gauges = sorted(mpdir.glob(f"gauge_live*_{pid}.db"))
    assert live_gauges
    stale[pid] = 1  # mark_dead_processes' check
    assert mark_dead_processes(str(mpdir)) == [pid]  # looked dead when checked...
    assert sorted(mpdir.glob(f"gauge_live*_{pid}.db")) == live_gauges  # ...files kept
    assert len(relinked) == 1 + len(live_gauges)
    monkeypatch.setattr(archive, "pid_exists", real)
    monkeypatch.setattr(archive.os, "link", real_link)
    assert mark_dead_processes(str(mpdir)) == []
    assert new.command("inc 1") == "ok"  # still writing to the file the scrape reads
    assert totals(mpdir)[key] == 15

    new.kill()
    assert mark_dead_processes(str(mpdir)) == [pid]
    assert not list(mpdir.glob(f"gauge_live*_{pid}.db"))
    assert fold_dead_processes(str(mpdir)) == 3
    assert totals(mpdir)[key] == 15


@pytest.mark.parametrize("committed", [True, False])
def test_a_fold_interrupted_anywhere_is_finished_or_undone(
    mpdir: Path, pg: PgTarget, committed: bool
) -> None:
    """The state a fold killed between two of its steps leaves: the next fold repairs it."""
    first = Writer(mpdir, pg, checkouts=2)
    first.kill()
    assert fold_dead_processes(str(mpdir)) == 3  # an archive exists already
    second = Writer(mpdir, pg, checkouts=5)
    second.kill()
    before = totals(mpdir)

    # Replay the fold's steps by hand up to the crash point (the lock is ours alone here).
    staging = mpdir / archive.STAGING_DIR
    staged = archive._stage_dead_files(str(mpdir), str(staging), "counter")
    assert len(staged) == 1
    target = mpdir / "counter_archive.db"
    merged = archive.MultiProcessCollector.merge([str(target), *staged], accumulate=False)
    tmp = staging / "counter_archive.crashed.tmp"
    archive._write(str(tmp), merged)
    intent = {"inode": tmp.stat().st_ino, "sources": [Path(s).name for s in staged]}
    (staging / "counter.intent").write_text(json.dumps(intent))
    if committed:
        os.rename(tmp, target)  # killed right after the commit, before deleting the source

    assert fold_dead_processes(str(mpdir)) == (2 if committed else 3)
    assert totals(mpdir) == before
    assert not list(staging.iterdir())  # nothing left behind


FORK_WHILE_LOCKED = """
import os, sys, threading, time
from poolwatch.instrumentation.archive import directory_lock

holding, release = threading.Event(), threading.Event()


def scrape() -> None:
    with directory_lock(sys.argv[1], exclusive=False):
        holding.set()
        release.wait()


thread = threading.Thread(target=scrape)
thread.start()
holding.wait()
child = os.fork()  # another thread forks while a scrape holds the lock
if child == 0:
    time.sleep(60)
    os._exit(0)
release.set()
thread.join()
print(child, flush=True)
sys.stdin.read()
os.kill(child, 9)
os.waitpid(child, 0)
"""


def test_a_child_forked_during_a_scrape_does_not_keep_the_lock(mpdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", FORK_WHILE_LOCKED, str(mpdir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert archive.pid_exists(child)  # alive, with a copy of the scrape's lock file open

        # The child closes its copy in its at-fork hook, which runs when the scheduler first
        # lets the child run: poll for that (without the hook it keeps the lock for 60 s).
        def exclusive_lock_taken() -> bool:
            with directory_lock(str(mpdir), exclusive=True, wait=False) as locked:
                return bool(locked)

        # a fold (or dead-gauge removal) is not held off by the child
        until(exclusive_lock_taken, timeout=20, what="the exclusive lock with the child alive")
        assert archive.pid_exists(child)  # ... while the child still lives
    finally:
        proc.communicate("", timeout=30)
