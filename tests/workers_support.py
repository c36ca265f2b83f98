"""Real multi-worker servers (uvicorn --workers, gunicorn --preload) running
tests/apps/pw_workers_app.py with a fresh PROMETHEUS_MULTIPROC_DIR, for the worker tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from support import PgTarget, free_port, until

APPS = Path(__file__).parent / "apps"
WORKERS = 4
POOL_SIZE, MAX_OVERFLOW = 5, 10  # as in tests/apps/pw_workers_app.py
DEADLINE = 20.0  # seconds to converge (the flush interval is 0.2 s): a bound, not a measure
SERVER_ERRORS = (httpx.HTTPError, OSError)  # a worker not listening yet, or restarting


def serving(server: Server, timeout: float = 30.0) -> None:
    """Wait until ``server`` answers (its workers may still be starting)."""
    until(
        lambda: server.get("/pool"),
        timeout=timeout,
        catch=SERVER_ERRORS,
        what=f"{server.kind} to serve",
    )


class Server:
    def __init__(
        self, kind: str, pg: PgTarget, tmp: Path, extra_env: dict[str, str] | None = None
    ) -> None:
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
            **(extra_env or {}),
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
            env["POOLWATCH_FOLD_DEAD_PROCESSES"] = "1"  # same PID namespace: folding is safe
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
