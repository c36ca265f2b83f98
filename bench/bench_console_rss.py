"""What a PgBouncer admin-console driver costs the exporter in memory (RSS), side by side.

Each variant runs in a fresh interpreter that imports what poolwatch-exporter imports
(asyncpg + uvicorn), then the driver, then (for "connected") opens one admin-console
connection to a real PgBouncer and runs SHOW POOLS; it prints its VmRSS. The median of
``--runs`` interpreters per variant is shown with the difference to the baseline. RSS does
not depend on machine load, unlike wall-clock numbers.

    .venv/bin/python bench/bench_console_rss.py             # embedded PostgreSQL + Debian PgBouncer
    .venv/bin/python bench/bench_console_rss.py --runs 5

Needs /usr/sbin/pgbouncer and psycopg 3 (the dev extra) for the comparison.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

BASE = "import asyncio, asyncpg, uvicorn, poolwatch\n"
RSS = (
    "\nprint(int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]))\n"
)


def variants(dsn: str) -> dict[str, str]:
    """Programs to measure, by name."""
    psycopg_connected = f"""import psycopg
async def main():
    conn = await psycopg.AsyncConnection.connect({dsn!r}, autocommit=True)
    cur = conn.cursor()
    await cur.execute("SHOW POOLS", prepare=False)
    assert await cur.fetchall()
    return conn
keep = asyncio.run(main())
"""
    ours_connected = f"""from poolwatch.pgbouncer import AdminConsole
async def main():
    console = await AdminConsole.connect({dsn!r})
    assert await console.show("POOLS")
    return console
keep = asyncio.run(main())
"""
    return {
        "asyncpg + uvicorn + poolwatch (exporter today)": BASE,
        "+ poolwatch.pgbouncer imported": BASE + "import poolwatch.pgbouncer\n",
        "+ poolwatch.pgbouncer connected, SHOW POOLS": BASE + ours_connected,
        "+ psycopg 3 imported": BASE + "import psycopg\n",
        "+ psycopg 3 connected, SHOW POOLS": BASE + psycopg_connected,
    }


def rss_kb(program: str) -> int:
    """VmRSS in kB of a fresh interpreter that ran ``program``."""
    out = subprocess.run(
        [sys.executable, "-c", program + RSS], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["failed"])[-1]
        raise SystemExit(f"bench_console_rss: a variant failed: {last}")
    return int(out.stdout.split()[-1])


def main() -> int:
    """Run every variant ``--runs`` times and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="interpreters per variant")
    args = parser.parse_args()
    from _postgres import exit_on_sigterm
    from pgbouncer_support import running_pgbouncer
    from poolwatch.embedded import start_local_postgres

    exit_on_sigterm()
    local = start_local_postgres()
    try:
        with running_pgbouncer(local.dsn()) as bouncer:
            base = None
            print(f"{'variant':<46} {'RSS MB':>7} {'vs base':>8}")
            for name, program in variants(bouncer.stats_dsn()).items():
                median = statistics.median(rss_kb(program) for _ in range(args.runs)) / 1024
                base = median if base is None else base
                print(f"{name:<46} {median:>7.1f} {median - base:>+8.1f}")
    finally:
        local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
