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
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import PgTarget, skip_or_fail, until
from workers_support import (
    DEADLINE,
    MAX_OVERFLOW,
    POOL_SIZE,
    SERVER_ERRORS,
    WORKERS,
    Server,
    serving,
)


@pytest.fixture(params=["uvicorn", "gunicorn"])
def server(request: pytest.FixtureRequest, pg: PgTarget, tmp_path: Path) -> Iterator[Server]:
    kind = request.param
    try:
        __import__("uvicorn" if kind == "uvicorn" else "gunicorn")
    except ImportError:
        skip_or_fail(f"{kind} is not installed")
    srv = Server(kind, pg, tmp_path)
    try:
        serving(srv)
        yield srv
    finally:
        srv.stop()


def expected(truth: dict[int, dict[str, int]]) -> dict[str, float]:
    checked_out = sum(s["checked_out"] for s in truth.values())
    idle = sum(s["idle"] for s in truth.values())
    overflow = sum(max(0, s["checked_out"] + s["idle"] - POOL_SIZE) for s in truth.values())
    busiest = max((s["checked_out"] for s in truth.values()), default=0)
    return {
        # livemax: the busiest worker, not the sum (one full pool must not hide in it)
        "sqlalchemy_pool_worker_max_checked_out": busiest,
        "sqlalchemy_pool_worker_max_utilization_ratio": busiest / (POOL_SIZE + MAX_OVERFLOW),
        "sqlalchemy_pool_worker_max_waiting": 0,
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


def converged(server: Server, want: dict[str, float], what: str) -> dict[str, float]:
    """Scrape ``server`` until its totals match ``want``; fails showing the last totals."""
    return until(
        server.totals,
        holds=lambda totals: matches(totals, want),
        timeout=DEADLINE,
        catch=SERVER_ERRORS,
        what=f"{what} ({want})",
    )


def test_totals_across_workers_and_dead_worker_leaves(server: Server) -> None:
    # All workers up and flushed: the capacity gauges sum over exactly WORKERS processes
    # (under gunicorn --preload the master instrumented the engine too, but never used it,
    # so its pool does not count).
    idle_state = expected({})
    converged(server, idle_state, "all workers to report")

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
    backends = until(
        server.pg_backends,
        equals={p: s["checked_out"] + s["idle"] for p, s in truth.items()},
        timeout=DEADLINE, what="pg_stat_activity",
    )  # fmt: skip
    want = expected(truth)
    want["sqlalchemy_pool_checkouts_total"] = sum(holds)
    converged(server, want, "totals to converge")
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
        until(
            lambda: list(server.mpdir.glob(f"gauge_live*_{victim}.db")),
            equals=[], timeout=DEADLINE, what="child_exit to mark the worker dead",
        )  # fmt: skip
    survivors = {pid: s for pid, s in truth.items() if pid != victim}
    want = expected(survivors)  # a replacement worker brings the capacity back to WORKERS
    want["sqlalchemy_pool_checkouts_total"] = sum(holds)
    converged(server, want, "the dead worker's gauges to leave")
    until(
        server.pg_backends,
        equals={p: s["checked_out"] + s["idle"] for p, s in survivors.items()},
        timeout=DEADLINE, what="PostgreSQL to drop the dead worker's sessions",
    )  # fmt: skip
    for _ in range(3):
        assert matches(server.totals(), want)
    assert not list(server.mpdir.glob(f"gauge_live*_{victim}.db"))
    # Its counters and histograms now live in the archive (folded by a scrape), still counted.
    assert not list(server.mpdir.glob(f"*_{victim}.db"))
    assert (server.mpdir / "counter_archive.db").exists()
    assert (server.mpdir / "histogram_archive.db").exists()
    assert server.totals()["sqlalchemy_pool_checkout_duration_seconds_count"] == sum(holds)


def test_multiprocess_true_without_the_directory_is_a_clear_error(pg: PgTarget) -> None:
    import sqlalchemy as sa

    import poolwatch

    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    engine = sa.create_engine(pg.url("psycopg"))
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        poolwatch.instrument(engine, multiprocess=True)
    engine.dispose()


def route_samples(server: Server) -> dict[tuple[str, str], float]:
    """(sample name, route) -> value of pool "app"'s per-route series in one scrape."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(server.get("/metrics")):
        for s in family.samples:
            if s.labels.get("pool") == "app" and "route" in s.labels and "le" not in s.labels:
                out[(s.name, s.labels["route"])] = s.value
    return out


def test_route_series_sum_over_workers(pg: PgTarget, tmp_path: Path) -> None:
    srv = Server("uvicorn", pg, tmp_path, extra_env={"PW_TEST_ROUTES": "1"})
    try:
        serving(srv)
        truth: dict[int, dict[str, int]] = {}
        holds = [1, 2, 3, 1, 2]
        for n in holds:
            state = srv.get(f"/hold?n={n}")
            truth[state["pid"]] = state
        total = sum(holds)
        held = ("sqlalchemy_pool_route_checked_out", "GET /hold")
        count = ("sqlalchemy_pool_route_checkout_duration_seconds_count", "GET /hold")
        returned = ("sqlalchemy_pool_route_hold_duration_seconds_count", "GET /hold")

        def routes_converged(want: dict[tuple[str, str], float], what: str) -> None:
            until(
                lambda: route_samples(srv),
                holds=lambda samples: all(samples.get(k) == v for k, v in want.items()),
                timeout=DEADLINE,
                catch=SERVER_ERRORS,
                what=f"{what} ({want})",
            )

        routes_converged({held: total, count: total, returned: 0}, "per-route series")
        holders = set(truth)

        # Give every worker's connections back (a request lands on any worker).
        def released() -> bool:
            state = srv.get("/release")
            truth[state["pid"]] = state
            return all(truth[pid]["held"] == 0 for pid in holders)

        until(
            released,
            timeout=DEADLINE,
            catch=SERVER_ERRORS,
            what="every worker to give its connections back",
        )
        want = {held: 0, count: total, returned: total}
        routes_converged(want, "per-route series after release")
        for _ in range(3):  # whichever worker answers
            samples = route_samples(srv)
            assert all(samples.get(k) == v for k, v in want.items()), samples
            assert {route for _, route in samples} == {"GET /hold"}
    finally:
        srv.stop()
