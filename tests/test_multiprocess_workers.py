"""Several worker processes (uvicorn --workers 4; gunicorn --preload with uvicorn workers)
sharing PROMETHEUS_MULTIPROC_DIR, serving a real FastAPI app on real PostgreSQL.

Each worker holds a known number of connections; every scrape of /metrics (whichever worker
answers it) must report totals equal to the ground truth summed over workers, and
pg_stat_activity (counted per worker by application_name) must agree. A worker killed with
SIGKILL must leave the live gauges (gunicorn: child_exit -> mark_process_dead; uvicorn:
metrics_app drops pids that no longer exist) while counters keep its history.

No wall-clock assertions: the tests poll until the state converges, under a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import PgTarget, skip_or_fail

pytestmark = pytest.mark.instrumentation

APPS = Path(__file__).parent / "apps"
WORKERS = 4
POOL_SIZE, MAX_OVERFLOW = 5, 10  # as in tests/apps/pw_workers_app.py
DEADLINE = 20.0  # seconds to converge (the flush interval is 0.2 s): a bound, not a measure


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Server:
    def __init__(self, kind: str, pg: PgTarget, tmp: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.tag = f"pwt{uuid.uuid4().hex[:8]}"
        self.dsn = pg.dsn
        self.mpdir = tmp / "multiproc"
        self.mpdir.mkdir()
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.mpdir),
            "POOLWATCH_FLUSH_INTERVAL": "0.2",
            "PW_TEST_URL": pg.url("asyncpg"),
            "PW_TEST_TAG": self.tag,
            "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
        }
        if kind == "uvicorn":
            cmd = [
                sys.executable, "-m", "uvicorn", "pw_workers_app:app",
                "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning",
            ]  # fmt: skip
        else:
            # Only the child_exit hook may remove a dead worker here (not the scrape).
            env["POOLWATCH_MARK_DEAD_PROCESSES"] = "0"
            cmd = [
                sys.executable, "-m", "gunicorn", "pw_workers_app:app", "--preload",
                "-k", "uvicorn.workers.UvicornWorker", "-w", str(WORKERS),
                "-b", f"127.0.0.1:{self.port}", "-c", str(APPS / "pw_gunicorn_conf.py"),
                "--log-level", "warning", "--graceful-timeout", "2",
            ]  # fmt: skip
        self.log = (tmp / f"{kind}.log").open("w+")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=str(APPS), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=10,
            limits=httpx.Limits(max_keepalive_connections=0),  # new connection each time
            headers={"connection": "close"},
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def get(self, path: str) -> Any:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.kind} exited:\n{self.output()}")
        response = self.client.get(path)
        response.raise_for_status()
        return response.text if path.startswith("/metrics") else response.json()

    def totals(self) -> dict[str, float]:
        """Every sqlalchemy_pool_* sample of pool "app", summed over the remaining labels."""
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(self.get("/metrics")):
            for sample in family.samples:
                if sample.labels.get("pool") == "app" and sample.name.startswith("sqlalchemy_pool"):
                    if sample.name.endswith("_bucket") or "reason" in sample.labels:
                        continue
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    def pg_backends(self) -> dict[int, int]:
        """Open server connections per worker pid, from pg_stat_activity."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "select application_name, count(*) from pg_stat_activity "
                "where application_name like %s group by 1",
                (f"{self.tag}-%",),
            ).fetchall()
        return {int(name.rsplit("-", 1)[1]): int(n) for name, n in rows}

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture(params=["uvicorn", "gunicorn"])
def server(request: pytest.FixtureRequest, pg: PgTarget, tmp_path: Path) -> Iterator[Server]:
    kind = request.param
    try:
        __import__("uvicorn" if kind == "uvicorn" else "gunicorn")
    except ImportError:
        skip_or_fail(f"{kind} is not installed")
    srv = Server(kind, pg, tmp_path)
    try:
        wait_for(f"{kind} to serve", lambda: srv.get("/pool"), deadline=30)
        yield srv
    finally:
        srv.stop()


