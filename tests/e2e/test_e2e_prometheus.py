"""End to end: real Prometheus and Alertmanager watching a real instrumented app and a real
poolwatch-exporter on real PostgreSQL, while the app exhausts its pool.

On loopback:

- an instrumented app (``poolwatch.instrument(engine, registry=...)``, metrics served by
  ``prometheus_client.start_http_server``, requests served by a FastAPI app with
  ``RouteMiddleware`` through httpx's in-process transport) runs a scenario: a little normal
  traffic, then three connections checked out and never returned (a leak, all idle in
  transaction, one holding a row lock), callers queueing and timing out, three sessions
  blocked on the locked row, and a second engine sized beyond the server (the connection
  budget);
- ``poolwatch-exporter`` (the console script) watches the same server;
- Prometheus (Debian's ``prometheus``) scrapes both every second and evaluates a copy of
  ``alerts/*.rules.yml`` whose ``for:`` durations are shortened to 1 s;
- Alertmanager (Debian's ``prometheus-alertmanager``) runs the shipped example config with its
  receivers pointed at a webhook server in this test.

Proven: every rule loads and evaluates without error; the scenario's alerts become active;
every dashboard query is accepted over the scenario's data and the core panels have data;
Alertmanager delivers the alerts to the receivers the example routes them to, and inhibits
PoolwatchPoolNearCapacity under PoolwatchPoolExhausted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from poolwatch import metric_names
from prom_support import (
    ALERTS_DIR,
    Process,
    active_alerts,
    dashboard_panels,
    fast_rules,
    free_port,
    load_dashboards,
    panels_without_data,
    prom_api,
    spawn_exporter,
    start_alertmanager,
    start_prometheus,
    substitute_variables,
    wait_exporter_up,
)
from support import PgTarget, require_tool, until

pytestmark = pytest.mark.timeout(300)

POOL = "e2e"
APP_NAME = "poolwatch-e2e"
# The lock waiters' sessions, named as a second pool "waiters" of the same service would be.
WAITERS = "waiters"
PG_SERVER = "e2e-server"
# Alerts the scenario must raise (in Prometheus), and the receivers the example Alertmanager
# config routes each to. PoolwatchPoolNearCapacity fires too but is inhibited by
# PoolwatchPoolExhausted, so it is never delivered.
EXPECTED_ALERTS = {
    "PoolwatchPoolNearCapacity": set(),
    "PoolwatchPoolExhausted": {"pager", "team-chat"},
    "PoolwatchPoolTimeouts": {"team-chat"},
    "PoolwatchPoolCheckoutSlow": {"team-chat"},
    "PoolwatchPoolConnectionLeak": {"team-chat"},
    "PoolwatchConnectionBudgetExceeded": {"team-chat"},
    "PoolwatchPostgresIdleInTransaction": {"team-chat"},
    "PoolwatchPostgresLockWaits": {"team-chat"},
    "PoolwatchPostgresBlockedSessions": {"team-chat"},
}
# Panels that must show data during the scenario, by dashboard (this scenario has no
# PgBouncer: the PgBouncer and chain dashboards' queries are only checked to evaluate).
CORE_PANELS = {
    "sqlalchemy-pool.json": [
        "Highest pool utilization",
        "Callers waiting",
        "Pool timeouts (1h)",
        "Leaks (1h)",
        "Checked out vs capacity",
        "Utilization",
        "Idle connections",
        "Overflow connections",
        "Waiting callers",
        "Checkout wait p50 / p95 / p99",
        "Checkout wait distribution",
        "Hold time p50 / p95 / p99",
        "New connection time p50 / p95 / p99",
        "Connections held by route (top 10)",
        "Connection time by route (top 10)",
        "Hold time p95 by route (top 10)",
        "Checkout wait p95 by route (top 10)",
        "Checkouts vs checkins",
        "Timeouts and connect errors",
        "Leaks",
        "Oldest checkout",
        "Connection budget per server",
        "Budget used",
        "Pool configuration",
        "Checked out vs server sessions",
        "Idle in transaction, by pool",
    ],
    "postgresql-sessions.json": [
        "PostgreSQL reachable",
        "Connections used",
        "Headroom",
        "Stale idle in transaction",
        "Sessions by state",
        "Sessions by database",
        "Sessions by application",
        "Headroom to max_connections",
        "Connections used (ratio)",
        "Idle in transaction sessions",
        "Longest idle in transaction",
        "Lock waits",
        "Longest lock wait",
        "Blocked vs blocking",
        "Longest transaction",
        "Longest query",
        "Active sessions by wait event type",
        "Top wait events",
        "Sessions ended",
        "Deadlocks",
        "Time in sessions",
        "Server up since",
        "Server role",
        "Exporter scrape duration",
        "Exporter errors and targets",
    ],
}


# --- the webhook receiver ---------------------------------------------------------------------


class Webhook:
    """A tiny HTTP server recording Alertmanager's webhook notifications by receiver."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.notifications.append((self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def firing(self) -> dict[str, set[str]]:
        """alertname -> receivers that were sent it firing."""
        out: dict[str, set[str]] = {}
        with self.lock:
            for receiver, payload in self.notifications:
                for alert in payload["alerts"]:
                    if alert["status"] == "firing":
                        out.setdefault(alert["labels"]["alertname"], set()).add(receiver)
        return out

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                a
                for _, payload in self.notifications
                for a in payload["alerts"]
                if a["labels"]["alertname"] == alertname
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the instrumented app ---------------------------------------------------------------------


