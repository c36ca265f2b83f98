"""End to end, the chain: four instrumented app "workers" (pool 100 + 5 each, marked
through_pgbouncer) -> a real PgBouncer (transaction mode, default_pool_size 10,
max_client_conn 100) -> the real PostgreSQL, watched by the real poolwatch-exporter (both
PostgreSQL and PgBouncer in one process), scraped and evaluated by a real Prometheus with
alerts/*.rules.yml (every ``for:`` shortened to 1 s). A fifth, small pool (5 + 0) connects
to PostgreSQL directly, so the direct budget has something to count.

The scenario of issue 14: every server connection of PgBouncer's pool is held in an open
transaction and more clients queue inside PgBouncer. Proven: the chain alerts fire
(PoolwatchPgBouncerClientBudgetExceeded for 420 > 100, and the queue alerts), while
PoolwatchConnectionBudgetExceeded and PoolwatchPgBouncerServerBudgetExceeded are never
pending or firing although the pools through PgBouncer (420) exceed the server's usable
connections; every query of the PgBouncer and Connection chain dashboards evaluates, and
their core panels have data.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from pgbouncer_support import PgBouncer, running_pgbouncer
from prom_support import (
    Process,
    active_alerts,
    fast_rules,
    free_port,
    panels_without_data,
    prom_api,
    spawn_exporter,
    start_prometheus,
    wait_exporter_up,
)
from support import PgTarget, require_tool, until

pytestmark = pytest.mark.timeout(300)

PG_SERVER = "chain"
WORKERS, POOL_SIZE, MAX_OVERFLOW = 4, 100, 5
PGB_POOL_SIZE, MAX_CLIENT_CONN = 10, 100
MAX_DB_CONNECTIONS = 50  # per database; above pool_size, so the limit stays 10
DIRECT_POOL = 5  # the pool that connects to PostgreSQL directly (max_overflow 0)
QUEUED = 3  # clients that queue in PgBouncer behind the held server connections
ALERTS_FIRING = (
    "PoolwatchPgBouncerClientBudgetExceeded",
    "PoolwatchPgBouncerClientsWaiting",
    "PoolwatchPgBouncerWaitSlow",
    "PoolwatchPgBouncerServerPoolSaturated",
)
ALERTS_QUIET = ("PoolwatchConnectionBudgetExceeded", "PoolwatchPgBouncerServerBudgetExceeded")
# Panels that must show data during the scenario.
CORE_PANELS = {
    "pgbouncer.json": [
        "PgBouncer reachable",
        "Clients waiting now",
        "Longest wait now",
        "Client connections used",
        "Clients active",
        "Clients waiting",
        "Longest wait (maxwait)",
        "Server connections",
        "Clients vs max_client_conn",
        "Databases: pool_size vs current connections",
        "Database settings",
    ],
    "connection-chain.json": [
        "App: callers waiting",
        "PgBouncer: clients waiting",
        "PgBouncer: longest wait now",
        "PostgreSQL: connections used",
        "PostgreSQL: lock waits",
        "App: checked out vs capacity",
        "App: callers waiting",
        "PgBouncer: clients active / waiting",
        "PgBouncer: longest wait",
        "PgBouncer: server connections vs pool_size",
        "PostgreSQL: sessions by state",
        "PostgreSQL: sessions by application",
        "Pools through PgBouncer / max_client_conn",
        "PgBouncer + direct pools / usable connections",
        "Budget per tier",
    ],
}


class Workers:
    """WORKERS instrumented AsyncEngines through PgBouncer, each in its own registry served
    on its own port (as worker processes scraped one by one are), on one event loop."""

    def __init__(self, bouncer: PgBouncer, pg: PgTarget) -> None:
        import prometheus_client
        from sqlalchemy.ext.asyncio import create_async_engine

        import poolwatch

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engines: list[Any] = []
        self.servers: list[Any] = []
        self.ports: list[int] = []
        for _ in range(WORKERS):
            registry = prometheus_client.CollectorRegistry()
            # psycopg prepares nothing with prepare_threshold=None: safe in transaction mode.
            engine = create_async_engine(
                bouncer.url("psycopg"),
                pool_size=POOL_SIZE,
                max_overflow=MAX_OVERFLOW,
                connect_args={"prepare_threshold": None},
            )
            poolwatch.instrument(engine, name="primary", registry=registry, through_pgbouncer=True)
            port = free_port()
            server, _ = prometheus_client.start_http_server(port, "127.0.0.1", registry)
            self.engines.append(engine)
            self.servers.append(server)
            self.ports.append(port)
        registry = prometheus_client.CollectorRegistry()
        self.direct = create_async_engine(pg.url("psycopg"), pool_size=DIRECT_POOL, max_overflow=0)
        poolwatch.instrument(self.direct, name="reports", registry=registry)
        port = free_port()
        server, _ = prometheus_client.start_http_server(port, "127.0.0.1", registry)
        self.servers.append(server)
        self.ports.append(port)
        self.held: list[Any] = []
        self.tasks: list[Future[Any]] = []

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def warm_up(self) -> None:
        from sqlalchemy import text

        for engine in (*self.engines, self.direct):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def hold_server_connections(self, n: int) -> None:
        """n connections of worker 0, each in an open transaction: in transaction mode each
        pins one of PgBouncer's server connections."""
        from sqlalchemy import text

        for _ in range(n):
            conn = await self.engines[0].connect()
            await conn.begin()
            await conn.execute(text("SELECT 1"))
            self.held.append(conn)

    async def query(self, worker: int) -> None:
        from sqlalchemy import text

        async with self.engines[worker].connect() as conn:
            await conn.execute(text("SELECT 1"))

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        async def close() -> None:
            for conn in self.held:
                with contextlib.suppress(Exception):
                    await conn.close()
            for task in self.tasks:
                task.cancel()
            for engine in (*self.engines, self.direct):
                await engine.dispose()

        with contextlib.suppress(Exception):
            self.run(close(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        for server in self.servers:
            server.shutdown()
            server.server_close()


def exporter_argv(exporter_bin: str, pg: PgTarget, bouncer: PgBouncer, port: int) -> list[str]:
    return [
        exporter_bin,
        "--dsn",
        pg.dsn,
        "--pgbouncer.dsn",
        bouncer.stats_dsn(),
        "--web.listen-address",
        f"127.0.0.1:{port}",
    ]


@pytest.fixture
def chain(pg: PgTarget, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """PgBouncer, the workers, the exporter and Prometheus, stopped in reverse."""
    require_tool("prometheus")
    exporter_bin = require_tool("poolwatch-exporter", str(Path(sys.executable).parent))
    settings = {
        "pool_mode": "transaction",
        "default_pool_size": PGB_POOL_SIZE,
        "reserve_pool_size": 0,
        "max_client_conn": MAX_CLIENT_CONN,
    }
    with contextlib.ExitStack() as stop:
        databases = {"postgres": f"dbname=postgres max_db_connections={MAX_DB_CONNECTIONS}"}
        bouncer = stop.enter_context(running_pgbouncer(pg.dsn, settings, databases))
        workers = Workers(bouncer, pg)
        stop.callback(workers.stop)
        workers.run(workers.warm_up())

        port = free_port()
        log_path = tmp_path / "exporter.log"
        exporter = spawn_exporter(exporter_argv(exporter_bin, pg, bouncer, port), log_path, stop)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        wait_exporter_up(exporter, metrics_url, log_path, "pg_up", "pgbouncer_up")
        rules = fast_rules(tmp_path / "rules")
        labels = {"pg_server": PG_SERVER}
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [
                {
                    "job_name": "chain-app",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{p}" for p in workers.ports], "labels": labels}
                    ],
                },
                {
                    "job_name": "poolwatch-exporter",
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels}],
                },
            ],
        }
        prometheus = start_prometheus(prom_config, tmp_path / "prometheus")
        stop.callback(prometheus.stop)
        yield {"workers": workers, "prometheus": prometheus, "bouncer": bouncer}