def expected(truth: dict[int, dict[str, int]]) -> dict[str, float]:
    checked_out = sum(s["checked_out"] for s in truth.values())
    idle = sum(s["idle"] for s in truth.values())
    overflow = sum(max(0, s["checked_out"] + s["idle"] - POOL_SIZE) for s in truth.values())
    return {
        "sqlalchemy_pool_size": WORKERS * POOL_SIZE,  # capacity sums over live workers
        "sqlalchemy_pool_max_overflow": WORKERS * MAX_OVERFLOW,
        "sqlalchemy_pool_timeout_seconds": 10,  # livemax: not summed
        "sqlalchemy_pool_checked_out": checked_out,
        "sqlalchemy_pool_idle": idle,
        "sqlalchemy_pool_overflow": overflow,
        "sqlalchemy_pool_waiting": 0,
    }


def matches(totals: dict[str, float], want: dict[str, float]) -> bool:
    return all(totals.get(name) == value for name, value in want.items())


def test_totals_across_workers_and_dead_worker_leaves(server: Server) -> None:
    # All workers up and flushed: the capacity gauges sum over exactly WORKERS processes
    # (under gunicorn --preload the master instrumented the engine too, but never used it,
    # so its pool does not count).
    idle_state = expected({})
    wait_for("all workers to report", lambda: matches(server.totals(), idle_state))

    # Each worker ends up holding a known number of connections: the hold responses say
    # which worker served them and what its pool holds afterwards.
    truth: dict[int, dict[str, int]] = {}
    holds = [1, 2, 3, 1, 2, 3, 1, 2]  # 15 in all: fits one worker's pool_size + max_overflow
    for n in holds:
        state = server.get(f"/hold?n={n}")
        truth[state["pid"]] = state
    assert sum(s["held"] for s in truth.values()) == sum(holds)
    assert all(s["checked_out"] == s["held"] for s in truth.values())

    # pg_stat_activity agrees, worker by worker.
    backends = wait_for(
        "pg_stat_activity",
        lambda: (b := server.pg_backends()) == {p: s["checked_out"] + s["idle"] for p, s in truth.items()} and b,
    )  # fmt: skip
    want = expected(truth)
    want["sqlalchemy_pool_checkouts_total"] = sum(holds)
    wait_for("totals to converge", lambda: matches(server.totals(), want))
    # Scrape repeatedly (different workers answer): every scrape reports the same truth.
    for _ in range(6):
        totals = server.totals()
        assert matches(totals, want), (totals, want)
        assert totals["sqlalchemy_pool_checked_out"] + totals["sqlalchemy_pool_idle"] == sum(
            backends.values()
        )
        assert totals["sqlalchemy_pool_checkout_duration_seconds_count"] == sum(holds)

    # Kill the busiest worker: its gauges must leave, its counters stay (no reset).
    victim = max(truth, key=lambda pid: truth[pid]["held"])
    os.kill(victim, signal.SIGKILL)
    if server.kind == "gunicorn":
        # child_exit -> mark_process_dead removed its live-gauge files, before any scrape.
        wait_for(
            "child_exit to mark the worker dead",
            lambda: not list(server.mpdir.glob(f"gauge_live*_{victim}.db")),
        )
    survivors = {pid: s for pid, s in truth.items() if pid != victim}
    want = expected(survivors)  # a replacement worker brings the capacity back to WORKERS
    want["sqlalchemy_pool_checkouts_total"] = sum(holds)
    wait_for("the dead worker's gauges to leave", lambda: matches(server.totals(), want))
    wait_for(
        "PostgreSQL to drop the dead worker's sessions",
        lambda: server.pg_backends() == {p: s["checked_out"] + s["idle"] for p, s in survivors.items()},
    )  # fmt: skip
    for _ in range(3):
        assert matches(server.totals(), want)
    assert not list(server.mpdir.glob(f"gauge_live*_{victim}.db"))


def test_multiprocess_true_without_the_directory_is_a_clear_error(pg: PgTarget) -> None:
    import sqlalchemy as sa

    import poolwatch

    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    engine = sa.create_engine(pg.url("psycopg"))
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        poolwatch.instrument(engine, multiprocess=True)
    engine.dispose()
