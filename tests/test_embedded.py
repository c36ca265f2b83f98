"""poolwatch.embedded: a restarted throw-away server is stopped before its data is deleted."""

from __future__ import annotations

from poolwatch.embedded import EmbeddedPostgresUnavailable, start_local_postgres
from poolwatch.pids import pid_exists as _alive
from support import skip_or_fail, until


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
    # pg_ctl -w has returned; the postmaster may still be exiting
    until(lambda: _alive(pid), equals=False, what="the restarted server to exit")
    assert not local.pgdata.exists()
