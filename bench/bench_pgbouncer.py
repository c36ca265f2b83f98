"""Scrape latency of poolwatch-exporter's PgBouncer side vs peer PgBouncer exporters.

One real PgBouncer (Debian's) in front of the embedded PostgreSQL 18 with ``--pools`` pools
(database entries p01..pNN, one user) and ``--clients`` client connections spread over them;
in every pool two clients hold a transaction open (the pool's two server connections) and
two more queue behind them, the rest are idle. Every exporter runs as a real process against
that PgBouncer in the same run, their scrapes interleaved so machine noise hits all alike
(keep-alive HTTP with Prometheus' headers, as bench_exporter.py does). Printed per exporter:
median and p90 of ``--scrapes`` scrapes, and the ratio to ours. Then ``--concurrent``
simultaneous scrapes of ours, after which PgBouncer's SHOW CLIENTS must list exactly one
admin connection of ours, and our RSS (PgBouncer only, and PgBouncer + PostgreSQL).

Peers: PyPI's prometheus-pgbouncer-exporter 2.1.2 (``.venv-peers/``, from scripts/install.sh;
it opens a new admin connection per scrape) and Debian's prometheus-pgbouncer-exporter 1.7's
POOLS/DATABASES/LISTS collectors (one kept psycopg2 connection; the package itself exits at
start on PgBouncer 1.18, see tests/exporter/test_exporter_pgbouncer_compare.py).

    .venv/bin/python bench/bench_pgbouncer.py
    .venv/bin/python bench/bench_pgbouncer.py --pools 20 --clients 500 --scrapes 200

Targets (issue 14): our median <= 1/2 of the peer's; one admin connection however many
concurrent scrapes; exporter RSS <= 40 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from _postgres import exit_on_sigterm  # noqa: E402
from bench_exporter import Scraper, free_port, rss_mb, wait_listening  # noqa: E402
from pgbouncer_support import PGBOUNCER_BIN, STATS_PASSWORD, STATS_USER, running_pgbouncer  # noqa: E402
from poolwatch.embedded import start_local_postgres  # noqa: E402
from poolwatch.pgbouncer.console import run_command  # noqa: E402

EXPORTER = str(Path(sys.executable).with_name("poolwatch-exporter"))
PYPI_PEER = REPO / ".venv-peers" / "pgbouncer-exporter" / "bin" / "pgbouncer-exporter"
DEBIAN_COLLECTORS = (REPO / "tests" / "exporter" / "test_exporter_pgbouncer_compare.py").read_text()
DEBIAN_SCRIPT = DEBIAN_COLLECTORS.split('DEBIAN_WITHOUT_STATS = """', 1)[1].split('"""', 1)[0]


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


async def open_clients(bouncer, pools: int, clients: int) -> list[asyncpg.Connection]:
    names = [f"p{i:02d}" for i in range(1, pools + 1)]
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> asyncpg.Connection:
        async with sem:
            return await asyncpg.connect(bouncer.dsn(names[i % pools]), statement_cache_size=0)

    conns = await asyncio.gather(*(one(i) for i in range(clients)))
    by_pool = [conns[i::pools] for i in range(pools)]
    for members in by_pool:
        for conn in members[:2]:
            await conn.execute("BEGIN; SELECT 1")
        for conn in members[2:4]:
            BUSY.append(asyncio.ensure_future(conn.execute("SELECT 1")))
    return list(conns)


BUSY: list[asyncio.Future[object]] = []


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    exit_on_sigterm()
    pg = start_local_postgres()
    procs: list[subprocess.Popen[bytes]] = []
    conns: list[asyncpg.Connection] = []
    try:
        databases = {f"p{i:02d}": "dbname=postgres" for i in range(1, args.pools + 1)}
        settings = {"max_client_conn": args.clients + 100, "default_pool_size": 2}
        with running_pgbouncer(pg.dsn(), settings, databases) as bouncer:
            conns = await open_clients(bouncer, args.pools, args.clients)
            stats_dsn = bouncer.stats_dsn()
            tmp = Path(tempfile.mkdtemp(prefix="bench-pgbouncer-"))
            ours_port, pypi_port, debian_port, both_port = (free_port() for _ in range(4))
            flags = ["--scrape.min-interval", "0", "--labels.top-n", "50", "--log.level", "warn"]
            exporters: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
            ours = start([EXPORTER, "--pgbouncer.dsn", stats_dsn, "--web.listen-address",
                          f"127.0.0.1:{ours_port}", *flags])  # fmt: skip
            exporters["poolwatch-exporter"] = (ours, ours_port)
            peer_env = {"PGPASSWORD": STATS_PASSWORD, "PGSSLMODE": "disable"}
            if PYPI_PEER.exists():
                config = tmp / "peer.yml"
                config.write_text(
                    f"exporter_host: 127.0.0.1\nexporter_port: {pypi_port}\npgbouncers:\n"
                    f"  - dsn: {stats_dsn}\n    connect_timeout: 5\n"
                )
                peer = start([str(PYPI_PEER), "--config", str(config), "--log-level", "ERROR"])
                exporters["PyPI prometheus-pgbouncer-exporter 2.1.2"] = (peer, pypi_port)
            else:
                print(f"(skipping PyPI's peer: {PYPI_PEER} missing; run scripts/install.sh)")
            debian = start(
                [
                    "/usr/bin/python3",
                    "-c",
                    DEBIAN_SCRIPT,
                    STATS_USER,
                    str(bouncer.port),
                    str(debian_port),
                ],
                peer_env,
            )
            exporters["Debian prometheus-pgbouncer-exporter 1.7 (3 of 4 collectors)"] = (
                debian,
                debian_port,
            )
            procs += [p for p, _ in exporters.values()]
            for proc, port in exporters.values():
                wait_listening(port, proc)
            clients = {name: Scraper(port) for name, (_, port) in exporters.items()}
            for client in clients.values():  # warm up
                for _ in range(5):
                    client.get()
            times: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.scrapes):
                for name, client in clients.items():
                    times[name].append(client.get()[0])
            print(
                f"PgBouncer {bouncer_version()}: {args.pools} pools, {args.clients} client "
                f"connections ({2 * args.pools} in transactions, {2 * args.pools} queued); "
                f"{args.scrapes} interleaved scrapes each; machine shared with other jobs"
            )
            our_median = quantiles(times["poolwatch-exporter"])[0]
            print(f"{'exporter':<62} {'median ms':>9} {'p90 ms':>8} {'median / ours':>13}")
            for name, values in times.items():
                median, p90 = quantiles(values)
                print(f"{name:<62} {median:9.2f} {p90:8.2f} {median / our_median:13.1f}")
            # concurrent scrapes: one admin connection, shared round trips
            threads = [
                threading.Thread(target=lambda: Scraper(ours_port).get())
                for _ in range(args.concurrent)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rows = await run_command(bouncer.admin_dsn(), "SHOW CLIENTS")
            mine = sum(1 for r in rows if r.get("application_name") == "poolwatch-exporter")
            print(f"{args.concurrent} concurrent scrapes: {mine} admin connection(s) of ours open")
            print(f"our RSS, PgBouncer side only: {rss_mb(ours.pid):.1f} MB")
            both = start([EXPORTER, "--dsn", pg.dsn(), "--pgbouncer.dsn", stats_dsn,
                          "--web.listen-address", f"127.0.0.1:{both_port}", *flags])  # fmt: skip
            procs.append(both)
            wait_listening(both_port, both)
            both_client = Scraper(both_port)
            for _ in range(50):
                both_client.get()
            print(f"our RSS, PostgreSQL + PgBouncer: {rss_mb(both.pid):.1f} MB")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        for task in BUSY:
            task.cancel()
        for conn in conns:
            conn.terminate()
        pg.stop()


def bouncer_version() -> str:
    out = subprocess.run([PGBOUNCER_BIN, "--version"], capture_output=True, text=True)
    return out.stdout.split()[1] if out.stdout else "?"


if __name__ == "__main__":
    asyncio.run(main())
