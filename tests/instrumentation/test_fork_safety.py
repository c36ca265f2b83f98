"""An engine created before fork() (gunicorn --preload): warn once with the fix, count
nothing twice, keep both processes' metrics right. Real PostgreSQL (psycopg), real fork()
in a subprocess so the pytest process itself never forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support import PgTarget

PROBE = Path(__file__).parent.parent / "apps" / "pw_fork_probe.py"


def run_probe(pg: PgTarget, mode: str, tmp_path: Path) -> dict[str, Any]:
    mpdir = tmp_path / "multiproc"
    mpdir.mkdir()
    out = subprocess.run(
        [sys.executable, str(PROBE), pg.url("psycopg"), mode],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mpdir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def fork_warnings(messages: list[str]) -> list[str]:
    return [m for m in messages if "after fork()" in m]


def test_engine_used_across_fork_warns_once_and_counts_nothing_twice(
    pg: PgTarget, tmp_path: Path
) -> None:
    result = run_probe(pg, "inherit", tmp_path)
    child = result["child"]
    # The child starts from zero: the parent's checkout is the parent's.
    assert child["checkouts_at_start"] == 0
    assert child["checkouts"] == 2, child
    assert result["parent_checkouts"] == 2  # 1 before fork + 1 after, untouched by the child
    # prometheus_client's multiprocess aggregation: 2 (parent) + 2 (child), not 5.
    assert result["aggregated_checkouts"] == 4
    warnings = fork_warnings(child["messages"])
    assert len(warnings) == 1, child["messages"]  # two checkouts, one warning
    assert "dispose(close=False)" in warnings[0] and "post_fork" in warnings[0]
    assert f"used in process {child['pid']}" in warnings[0]
    assert fork_warnings(result["parent_messages"]) == []


def test_dispose_close_false_after_fork_is_quiet(pg: PgTarget, tmp_path: Path) -> None:
    result = run_probe(pg, "dispose", tmp_path)
    child = result["child"]
    assert fork_warnings(child["messages"]) == [], child["messages"]
    assert child["checkouts"] == 2  # the replacement pool is still instrumented
    assert result["aggregated_checkouts"] == 4


def test_engine_unused_before_fork_is_quiet(pg: PgTarget, tmp_path: Path) -> None:
    # Nothing was opened before fork, so nothing is shared: no warning needed.
    result = run_probe(pg, "unused", tmp_path)
    assert fork_warnings(result["child"]["messages"]) == []
    assert result["child"]["checkouts"] == 2
    assert result["aggregated_checkouts"] == 3


BACKGROUND_PROBE = Path(__file__).parent.parent / "apps" / "pw_background_probe.py"


def test_one_background_thread_restarts_in_a_forked_child_and_stops_on_close(
    pg: PgTarget,
) -> None:
    # The leak scan is a task of the flusher: one "poolwatch-flusher" thread, none before
    # anything is instrumented, a fresh one in a forked child (which finds the child's own
    # leak), and none once the last instrumentation is closed.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run(
        [sys.executable, str(BACKGROUND_PROBE), pg.url("psycopg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["after_import"] == []
    assert result["after_instrument"] == ["poolwatch-flusher"]
    child = result["child"]
    assert child["at_start"] == ["poolwatch-flusher"], child
    assert child["leak_found"] and child["leaks"] == 1, child
    assert child["while_held"] == ["poolwatch-flusher"], child
    assert child["stopped"] and child["after_close"] == [], child
    assert result["parent_leaks"] == 0  # the child's leak is the child's
    assert result["stopped"] and result["after_close"] == [], result
