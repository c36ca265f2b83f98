"""Side by side with peer PgBouncer exporters on the same PgBouncer at the same moment.

- PyPI's ``prometheus-pgbouncer-exporter`` 2.1.2 (spreaker; installed by scripts/install.sh
  into ``.venv-peers/``): the names we share with it are the same series.
- Debian's ``prometheus-pgbouncer-exporter`` 1.7 (cbaines'): its STATS collector reads
  ``total_requests``, a column PgBouncer dropped in 1.8, so on Debian's own PgBouncer 1.18 it
  exits at start (a test shows it). Its POOLS, DATABASES and LISTS collectors still work; the
  comparison runs those (its classes, queries and names) in its own process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import Scrape
from pgbouncer_support import APP_USER, STATS_PASSWORD, STATS_USER, PgBouncer
from support import free_port, require_tool, skip_or_fail, until

REPO = Path(__file__).resolve().parents[2]
PYPI_PEER = REPO / ".venv-peers" / "pgbouncer-exporter" / "bin" / "pgbouncer-exporter"
DEBIAN_PEER = "prometheus-pgbouncer-exporter"
SYSTEM_PYTHON = "/usr/bin/python3"
POOL = {"database": "postgres", "user": APP_USER}
DEBIAN_WITHOUT_STATS = """
import sys
from http.server import HTTPServer
from prometheus_client import REGISTRY
from prometheus_pgbouncer_exporter.collectors import (
    DatabasesCollector, ListsCollector, PoolsCollector)
from prometheus_pgbouncer_exporter.exposition import create_request_handler
from prometheus_pgbouncer_exporter.utils import get_connection

connection = get_connection(sys.argv[1], int(sys.argv[2]), "127.0.0.1")
for kind in (PoolsCollector, DatabasesCollector):
    REGISTRY.register(kind(connection=connection, databases=None))
REGISTRY.register(ListsCollector(connection=connection))
HTTPServer(("127.0.0.1", int(sys.argv[3])), create_request_handler("/dev/null")).serve_forever()
"""
PEER_ENV = {**os.environ, "PGPASSWORD": STATS_PASSWORD, "PGSSLMODE": "disable"}


def pypi_peer(bouncer: PgBouncer, directory: Path) -> tuple[list[str], int]:
    """argv and port of PyPI's exporter watching ``bouncer`` as the stats user."""
    if not PYPI_PEER.exists():
        skip_or_fail(f"{PYPI_PEER} is missing (bash scripts/install.sh installs it)")
    port = free_port()
    config = directory / "peer.yml"
    config.write_text(
        f"exporter_host: 127.0.0.1\nexporter_port: {port}\npgbouncers:\n"
        f"  - dsn: postgresql://{STATS_USER}:{STATS_PASSWORD}@127.0.0.1:{bouncer.port}/pgbouncer\n"
        "    connect_timeout: 5\n"
    )
    return [str(PYPI_PEER), "--config", str(config), "--log-level", "ERROR"], port


def debian_peer(bouncer: PgBouncer) -> tuple[list[str], int]:
    """argv and port of Debian's exporter's POOLS/DATABASES/LISTS collectors."""
    require_tool(DEBIAN_PEER, "/usr/bin")
    port = free_port()
    argv = [SYSTEM_PYTHON, "-c", DEBIAN_WITHOUT_STATS, STATS_USER, str(bouncer.port), str(port)]
    return argv, port


