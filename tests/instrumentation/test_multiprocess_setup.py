"""Multiprocess mode from a user's first minute: series that exist from instrument() on,
one clear line for a missing directory, and leak reports that say which worker.

The probe (tests/apps/pw_mp_setup_probe.py) is a real process in multiprocess mode (the
variable must be set before prometheus_client is imported) on real PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import poolwatch
from poolwatch import metric_names as m
from support import PgTarget, until

APPS = Path(__file__).parent.parent / "apps"
COUNTERS = [s.name for s in m.INSTRUMENTATION_METRICS if s.type == "counter"]
HISTOGRAMS = [s.name for s in m.INSTRUMENTATION_METRICS if s.type == "histogram"]


def run_probe(pg: PgTarget, path: Path) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}
    proc = subprocess.run(
        [sys.executable, str(APPS / "pw_mp_setup_probe.py"), pg.url("psycopg")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def assert_every_series_at_zero(samples: dict[str, float]) -> None:
    for name in COUNTERS:
        if name == m.POOL_INVALIDATIONS.name:
            for reason in m.INVALIDATION_REASONS:
                assert samples[f"{name}{{reason={reason}}}"] == 0, reason
        else:
            assert samples[name] == 0, name
    for name in HISTOGRAMS:
        assert samples[f"{name}_count"] == 0, name
        assert samples[f"{name}_bucket{{le=+Inf}}"] == 0, name


def test_every_counter_and_histogram_exists_at_zero_from_instrument(
    pg: PgTarget, tmp_path: Path
) -> None:
    path = tmp_path / "multiproc"
    path.mkdir()
    result, stderr = run_probe(pg, path)
    assert_every_series_at_zero(result["at_start"])  # before any flush or checkout
    after = result["after_checkout"]
    assert after["sqlalchemy_pool_checkouts_total"] == 1
    assert after["sqlalchemy_pool_leaks_total"] == 0  # still there, still 0
    assert result["scrape_status"] == 200
    assert "ERROR" not in stderr, stderr


def test_single_process_mode_exports_every_series_at_zero(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    engine = sa.create_engine(pg.url("psycopg"))
    handle = poolwatch.instrument(engine, name="zero", registry=registry)
    try:
        samples = {}
        for metric in registry.collect():
            for s in metric.samples:
                extra = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pool")
                samples[s.name + (f"{{{extra}}}" if extra else "")] = s.value
        assert_every_series_at_zero(samples)
    finally:
        handle.close()
        engine.dispose()


def test_missing_directory_is_one_line_with_the_fix(pg: PgTarget, tmp_path: Path) -> None:
    path = tmp_path / "not-created-yet"
    result, stderr = run_probe(pg, path)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr  # one line, once (not per pool, flush or scrape)
    assert lines[0].startswith("ERROR poolwatch: pool metrics are not written: ")
    assert f"mkdir -p {path}" in lines[0]
    assert "poolwatch: poolwatch:" not in stderr
    assert result["scrape_while_missing"]["status"] == 503
    assert f"mkdir -p {path}" in result["scrape_while_missing"]["body"]
    # Created afterwards: the next flush writes every series (no restart needed).
    assert_every_series_at_zero(result["at_start"])
    assert result["after_checkout"]["sqlalchemy_pool_checkouts_total"] == 1


def test_a_path_that_is_a_file_is_one_line_too(pg: PgTarget, tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}
    code = (
        "import sys, sqlalchemy as sa, poolwatch\n"
        "e = sa.create_engine(sys.argv[1])\n"
        "poolwatch.instrument(e, name='f')\n"
        "with e.connect() as c: c.execute(sa.text('select 1'))\n"
        "print('served')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, pg.url("psycopg")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "served"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a directory" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_leak_report_names_the_worker_pid_once_prefixed(
    pg: PgTarget, registry: CollectorRegistry
) -> None:
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("poolwatch")
    logger.addHandler(handler)
    engine = sa.create_engine(pg.url("psycopg"))
    handle = poolwatch.instrument(engine, name="leaky", registry=registry, leak_threshold=0.05)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
            # the leak detector thread reports it
            until(lambda: list(records), what="a leak report", interval=0.02)
        line = records[0]
        assert line.startswith("WARNING poolwatch: connection of pool 'leaky' (pid ")
        assert f"(pid {os.getpid()})" in line
        assert "poolwatch: poolwatch:" not in line
    finally:
        logger.removeHandler(handler)
        handle.close()
        engine.dispose()


def test_variable_set_after_import_is_one_line_and_the_pool_still_exported(
    pg: PgTarget, tmp_path: Path
) -> None:
    path = tmp_path / "multiproc"
    path.mkdir()
    code = (
        "import os, sys, prometheus_client, sqlalchemy as sa\n"
        f"os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(path)!r}\n"
        "import poolwatch\n"
        "e = sa.create_engine(sys.argv[1])\n"
        "poolwatch.instrument(e, name='late')\n"
        "with e.connect() as c: c.execute(sa.text('select 1'))\n"
        "v = prometheus_client.REGISTRY.get_sample_value(\n"
        "    'sqlalchemy_pool_checkouts_total', {'pool': 'late'})\n"
        "print(v)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.run(
        [sys.executable, "-c", code, pg.url("psycopg")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == 1  # exported by the process itself
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "set after prometheus_client was imported" in lines[0], lines
    assert not list(path.iterdir())  # nothing written there