def instant(prometheus: Process, query: str) -> list[dict[str, Any]]:
    result = prom_api(prometheus.url, "query", query=query)
    assert result["status"] == "success", (query, result)
    data: list[dict[str, Any]] = result["data"]["result"]
    return data


def test_chain_alerts_fire_and_the_direct_budget_does_not(chain: dict[str, Any]) -> None:
    workers: Workers = chain["workers"]
    prometheus: Process = chain["prometheus"]
    bouncer: PgBouncer = chain["bouncer"]
    started = time.time()

    # Every server connection of PgBouncer's pool held in a transaction, QUEUED more clients.
    workers.run(workers.hold_server_connections(PGB_POOL_SIZE))
    for i in range(QUEUED):
        workers.spawn(workers.query(1 + i % (WORKERS - 1)))

    def queued() -> int:
        pools = [p for p in bouncer.admin("SHOW POOLS") if p["database"] != "pgbouncer"]
        return sum(int(p["cl_waiting"]) for p in pools)

    until(queued, equals=QUEUED, timeout=30, interval=0.1, what="clients queued in PgBouncer")

    def firing() -> dict[str, list[dict[str, Any]]] | None:
        alerts = active_alerts(prometheus)
        states = {n: {a["state"] for a in alerts.get(n, [])} for n in ALERTS_FIRING}
        return alerts if all("firing" in s for s in states.values()) else None

    alerts = until(firing, timeout=90, interval=0.5, what=f"{ALERTS_FIRING} to fire")
    budget = alerts["PoolwatchPgBouncerClientBudgetExceeded"][0]
    assert budget["labels"]["pg_server"] == PG_SERVER
    assert float(budget["value"]) == WORKERS * (POOL_SIZE + MAX_OVERFLOW)
    waiting = alerts["PoolwatchPgBouncerClientsWaiting"][0]
    assert float(waiting["value"]) == QUEUED
    assert waiting["labels"]["database"] == "postgres"
    saturated = alerts["PoolwatchPgBouncerServerPoolSaturated"][0]
    assert float(saturated["value"]) == PGB_POOL_SIZE

    # The pools through PgBouncer (420) are beyond the server, yet the direct budget counts
    # only the direct pool (5) and PgBouncer's server side (10) fits: neither budget alert
    # was ever pending or firing.
    def value(query: str) -> float:
        (sample,) = instant(prometheus, query)
        return float(sample["value"][1])

    on_server = f'{{pg_server="{PG_SERVER}"}}'
    usable = value(f"pg_server:pg_usable_connections:min{on_server}")
    through = value(f"pg_server:sqlalchemy_pool_capacity_through_pgbouncer:sum{on_server}")
    assert through == WORKERS * (POOL_SIZE + MAX_OVERFLOW) > usable
    assert value(f"pg_server:sqlalchemy_pool_capacity:sum{on_server}") == DIRECT_POOL
    assert value(f"pg_server:pgbouncer_server_connections_limit:sum{on_server}") == PGB_POOL_SIZE
    assert value(f"pg_server:pg_connections_allowed:sum{on_server}") == PGB_POOL_SIZE + DIRECT_POOL
    for name in ALERTS_QUIET:
        result = prom_api(
            prometheus.url,
            "query_range",
            query=f'ALERTS{{alertname="{name}"}}',
            start=str(started),
            end=str(time.time()),
            step="1",
        )
        assert result["status"] == "success" and result["data"]["result"] == [], (name, result)

    # Every query of the new dashboards evaluates; their core panels have data.
    empty = panels_without_data(prometheus, CORE_PANELS, CORE_PANELS)
    assert not empty, "core panels without data:\n" + "\n".join(empty)