def start(argv: list[str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        argv, env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    def answering() -> httpx.Response:
        if proc.poll() is not None:
            raise AssertionError(f"the peer exited: {proc.communicate()[1][-500:]}")
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2)

    until(answering, interval=0.1, catch=(httpx.TransportError,), what="the peer to start")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@pytest.fixture
async def queue(pgbouncer_factory) -> AsyncIterator[PgBouncer]:
    """Both servers of the pool held in open transactions, three clients queued, two idle."""
    bouncer = pgbouncer_factory(default_pool_size=2)
    conns = [await asyncpg.connect(bouncer.dsn(), statement_cache_size=0) for _ in range(7)]
    for conn in conns[:2]:
        await conn.execute("BEGIN; SELECT 1")
    tasks = [asyncio.ensure_future(conn.execute("SELECT 1")) for conn in conns[2:5]]
    yield bouncer
    for task in tasks:
        task.cancel()
    for conn in conns:
        conn.terminate()


async def side_by_side(exporter_factory, bouncer: PgBouncer, argv: list[str], port: int):
    ours = exporter_factory("--labels.top-n", "50", dsn="", pgbouncer=bouncer.stats_dsn())
    await ours.until(lambda s: s.get("pgbouncer_pools_client_waiting_connections", **POOL) == 3)
    proc = start(argv, port)
    try:
        async with httpx.AsyncClient() as client:
            theirs, mine = await asyncio.gather(
                client.get(f"http://127.0.0.1:{port}/metrics", timeout=10), ours.scrape()
            )
    finally:
        stop(proc)
    assert theirs.status_code == 200, theirs.text[:300]
    return Scrape.parse(theirs.text), mine


def test_debian_peer_exits_on_pgbouncer_1_18(pgbouncer: PgBouncer) -> None:
    """Why Debian's peer is compared through its other collectors (see the module doc)."""
    binary = require_tool(DEBIAN_PEER, "/usr/bin")
    done = subprocess.run(
        [
            binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--pgbouncer-host",
            "127.0.0.1",
            "--pgbouncer-port",
            str(pgbouncer.port),
            "--pgbouncer-user",
            STATS_USER,
        ],
        env=PEER_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "KeyError: 'total_requests'" in done.stderr


async def test_numbers_agree_with_pypi_peer(queue: PgBouncer, exporter_factory, tmp_path) -> None:
    argv, port = pypi_peer(queue, tmp_path)
    theirs, mine = await side_by_side(exporter_factory, queue, argv, port)
    assert theirs.get("pgbouncer_up") == 1.0 == mine.get("pgbouncer_up")
    compared = 0
    for (name, labels), value in theirs.samples.items():
        lab = dict(labels)
        if name.startswith("pgbouncer_pools_") and lab.get("database") == "postgres":
            if name == "pgbouncer_pools_client_maxwait_seconds":  # both count microseconds
                assert abs(mine.get(name, **lab) - value) < 5, (name, lab)
            else:
                assert mine.get(name, **lab) == value, (name, lab, value)
            compared += 1
        elif name.startswith("pgbouncer_stats_") and lab["database"] == "postgres":
            ours, scale = STATS.get(name.removesuffix("_total"), (None, 1.0))
            if ours is not None:
                assert mine.get(ours, **lab) == pytest.approx(value * scale), (name, value)
                compared += 1
        elif name.startswith("pgbouncer_databases_database_") and lab["database"] == "postgres":
            ours = "pgbouncer_databases_" + name.removeprefix("pgbouncer_databases_database_")
            ours = ours.replace("reserve_pool_size", "reserve_pool")
            found = [
                v for (n, ls), v in mine.samples.items() if n == ours and ("name", "postgres") in ls
            ]
            assert found == [value], (name, found, value)
            compared += 1
        elif name in CONFIG:
            assert mine.get(CONFIG[name]) == value, name
            compared += 1
    assert theirs.get("pgbouncer_pools_client_waiting_connections", **POOL) == 3
    assert compared >= 8 + 7 + 4 + 2, compared


async def test_numbers_agree_with_debian_peer_collectors(
    queue: PgBouncer, exporter_factory
) -> None:
    argv, port = debian_peer(queue)
    theirs, mine = await side_by_side(exporter_factory, queue, argv, port)
    compared = 0
    for (name, labels), value in theirs.samples.items():
        lab = dict(labels)
        if name in DEBIAN_POOLS:
            assert mine.get(DEBIAN_POOLS[name], **lab) == value, (name, lab, value)
        elif name in ("pgbouncer_pool_size", "pgbouncer_reserve_pool"):
            ours = "pgbouncer_databases_" + name.removeprefix("pgbouncer_")
            found = [
                v
                for (n, ls), v in mine.samples.items()
                if n == ours and ("database", lab["database"]) in ls
            ]
            assert found == [value], (name, lab, found)
        elif name in LISTS:
            assert mine.get(name) == value, (name, value)
        else:
            continue
        compared += 1
    assert theirs.get("pgbouncer_waiting_clients", **POOL) == 3
    assert compared >= 2 * 2 + 2 * 2 + len(LISTS), compared


#: PyPI peer's stats counter (without _total) -> (ours, factor from theirs to ours)
STATS = {
    "pgbouncer_stats_transactions": ("pgbouncer_stats_sql_transactions_pooled_total", 1.0),
    "pgbouncer_stats_queries": ("pgbouncer_stats_queries_pooled_total", 1.0),
    "pgbouncer_stats_waiting_duration_microseconds": ("pgbouncer_stats_client_wait_seconds_total", 1e-6),
    "pgbouncer_stats_queries_duration_microseconds": ("pgbouncer_stats_queries_duration_seconds_total", 1e-6),
    "pgbouncer_stats_transactions_duration_microseconds": ("pgbouncer_stats_server_in_transaction_seconds_total", 1e-6),
    "pgbouncer_stats_received_bytes": ("pgbouncer_stats_received_bytes_total", 1.0),
    "pgbouncer_stats_sent_bytes": ("pgbouncer_stats_sent_bytes_total", 1.0),
}  # fmt: skip
CONFIG = {
    "pgbouncer_config_max_client_conn": "pgbouncer_config_max_client_connections",
    "pgbouncer_config_max_user_connections": "pgbouncer_config_max_user_connections",
}
DEBIAN_POOLS = {
    "pgbouncer_active_clients": "pgbouncer_pools_client_active_connections",
    "pgbouncer_waiting_clients": "pgbouncer_pools_client_waiting_connections",
}
LISTS = tuple(
    f"pgbouncer_{item}"
    for item in ("databases", "users", "pools", "free_clients", "used_clients", "login_clients",
                 "free_servers", "used_servers")
)  # fmt: skip
