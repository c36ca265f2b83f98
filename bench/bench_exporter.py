"""Scrape latency of poolwatch-exporter vs Debian's prometheus-postgres-exporter.

Both exporters run as real processes against the same PostgreSQL in the same run; their
scrapes are interleaved so machine noise hits both alike. For each size (client sessions
held open: a mix of idle, idle-in-transaction and active ``pg_sleep`` sessions over 25
application names and 3 databases) it prints the median and p90 of ``--scrapes`` HTTP
scrapes of each exporter (made as Prometheus makes them: keep-alive, its Accept header, which
asks for OpenMetrics first, and gzip), the server-side execution time of our one statement (EXPLAIN
ANALYZE, median), the time our exporter spent inside a scrape (its own
``poolwatch_exporter_scrape_duration_seconds``: query round trip + building the metrics;
encoding the response, the HTTP stack and the client are the rest of the HTTP latency) and
our exporter's RSS. After the last size it adds ``--lock-waiters`` sessions queued on a row
lock and measures again: the scrape's slower path (sessions also kept one by one, pg_locks
read).

    .venv/bin/python bench/bench_exporter.py                    # embedded PostgreSQL 18
    .venv/bin/python bench/bench_exporter.py --sizes 10,300 --scrapes 50

The embedded server's max_connections is raised with ALTER SYSTEM + restart to fit the
largest size. Targets (issue 3): our median <= 1/3 of postgres_exporter's at 300 sessions,
<= 10 ms at 2,000 sessions, RSS <= 40 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from _postgres import exit_on_sigterm
from poolwatch.embedded import start_local_postgres
from poolwatch.exporter.collectors import build_sql
from poolwatch.exporter.database import FEATURES_SQL, Features
from poolwatch.urls import with_database

EXPORTER = str(Path(sys.executable).with_name("poolwatch-exporter"))
POSTGRES_EXPORTER = "/usr/bin/prometheus-postgres-exporter"
DATABASES = ("postgres", "bench_a", "bench_b")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_db(dsn: str, db: str, **extra: str) -> str:
    return with_database(dsn, db, query=extra)


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exporter exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("exporter did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# What Prometheus 2.42 (Debian 12) sends with every scrape: it prefers OpenMetrics and
# accepts gzip. Both exporters get exactly these headers.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
}


class Scraper:
    """A keep-alive HTTP/1.1 client as lean as Prometheus' own (http.client: a scrape
    costs the client ~0.2 ms here, against ~1 ms with httpx)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str = "/metrics") -> tuple[float, str]:
        """(milliseconds until the whole body arrived, the body decompressed)."""
        try:
            elapsed, response, body = self._get(path)
        except (http.client.RemoteDisconnected, ConnectionError):
            # the exporter closed the idle keep-alive connection (uvicorn: after 5 s);
            # Prometheus reconnects too, and the failed attempt is not counted
            self.conn.close()
            elapsed, response, body = self._get(path)
        if response.status != 200:
            raise SystemExit(f"scrape of port {self.conn.port} answered {response.status}")
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return elapsed, body.decode()

    def _get(self, path: str) -> tuple[float, http.client.HTTPResponse, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=PROMETHEUS_HEADERS)
        response = self.conn.getresponse()
        body = response.read()
        return (time.perf_counter() - t0) * 1000, response, body

    def close(self) -> None:
        self.conn.close()


BUSY: list[asyncio.Task[object]] = []  # the pg_sleep statements, cancelled at the end


async def open_sessions(dsn: str, n: int, into: list[asyncpg.Connection]) -> None:
    """Grow ``into`` to ``n`` sessions: 70% idle, 20% idle in transaction, 10% active."""

    async def one(i: int) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            with_db(dsn, DATABASES[i % len(DATABASES)]),
            server_settings={"application_name": f"app-{i % 25}"},
        )
        kind = i % 10
        if kind in (1, 2):
            await conn.execute("BEGIN; SELECT 1")
        elif kind == 3:
            BUSY.append(asyncio.ensure_future(conn.execute("SELECT pg_sleep(3600)")))
        return conn

    start = len(into)
    for batch in range(start, n, 50):
        into += await asyncio.gather(*(one(i) for i in range(batch, min(n, batch + 50))))


async def add_lock_waiters(dsn: str, k: int, into: list[asyncpg.Connection]) -> None:
    """One session holding a row lock and ``k`` sessions queued behind it (the scrape's
    slower path: sessions are then also kept one by one, and pg_locks is read)."""
    holder = await asyncpg.connect(dsn, server_settings={"application_name": "locker"})
    await holder.execute(
        "CREATE TABLE IF NOT EXISTS bench_lock (id int PRIMARY KEY);"
        "INSERT INTO bench_lock VALUES (1) ON CONFLICT DO NOTHING;"
        "BEGIN; SELECT * FROM bench_lock WHERE id = 1 FOR UPDATE"
    )
    into.append(holder)
    for _ in range(k):
        waiter = await asyncpg.connect(dsn, server_settings={"application_name": "locker"})
        wait = waiter.execute("SELECT * FROM bench_lock WHERE id = 1 FOR UPDATE")
        BUSY.append(asyncio.ensure_future(wait))
        into.append(waiter)
    await asyncio.sleep(0.5)  # let them queue


