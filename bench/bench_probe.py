"""One poolwatch-exporter probing 20 targets vs single-target exporters of the same servers.

Two servers: the embedded PostgreSQL 18 (10 databases, probed as named targets over its
Unix socket) and a throw-away Debian PostgreSQL 15 (10 databases, probed as
``127.0.0.1:PORT/db`` over TCP with a password), each database with a few idle client
sessions. Beside the /probe exporter run one ordinary exporter per server (``--dsn``), the
baseline. Every ``--interval`` seconds each target is scraped once, as Prometheus does it:
one keep-alive connection per target, scrapes spread over the interval by a fixed offset
per target (each baseline is scraped as often as the probes of its server, on the same schedule,
interleaved, without --scrape.min-interval's cache), after one
unmeasured round (a target's first probe connects; the baselines connect at start). At the end:
per-probe latency median / p99 against the baseline of the same server, the /probe
exporter's CPU (share of one core over the run) and RSS (now and peak), and the exporter's
connections per target as the servers see them (``pg_stat_activity``).

    .venv/bin/python bench/bench_probe.py                   # 20 targets, every 5 s, 3 min
    .venv/bin/python bench/bench_probe.py --duration 60     # shorter

Targets (issue 18): probe median <= 1.2x the single-target scrape of the same server,
RSS <= 60 MB with 20 targets, exactly one connection per target. Wall-clock numbers move
with the machine's load (say so next to them); RSS and connection counts do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

EXPORTER = str(Path(sys.executable).with_name("poolwatch-exporter"))
ACCEPT = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"
SESSIONS_PER_DB = 3


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_stat(pid: int) -> tuple[float, int, int]:
    """(CPU seconds used, VmRSS kB, VmHWM kB) of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return cpu, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def start_exporter(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLWATCH_EXPORTER_")}
    proc = subprocess.Popen(
        [EXPORTER, "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn", *args],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench_probe: the exporter did not start")


def socket_url(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))


async def setup_databases(admin_dsn: str, names: list[str], keep: list[Any]) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    for name in names:
        dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
        for i in range(SESSIONS_PER_DB):
            keep.append(await asyncpg.connect(dsn, server_settings={"application_name": f"app{i}"}))


async def exporter_connections(admin_dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname, count(*) AS n FROM pg_stat_activity "
            "WHERE application_name = 'poolwatch-exporter' GROUP BY datname"
        )
    finally:
        await conn.close()
    return {r["datname"]: int(r["n"]) for r in rows}


async def scrape_schedule(
    urls: dict[str, str], interval: float, duration: float
) -> dict[str, list[float]]:
    """Scrape each URL once per ``interval`` at its own offset; latencies in seconds."""
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    failures: list[str] = []
    retries: list[str] = []
    async with httpx.AsyncClient(timeout=10) as warm:  # not measured: the first connects
        await asyncio.gather(*(warm.get(url) for url in urls.values()))
    start = time.monotonic() + 1.0

    async def one(name: str, url: str, offset: float) -> None:
        async with httpx.AsyncClient(headers={"Accept": ACCEPT}, timeout=10) as client:
            n = 0
            while True:
                at = start + offset + n * interval
                if at - start > duration:
                    return
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                t0 = time.perf_counter()
                try:
                    response = await client.get(url)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # the server closed the idle keep-alive connection as we reused it:
                    # retry on a new connection, as Go's client (Prometheus) does
                    retries.append(name)
                    t0 = time.perf_counter()
                    response = await client.get(url)
                elapsed = time.perf_counter() - t0
                if response.status_code != 200 or b"\npg_up 1" not in response.content:
                    failures.append(f"{name}: HTTP {response.status_code}")
                latencies[name].append(elapsed)
                n += 1

    names = sorted(urls)
    await asyncio.gather(
        *(one(name, urls[name], interval * i / len(names)) for i, name in enumerate(names))
    )
    if failures:
        raise SystemExit(f"bench_probe: {len(failures)} failed scrapes, e.g. {failures[0]}")
    if retries:
        print(f"({len(retries)} scrapes retried on a new connection after a keep-alive close)")
    return latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets-per-server", type=int, default=10)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of scraping")
    args = parser.parse_args()
    from fleet_support import SUPERUSER_PASSWORD, debian_postgres
    from poolwatch.embedded import start_local_postgres

    n = args.targets_per_server
    local = start_local_postgres()
    procs: list[subprocess.Popen[bytes]] = []
    keep: list[Any] = []
    try:
        with debian_postgres(max_connections=100) as pg15, tempfile.TemporaryDirectory() as tmp:
            dbs18 = [f"bench_probe_{i:02d}" for i in range(n)]
            dbs15 = [f"bench_probe_{i:02d}" for i in range(n)]
            loop = asyncio.new_event_loop()
            loop.run_until_complete(setup_databases(local.dsn(), dbs18, keep))
            loop.run_until_complete(setup_databases(pg15.socket_dsn, dbs15, keep))
            config = Path(tmp) / "poolwatch.yml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "auth_modules": {
                            "local": {"userpass": {"username": "postgres"}},
                            "pg15": {
                                "userpass": {"username": "postgres", "password": SUPERUSER_PASSWORD}
                            },
                        },
                        "probe": {
                            "allowed_targets": [f"127.0.0.1:{pg15.port}/bench_probe_*"],
                            "targets": {
                                f"pg18-{db}": {
                                    "url": socket_url(local.dsn(), db),
                                    "auth_module": "local",
                                }
                                for db in dbs18
                            },
                            "max_targets": 2 * n,
                        },
                    }
                )
            )
            prober, probe_url = start_exporter("--config.file", str(config))
            # no snapshot cache: each baseline scrape queries, as each probe does
            single18, url18 = start_exporter("--dsn", local.dsn(), "--scrape.min-interval", "0")
            single15, url15 = start_exporter("--dsn", pg15.tcp_dsn(), "--scrape.min-interval", "0")
            procs += [prober, single18, single15]
            urls = {f"probe pg18 {db}": f"{probe_url}/probe?target=pg18-{db}" for db in dbs18}
            urls.update(
                {
                    f"probe pg15 {db}": f"{probe_url}/probe?"
                    + urlencode({"target": f"127.0.0.1:{pg15.port}/{db}", "module": "pg15"})
                    for db in dbs15
                }
            )
            for i in range(n):  # as many baseline scrapes as probes, on the same schedule
                urls[f"single pg18 {i:02d}"] = url18 + "/metrics"
                urls[f"single pg15 {i:02d}"] = url15 + "/metrics"
            cpu0, _, _ = proc_stat(prober.pid)
            t0 = time.monotonic()
            latencies = loop.run_until_complete(scrape_schedule(urls, args.interval, args.duration))
            wall = time.monotonic() - t0
            cpu1, rss, hwm = proc_stat(prober.pid)
            conns18 = loop.run_until_complete(exporter_connections(local.dsn()))
            conns15 = loop.run_until_complete(exporter_connections(pg15.socket_dsn))
            for conn in keep:
                conn.terminate()
            loop.close()

            print(
                f"bench_probe: {2 * n} targets (PostgreSQL 18 embedded x {n}, PostgreSQL "
                f"{pg15.version} x {n}), a scrape of each every {args.interval:g} s for "
                f"{args.duration:g} s, {SESSIONS_PER_DB} idle sessions per database"
            )
            print(
                f"{'':28} {'scrapes':>8} {'median ms':>10} {'p99 ms':>8} {'median vs single':>17}"
            )
            for server in ("pg18", "pg15"):
                probe_lat = [
                    v for k, vs in latencies.items() if k.startswith(f"probe {server}") for v in vs
                ]
                single_lat = [
                    v for k, vs in latencies.items() if k.startswith(f"single {server}") for v in vs
                ]
                base = statistics.median(single_lat)
                for label, values in (
                    (f"single-target {server}", single_lat),
                    (f"/probe {server} (all targets)", probe_lat),
                ):
                    med, tail = statistics.median(values), p99(values)
                    print(
                        f"{label:28} {len(values):>8} {med * 1000:>10.2f} {tail * 1000:>8.2f} "
                        f"{med / base:>16.2f}x"
                    )
            print(
                f"/probe exporter: CPU {100 * (cpu1 - cpu0) / wall:.1f}% of one core over the run, "
                f"RSS {rss / 1024:.1f} MB now, {hwm / 1024:.1f} MB peak"
            )
            per_target = [conns18.get(db, 0) for db in dbs18] + [conns15.get(db, 0) for db in dbs15]
            print(
                f"exporter connections per target (pg_stat_activity): min {min(per_target)}, "
                f"max {max(per_target)}, total {sum(per_target)} for {len(per_target)} targets"
            )
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
