"""The demo's process helpers, for real: ``poolwatch-exporter`` started, scraped and stopped."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from poolwatch.demo.processes import DemoError, start_exporter
from poolwatch.pids import pid_exists
from support import PgTarget, running_exporter


def test_exporter_runs_answers_and_stops(pg: PgTarget, tmp_path: Path) -> None:
    with running_exporter(pg.dsn, tmp_path, "--idle-in-transaction.stale-threshold", "2s") as exp:
        body = httpx.get(exp.metrics_url, timeout=10).text
        assert re.search(r"^pg_up 1(\.0)?$", body, re.M), body
        pid = exp.child.proc.pid
        dsn_file = tmp_path / "exporter-dsn"
        assert dsn_file.stat().st_mode & 0o077 == 0  # the DSN file is private
        assert pg.dsn not in exp.child.proc.args  # never on the command line
    assert exp.child.proc.poll() is not None
    assert not pid_exists(pid)


def test_exporter_that_cannot_start_is_one_line_and_stopped(pg: PgTarget, tmp_path: Path) -> None:
    with pytest.raises(DemoError) as caught:
        start_exporter(tmp_path, pg.dsn, "--no-such-flag")
    message = str(caught.value)
    assert message.startswith("poolwatch-exporter exited with status 2: ")
    assert "--no-such-flag" in message and "\n" not in message
