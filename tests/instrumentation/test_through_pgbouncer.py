"""instrument(through_pgbouncer=...): the 1/0 gauge sqlalchemy_pool_through_pgbouncer.

Single process (a fresh registry): 0 by default, 1 when asked, present for every pool class.
Multiprocess mode: four real worker processes sharing PROMETHEUS_MULTIPROC_DIR, read with
prometheus_client's own MultiProcessCollector: the flag stays 1 (livemax), while the
capacity gauges are summed over the four workers, and a worker that dies leaves it 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy.pool import NullPool

import poolwatch
from support import PgTarget
from support import pool_sample as value

FLAG = "sqlalchemy_pool_through_pgbouncer"
WORKERS = 4
POOL_SIZE, MAX_OVERFLOW = 3, 2
DEADLINE = 30.0  # seconds for the workers to start and flush: a bound, not a measure

# One worker: instrument, check out once (a real connection), flush, report, wait for stdin.
WORKER = f"""
import sys
import sqlalchemy as sa
import poolwatch
from poolwatch.instrumentation.flusher import flusher

engine = sa.create_engine(sys.argv[1], pool_size={POOL_SIZE}, max_overflow={MAX_OVERFLOW})
poolwatch.instrument(engine, name="app", through_pgbouncer=sys.argv[2] == "1")
with engine.connect() as conn:
    conn.execute(sa.text("select 1"))
flusher.flush_now()
print("ready", flush=True)
sys.stdin.readline()
"""


def test_flag_is_zero_by_default_and_one_when_asked(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    direct = sa.create_engine(pg.url("psycopg"), pool_size=2)
    bounced = sa.create_engine(pg.url("psycopg"), pool_size=2)
    unpooled = sa.create_engine(pg.url("psycopg"), poolclass=NullPool)
    try:
        poolwatch.instrument(direct, name="direct", registry=registry, multiprocess=False)
        poolwatch.instrument(
            bounced, name="bounced", registry=registry, multiprocess=False, through_pgbouncer=True
        )
        poolwatch.instrument(
            unpooled, name="unpooled", registry=registry, multiprocess=False, through_pgbouncer=True
        )
        with bounced.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
        assert value(registry, FLAG, "direct") == 0
        assert value(registry, FLAG, "bounced") == 1
        assert value(registry, FLAG, "unpooled") == 1  # no pool_size, still budgeted
        assert value(registry, "sqlalchemy_pool_size", "bounced") == 2
        poolwatch.uninstrument(bounced)
        assert value(registry, FLAG, "bounced") is None
        assert value(registry, FLAG, "direct") == 0
    finally:
        for engine in (direct, bounced, unpooled):
            poolwatch.uninstrument(engine)
            engine.dispose()


class Workers:
    """WORKERS real processes sharing one multiprocess directory."""

    def __init__(self, pg: PgTarget, mpdir: Path, flag: str) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mpdir)}
        self.mpdir = mpdir
        self.flag = float(flag)
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, pg.url("psycopg"), flag],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]

    def wait_ready(self) -> None:
        end = time.monotonic() + DEADLINE
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # blocks until "ready" or exit
            assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
            assert time.monotonic() < end, "workers took longer than the deadline"

    def samples(self) -> dict[str, float]:
        """What a scrape in multiprocess mode reports for pool "app"."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.mpdir))
        out: dict[str, float] = {}
        for family in registry.collect():
            for sample in family.samples:
                if sample.labels.get("pool") == "app" and sample.name in (
                    FLAG,
                    "sqlalchemy_pool_size",
                    "sqlalchemy_pool_max_overflow",
                ):
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


@pytest.fixture
def workers(request: pytest.FixtureRequest, pg: PgTarget, tmp_path: Path) -> Iterator[Workers]:
    mpdir = tmp_path / "multiproc"
    mpdir.mkdir()
    group = Workers(pg, mpdir, request.param)
    try:
        group.wait_ready()
        yield group
    finally:
        group.stop_all()


@pytest.mark.parametrize("workers", ["1", "0"], indirect=True, ids=["through", "direct"])
def test_multiprocess_flag_is_never_summed_over_workers(workers: Workers) -> None:
    flag = workers.flag
    totals = workers.samples()
    # The capacity sums over the four workers; the flag does not.
    assert totals["sqlalchemy_pool_size"] == WORKERS * POOL_SIZE, totals
    assert totals["sqlalchemy_pool_max_overflow"] == WORKERS * MAX_OVERFLOW, totals
    assert totals[FLAG] == flag, totals
    # A worker leaves (as gunicorn's child_exit hook reports it): still one flag value.
    gone = workers.procs[0]
    workers.stop(gone)
    mark_process_dead(gone.pid, str(workers.mpdir))  # type: ignore[no-untyped-call]
    totals = workers.samples()
    assert totals["sqlalchemy_pool_size"] == (WORKERS - 1) * POOL_SIZE, totals
    assert totals[FLAG] == flag, totals
