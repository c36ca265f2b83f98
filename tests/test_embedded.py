"""poolwatch.embedded: a restarted throw-away server is stopped before its data is deleted."""

from __future__ import annotations

import os
import time

from poolwatch.embedded import EmbeddedPostgresUnavailable, start_local_postgres
from support import skip_or_fail


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_stops_a_server_restarted_by_start_server() -> None:
    try:
        local = start_local_postgres()
    except EmbeddedPostgresUnavailable as exc:
        skip_or_fail(str(exc))
        return
    local.stop_server()
    local.start_server()
    pid = int((local.pgdata / "postmaster.pid").read_text().split()[0])
    assert _alive(pid)
    local.stop()
    deadline = time.monotonic() + 30  # pg_ctl -w has returned; the postmaster may still exit
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the restarted server is still running"
    assert not local.pgdata.exists()