async def server_time_ms(dsn: str, runs: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        features = Features(**dict(await conn.fetchrow(FEATURES_SQL)))
        sql = build_sql(features)
        times = []
        for _ in range(runs):
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}")
            times.append(json.loads(plan)[0]["Execution Time"])
        return statistics.median(times)
    finally:
        await conn.close()


def scrape_duration_ms(body: str) -> float:
    """poolwatch_exporter_scrape_duration_seconds from one of our responses, in ms."""
    for line in body.splitlines():
        if line.startswith("poolwatch_exporter_scrape_duration_seconds "):
            return float(line.split()[1]) * 1000
    raise ValueError("no poolwatch_exporter_scrape_duration_seconds in the response")


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return statistics.median(ordered), p90


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,300,2000")
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument(
        "--lock-waiters",
        type=int,
        default=10,
        help="after the last size, add this many sessions waiting for a row lock and measure "
        "again (0: skip)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.05,
        help="seconds between scrapes, so one exporter's after-work (postgres_exporter's "
        "backend exiting) does not land in the other's measurement; real scrapes are 15 s apart",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    exit_on_sigterm()
    local = start_local_postgres()
    try:
        admin = await asyncpg.connect(local.dsn())
        for db in DATABASES[1:]:
            await admin.execute(f"CREATE DATABASE {db}")
        await admin.close()
        dsn = local.dsn()
        ours_port, theirs_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("POOLWATCH_EXPORTER_")}
        ours = subprocess.Popen(
            [
                EXPORTER,
                "--dsn",
                dsn,
                "--web.listen-address",
                f"127.0.0.1:{ours_port}",
                "--scrape.min-interval",
                "0",
                "--log.level",
                "error",
            ],
            env=env,
        )
        # postgres_exporter 0.11's bgwriter collector fails on PostgreSQL 17+ (renamed
        # columns) and logs every scrape: its stderr is discarded.
        theirs = subprocess.Popen(
            [POSTGRES_EXPORTER, f"--web.listen-address=127.0.0.1:{theirs_port}"],
            env={**env, "DATA_SOURCE_NAME": with_db(dsn, "postgres", sslmode="disable")},
            stderr=subprocess.DEVNULL,
        )
        sessions: list[asyncpg.Connection] = []
        try:
            wait_listening(ours_port, ours)
            wait_listening(theirs_port, theirs)
            their_version = subprocess.run(
                [POSTGRES_EXPORTER, "--version"], capture_output=True, text=True
            )
            version = re.sub(
                r"\s.*", "", (their_version.stdout + their_version.stderr).split("version ")[1]
            )
            print(
                f"PostgreSQL {await server_version(dsn)}, postgres_exporter {version}, "
                f"{args.scrapes} scrapes per exporter and size, interleaved, {args.pause}s apart; "
                "max_connections = sessions + 100"
            )
            print(
                f"{'sessions':>11} | {'ours median':>11} {'p90':>7} | {'theirs median':>13} "
                f"{'p90':>7} | {'ratio':>5} | {'our SQL':>8} | {'inside':>8} | {'our RSS':>7}"
            )
            ours_client, theirs_client = Scraper(ours_port), Scraper(theirs_port)

            async def measure(label: str) -> None:
                ours_t: list[float] = []
                theirs_t: list[float] = []
                inside: list[float] = []  # our own scrape_duration: query + collect
                for _ in range(args.scrapes):
                    for client, into in ((ours_client, ours_t), (theirs_client, theirs_t)):
                        elapsed, body = client.get()
                        into.append(elapsed)
                        if client is ours_client:
                            inside.append(scrape_duration_ms(body))
                        time.sleep(args.pause)
                om, op90 = quantiles(ours_t)
                tm, tp90 = quantiles(theirs_t)
                sql_ms = await server_time_ms(dsn, 11)
                inside_ms = statistics.median(inside)
                print(
                    f"{label:>11} | {om:>8.2f} ms {op90:>7.2f} | {tm:>10.2f} ms {tp90:>7.2f} | "
                    f"{tm / om:>5.1f} | {sql_ms:>5.2f} ms | {inside_ms:>5.2f} ms | "
                    f"{rss_mb(ours.pid):>4.1f} MB"
                )

            for size in sizes:
                await close_sessions(sessions)
                admin = await asyncpg.connect(dsn)
                await admin.execute(f"ALTER SYSTEM SET max_connections = {max(100, size + 100)}")
                await admin.close()
                local.restart()
                await open_sessions(dsn, size, sessions)
                deadline = time.monotonic() + 60
                while "\npg_up 1" not in ours_client.get()[1]:  # ours reconnects by itself
                    assert time.monotonic() < deadline, "poolwatch-exporter did not reconnect"
                    time.sleep(0.2)
                theirs_client.get()
                await measure(str(size))
            if args.lock_waiters:
                await add_lock_waiters(dsn, args.lock_waiters, sessions)
                await measure(f"+{args.lock_waiters} waiting")
            ours_client.close()
            theirs_client.close()
            print(f"postgres_exporter RSS at the end: {rss_mb(theirs.pid):.1f} MB")
        finally:
            await close_sessions(sessions)
            for proc in (ours, theirs):
                proc.terminate()
                proc.wait(timeout=15)
    finally:
        local.stop()


async def close_sessions(sessions: list[asyncpg.Connection]) -> None:
    for task in BUSY:
        task.cancel()
    await asyncio.gather(*BUSY, return_exceptions=True)
    BUSY.clear()
    for conn in sessions:
        conn.terminate()
    sessions.clear()


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