class App:
    """An app with an instrumented AsyncEngine on its own event loop thread, serving
    /metrics with prometheus_client, and the scenario that exhausts its pool."""

    def __init__(self, pg: PgTarget, max_connections: int) -> None:
        import prometheus_client
        from sqlalchemy.ext.asyncio import create_async_engine

        import poolwatch

        self.pg = pg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.registry = prometheus_client.CollectorRegistry()
        settings = {"application_name": APP_NAME}
        # capacity 2 + 1; callers give up after 1 s; held over 1 s counts as a leak.
        self.engine = create_async_engine(
            pg.url("asyncpg"),
            pool_size=2,
            max_overflow=1,
            pool_timeout=1,
        )
        # Its sessions are named by instrument(): the pool dashboard's server-session row.
        poolwatch.instrument(
            self.engine,
            name=POOL,
            registry=self.registry,
            leak_threshold=1.0,
            application_name=f"{APP_NAME}/{POOL}",
        )
        # A second pool, never used, configured for as many connections as the server has:
        # together the pools exceed the server's usable connections (the budget alert).
        self.oversized = create_async_engine(
            pg.url("asyncpg"),
            pool_size=max_connections,
            max_overflow=0,
            connect_args={"server_settings": settings},
        )
        poolwatch.instrument(self.oversized, name="oversized", registry=self.registry)
        self.port = free_port()
        self.http, _ = prometheus_client.start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )
        self.stop_event = asyncio.Event()
        self.tasks: list[Future[Any]] = []
        self.held: list[Any] = []
        self.lock_waiters: list[Any] = []
        self.web = self._routes()

    def _routes(self) -> Any:
        """The scenario's requests, served with RouteMiddleware: the per-route series."""
        import httpx
        from fastapi import FastAPI, Response
        from sqlalchemy import exc, text

        import poolwatch

        web = FastAPI()

        @web.get("/orders/{order_id}")
        async def order(order_id: int) -> Response:
            try:
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT pg_sleep(0.01)"))
            except exc.TimeoutError:
                return Response(status_code=503)
            return Response(str(order_id))

        @web.get("/report")
        async def report() -> Response:
            await self.hold_everything()
            return Response("held")

        web.add_middleware(poolwatch.RouteMiddleware)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://e2e")

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def normal_traffic(self, checkouts: int) -> None:
        for i in range(checkouts):
            assert (await self.web.get(f"/orders/{i}")).status_code == 200
            await asyncio.sleep(0.05)

    async def hold_everything(self) -> None:
        """Check out every connection and never return them: each idle in transaction, the
        first holding the lock on row 1 of e2e_lock."""
        from sqlalchemy import text

        for i in range(3):
            conn = await self.engine.connect()
            await conn.begin()
            if i == 0:
                await conn.execute(text("UPDATE e2e_lock SET v = v + 1 WHERE id = 1"))
            else:
                await conn.execute(text("SELECT 1"))
            self.held.append(conn)

    async def queue_and_time_out(self) -> None:
        """A caller that keeps asking the exhausted pool for a connection (503 on timeout)."""
        while True:
            await self.web.get("/orders/0")

    async def wait_for_lock(self) -> None:
        """A session outside the pool blocked on the row the pool's first connection locked."""
        import asyncpg

        name = f"{APP_NAME}/{WAITERS}"
        conn = await asyncpg.connect(self.pg.dsn, server_settings={"application_name": name})
        self.lock_waiters.append(conn)
        await conn.execute("UPDATE e2e_lock SET v = v + 1 WHERE id = 1")

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()

        async def close() -> None:
            for conn in self.lock_waiters:
                conn.terminate()
            for conn in self.held:
                with contextlib.suppress(Exception):
                    await conn.close()
            await self.web.aclose()
            await self.engine.dispose()
            await self.oversized.dispose()

        with contextlib.suppress(Exception):
            self.run(close(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.http.shutdown()
        self.http.server_close()


# --- fixtures ---------------------------------------------------------------------------------


def sql(pg: PgTarget, statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(pg.dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def stack(pg: PgTarget, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Webhook, Alertmanager, the app, the exporter and Prometheus, stopped in reverse."""
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    exporter_bin = require_tool("poolwatch-exporter", str(Path(sys.executable).parent))
    with contextlib.ExitStack() as stop:
        sql(pg, "DROP TABLE IF EXISTS e2e_lock")
        sql(pg, "CREATE TABLE e2e_lock (id int PRIMARY KEY, v int NOT NULL)")
        sql(pg, "INSERT INTO e2e_lock VALUES (1, 0)")
        stop.callback(sql, pg, "DROP TABLE IF EXISTS e2e_lock")
        stop.callback(
            sql,
            pg,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name LIKE '{APP_NAME}%'",
        )
        max_connections = int(sql(pg, "SHOW max_connections")[0][0])

        webhook = Webhook()
        stop.callback(webhook.close)

        am_config = yaml.safe_load((ALERTS_DIR / "alertmanager.example.yml").read_text())
        for receiver in am_config["receivers"]:
            for hook in receiver["webhook_configs"]:
                hook["url"] = f"{webhook.url}/{receiver['name']}"
        am_config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        alertmanager = start_alertmanager(am_config, tmp_path / "alertmanager")
        stop.callback(alertmanager.stop)

        app = App(pg, max_connections)
        stop.callback(app.stop)

        exporter_port = free_port()
        log_path = tmp_path / "exporter.log"
        argv = [exporter_bin, "--dsn", pg.dsn, "--web.listen-address", f"127.0.0.1:{exporter_port}",
                "--idle-in-transaction.stale-threshold", "1s"]  # fmt: skip
        exporter = spawn_exporter(argv, log_path, stop)
        metrics_url = f"http://127.0.0.1:{exporter_port}/metrics"
        wait_exporter_up(exporter, metrics_url, log_path, "pg_up")
        rules = fast_rules(tmp_path / "rules")
        target_labels = {"pg_server": PG_SERVER}
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [alertmanager.url.split("//")[1]]}]}
                ]
            },
            "scrape_configs": [
                {
                    "job_name": "e2e-app",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{app.port}"], "labels": target_labels}
                    ],
                },
                {
                    "job_name": "poolwatch-exporter",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{exporter_port}"], "labels": target_labels}
                    ],
                },
            ],
        }
        prometheus = start_prometheus(prom_config, tmp_path / "prometheus")
        stop.callback(prometheus.stop)
        yield {
            "app": app,
            "prometheus": prometheus,
            "alertmanager": alertmanager,
            "webhook": webhook,
            "exporter_log": tmp_path / "exporter.log",
        }


# --- the test ---------------------------------------------------------------------------------


def test_scenario_end_to_end(stack: dict[str, Any]) -> None:
    app: App = stack["app"]
    prometheus: Process = stack["prometheus"]
    webhook: Webhook = stack["webhook"]

    # Both targets are scraped.
    def targets_up() -> dict[str, str]:
        result = prom_api(prometheus.url, "query", query="up")
        return {r["metric"]["job"]: r["value"][1] for r in result["data"]["result"]}

    until(
        targets_up,
        equals={"e2e-app": "1", "poolwatch-exporter": "1"},
        timeout=30,
        interval=0.5,
        what="Prometheus to scrape the app and the exporter",
    )

    # Normal traffic first, scraped a few times: checkouts, checkins and hold times.
    app.run(app.normal_traffic(40))
    # Then the pool is exhausted: three connections held forever (idle in transaction, one
    # locking a row), three callers queueing and timing out, three sessions blocked on the row.
    app.run(app.web.get("/report"))  # hold_everything() inside a request: GET /report
    for _ in range(3):
        app.spawn(app.queue_and_time_out())
        app.spawn(app.wait_for_lock())

    # The rules load and evaluate cleanly.
    rules = prom_api(prometheus.url, "rules")
    groups = rules["data"]["groups"]
    assert {g["name"] for g in groups} >= {
        "poolwatch-pool.rules",
        "poolwatch-pool",
        "poolwatch-postgres.rules",
        "poolwatch-postgres",
        "poolwatch-budget.rules",
        "poolwatch-budget",
        "poolwatch-server",
    }

    # The scenario's alerts become active (firing: `for:` is 1 s here).
    def all_firing() -> dict[str, list[dict[str, Any]]] | None:
        alerts = active_alerts(prometheus)
        firing = {n for n, a in alerts.items() if any(x["state"] == "firing" for x in a)}
        return alerts if set(EXPECTED_ALERTS) <= firing else None

    try:
        alerts = until(all_firing, timeout=90, interval=1, what="the scenario's alerts")
    except AssertionError:
        alerts = active_alerts(prometheus)
        missing = set(EXPECTED_ALERTS) - set(alerts)
        pytest.fail(
            f"not firing: {sorted(missing)}; active: {sorted(alerts)}\n"
            f"exporter log:\n{stack['exporter_log'].read_text()[-2000:]}"
        )
    for group in prom_api(prometheus.url, "rules")["data"]["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

    exhausted = alerts["PoolwatchPoolExhausted"][0]
    assert exhausted["labels"]["pool"] == POOL
    assert exhausted["labels"]["severity"] == "critical"
    assert exhausted["annotations"]["runbook_url"].endswith("#poolwatchpoolexhausted")
    budget = alerts["PoolwatchConnectionBudgetExceeded"][0]
    assert budget["labels"] == {
        "alertname": "PoolwatchConnectionBudgetExceeded",
        "pg_server": PG_SERVER,
        "severity": "warning",
    }
    locks = alerts["PoolwatchPostgresLockWaits"][0]
    assert float(locks["value"]) >= 3
    assert locks["labels"]["datname"]
    # The same waiters, by wait event: active sessions waiting on a row lock.
    waits = prom_api(
        prometheus.url,
        "query",
        query=f'sum({metric_names.PG_ACTIVE_SESSIONS.name}{{wait_event_type="Lock"}})',
    )["data"]["result"]
    assert waits and float(waits[0]["value"][1]) >= 3, waits
    # The pool dashboard's per-pool row, pool by pool: the three waiters under their own
    # name, none of the e2e pool's sessions (they hold the lock, idle in transaction).
    (by_pool,) = [
        t["expr"]
        for p in dashboard_panels(load_dashboards()["sqlalchemy-pool.json"])
        if p["title"] == "Checked out vs server sessions"
        for t in p["targets"]
        if metric_names.PG_LOCK_WAITING_SESSIONS_BY_APPLICATION.name in t["expr"]
    ]

    def lock_waiters_of(pool: str) -> dict[str, str]:
        query = substitute_variables(by_pool.replace("$pool", pool))
        result = prom_api(prometheus.url, "query", query=query)["data"]["result"]
        return {r["metric"]["application_name"]: r["value"][1] for r in result}

    until(
        lambda: lock_waiters_of(WAITERS),
        equals={f"{APP_NAME}/{WAITERS}": "3"},
        timeout=30,
        interval=0.5,
        what=f"the per-pool lock-wait query to read the three waiters: {by_pool}",
    )
    assert lock_waiters_of(POOL) == {}

    # Per route: the leaked connections are GET /report's, the timed-out waits GET /orders'.
    held = prom_api(
        prometheus.url,
        "query",
        query=f'sum by (route) ({metric_names.POOL_ROUTE_CHECKED_OUT.name}{{pool="{POOL}"}})',
    )["data"]["result"]
    assert {r["metric"]["route"]: r["value"][1] for r in held} == {
        "GET /report": "3",
        "GET /orders/{order_id}": "0",
    }

    # Every dashboard query is accepted over the scenario's data; core panels have data.
    empty = panels_without_data(prometheus, load_dashboards(), CORE_PANELS)
    assert not empty, "core panels without data:\n" + "\n".join(empty)

    # Alertmanager delivers them where the example config routes them, and inhibits
    # PoolwatchPoolNearCapacity under PoolwatchPoolExhausted.
    delivered_expected = {n: r for n, r in EXPECTED_ALERTS.items() if r}

    def delivered() -> bool:
        got = webhook.firing()
        return all(got.get(n, set()) >= r for n, r in delivered_expected.items())

    try:
        until(delivered, timeout=60, interval=0.5, what="Alertmanager's notifications")
    except AssertionError:
        pytest.fail(f"delivered: {webhook.firing()}; expected: {delivered_expected}")
    got = webhook.firing()
    for name, receivers in delivered_expected.items():
        assert got[name] == receivers, f"{name} went to {got[name]}, expected {receivers}"
    assert "PoolwatchPoolNearCapacity" not in got, "should be inhibited by PoolwatchPoolExhausted"
    sent = webhook.alerts("PoolwatchPoolExhausted")[0]
    assert sent["labels"]["pool"] == POOL
    assert sent["labels"]["pg_server"] == PG_SERVER
    assert sent["annotations"]["runbook_url"] == (
        "https://github.com/poolwatch/poolwatch/blob/main/docs/runbook.md#poolwatchpoolexhausted"
    )
    assert "callers queue" in sent["annotations"]["description"]
