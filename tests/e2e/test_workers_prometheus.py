"""Many workers, told truthfully, in a real Prometheus: real `uvicorn --workers 4` serving
tests/apps/pw_workers_app.py on real PostgreSQL with an empty PROMETHEUS_MULTIPROC_DIR,
scraped every 0.5 s by Debian's Prometheus loading the shipped alerts/*.rules.yml unchanged.

* The first leak and the first timeout after a start are seen: every counter exists at 0
  before anything happens, so increase() counts the first event; PoolwatchPoolConnectionLeak
  and PoolwatchPoolTimeouts go pending (their expressions hold; promtool's unit tests in
  alerts/tests/ prove the `for:` that follows), and the dashboard's "Leaks (1h)" and
  "Pool timeouts (1h)" stats read exactly 1.
* One worker's full pool is not hidden by three idle ones: PoolwatchPoolNearCapacity goes
  pending and "Highest pool utilization" reads 100 %, while the budget sum still counts
  every worker's capacity once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poolwatch.metric_names import INVALIDATION_REASONS
from prom_support import (
    RULE_FILES,
    Process,
    dashboard_panels,
    load_dashboards,
    prom_api,
    start_prometheus,
    substitute_variables,
)
from support import PgTarget, skip_or_fail, until
from workers_support import MAX_OVERFLOW, POOL_SIZE, WORKERS, Server, serving

pytestmark = pytest.mark.timeout(300)
DEADLINE = 60.0  # seconds for Prometheus to see a state: a bound, not a measure
LEAK_THRESHOLD = 1.5
POOL_TIMEOUT = 0.3


def _start(pg: PgTarget, tmp_path: Path, extra_env: dict[str, str]) -> tuple[Server, Process]:
    try:
        __import__("uvicorn")
    except ImportError:
        skip_or_fail("uvicorn is not installed")
    server = Server("uvicorn", pg, tmp_path, extra_env=extra_env)
    try:
        serving(server)
        config = {
            "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
            "rule_files": [str(p) for p in RULE_FILES],
            "scrape_configs": [
                {
                    "job_name": "app",
                    "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                }
            ],
        }
        prometheus = start_prometheus(config, tmp_path / "prometheus")
    except BaseException:
        server.stop()
        raise
    return server, prometheus


@pytest.fixture
def stack(pg: PgTarget, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    server, prometheus = _start(pg, tmp_path, getattr(request, "param", {}))
    try:
        yield server, prometheus
    finally:
        prometheus.stop()
        server.stop()


def query(prometheus: Process, expr: str) -> list[dict[str, Any]]:
    data = prom_api(prometheus.url, "query", query=expr)
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def value(prometheus: Process, expr: str) -> float | None:
    result = query(prometheus, expr)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def panel_expr(title: str) -> str:
    panels = dashboard_panels(load_dashboards()["sqlalchemy-pool.json"])
    (panel,) = [p for p in panels if p["title"] == title]
    (tgt,) = panel["targets"]
    return substitute_variables(tgt["expr"])


def alert_state(prometheus: Process, alertname: str) -> list[dict[str, Any]]:
    return query(prometheus, f'ALERTS{{alertname="{alertname}", pool="app"}}')


@pytest.mark.parametrize(
    "stack",
    [{"PW_TEST_LEAK_THRESHOLD": str(LEAK_THRESHOLD), "PW_TEST_POOL_TIMEOUT": str(POOL_TIMEOUT)}],
    indirect=True,
)
def test_first_leak_and_first_timeout_are_counted_and_alerted(stack: Any) -> None:
    server, prometheus = stack
    # Before anything happens Prometheus has the counters at 0 (and the histograms).
    for name in ("sqlalchemy_pool_leaks_total", "sqlalchemy_pool_timeouts_total"):
        until(
            lambda n=name: value(prometheus, f'{n}{{pool="app"}}'),
            equals=0, timeout=DEADLINE, interval=0.2, what=f"{name} scraped at 0",
        )  # fmt: skip
    until(
        lambda: len(query(prometheus, 'sqlalchemy_pool_invalidations_total{pool="app"}')),
        equals=len(INVALIDATION_REASONS),
        timeout=DEADLINE, interval=0.2, what="every invalidation reason at 0",
    )  # fmt: skip
    until(
        lambda: query(prometheus, 'sqlalchemy_pool_leaks_total{pool="app"}[5s]'),
        holds=lambda series: len(series) == 1 and len(series[0]["values"]) >= 3,
        timeout=DEADLINE, interval=0.2, what="a few samples at 0",
    )  # fmt: skip

    # One session leaked (held past the threshold, never returned) and one checkout timed out.
    held = server.get("/hold?n=1")
    assert held["held"] == 1
    timed = server.get("/timeout")
    assert timed["timeouts"] == 1

    for alertname in ("PoolwatchPoolConnectionLeak", "PoolwatchPoolTimeouts"):
        alerts = until(
            lambda a=alertname: alert_state(prometheus, a),
            timeout=DEADLINE, interval=0.2, what=f"{alertname} pending",
        )  # fmt: skip
        assert alerts[0]["metric"]["alertstate"] in ("pending", "firing"), alerts
    for title in ("Leaks (1h)", "Pool timeouts (1h)"):
        expr = panel_expr(title)
        until(
            lambda e=expr: value(prometheus, e),
            equals=1, timeout=DEADLINE, interval=0.2, what=f"{title} = 1",
        )  # fmt: skip
    # Stays exactly 1 while Prometheus keeps scraping (no late, larger jump).
    for _ in range(5):
        assert value(prometheus, panel_expr("Leaks (1h)")) == 1
        assert value(prometheus, panel_expr("Pool timeouts (1h)")) == 1


def test_one_full_worker_is_seen_and_alerted(stack: Any) -> None:
    server, prometheus = stack
    capacity = POOL_SIZE + MAX_OVERFLOW
    until(
        lambda: value(prometheus, 'sum(pool:sqlalchemy_pool_capacity{pool="app"})'),
        equals=WORKERS * capacity,
        timeout=DEADLINE, interval=0.2, what="every worker's capacity",
    )  # fmt: skip
    # One worker's pool filled, three idle: the sums read a quarter.
    state = server.get(f"/hold?n={capacity}")
    assert state["checked_out"] == capacity
    until(
        lambda: value(prometheus, 'pool:sqlalchemy_pool_utilization:ratio{pool="app"}'),
        equals=0.25, timeout=DEADLINE, interval=0.2, what="the summed utilization",
    )  # fmt: skip
    alerts = until(
        lambda: alert_state(prometheus, "PoolwatchPoolNearCapacity"),
        timeout=DEADLINE, interval=0.2, what="PoolwatchPoolNearCapacity pending",
    )  # fmt: skip
    assert alerts[0]["metric"]["alertstate"] in ("pending", "firing"), alerts
    assert alerts[0]["metric"]["severity"] == "warning"
    assert value(prometheus, panel_expr("Highest pool utilization")) == 1.0
    # The connection budget still counts each worker's pool_size + max_overflow once.
    assert value(prometheus, 'sum(pool:sqlalchemy_pool_capacity{pool="app"})') == (
        WORKERS * capacity
    )
    assert value(prometheus, 'sqlalchemy_pool_worker_max_checked_out{pool="app"}') == capacity
