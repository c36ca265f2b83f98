"""Instructions per checkout+checkin, counted by valgrind (callgrind): a noise-free companion
to bench_pool.py's wall-clock ratios.

For each variant it runs a child Python under ``valgrind --tool=callgrind`` twice, doing
``--small`` and ``--large`` ``async with engine.connect(): pass`` operations (after the same
warm-up), and reports (instructions(large) - instructions(small)) / (large - small): the
cost of one operation with start-up and imports cancelled out. Asyncio's polling makes the
count vary by a few thousand instructions between runs.

    .venv/bin/python bench/bench_pool_instructions.py            # embedded PostgreSQL
    .venv/bin/python bench/bench_pool_instructions.py --variants bare,poolwatch --concurrency 50

Needs ``valgrind`` (Debian package). Takes a few minutes: every run is ~40x slower than
native.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _postgres import asyncpg_url

CHILD = r"""
import asyncio, sys
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine
import poolwatch
variant, n, tasks, url = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

async def main():
    engine = create_async_engine(url, pool_size=10, max_overflow=5)
    if variant == "poolwatch":
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry(), leak_threshold=30)
    elif variant == "poolwatch-exact-callsite":
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry(), leak_threshold=30,
                             leak_callsite="checkout")
    elif variant == "poolwatch-no-leak-detection":
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry())

    async def worker(k):
        for _ in range(k):
            async with engine.connect():
                pass

    await asyncio.gather(*(worker(200 // tasks) for _ in range(tasks)))
    await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))
    await engine.dispose()

asyncio.run(main())
"""

VARIANTS = ("bare", "poolwatch", "poolwatch-no-leak-detection", "poolwatch-exact-callsite")


def count(script: Path, variant: str, n: int, tasks: int, url: str, out: Path) -> int:
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(script),
            variant,
            str(n),
            str(tasks),
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{variant} x{n} failed under valgrind: {result.stderr[-800:]}")
    match = re.search(r"Collected : (\d+)", result.stderr)
    if not match:
        raise RuntimeError(f"no instruction count from valgrind: {result.stderr[-300:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="libpq URL of a PostgreSQL to use (default: embedded)")
    parser.add_argument("--variants", default=",".join(VARIANTS[:3]))
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1300)
    parser.add_argument("--concurrency", type=int, default=1, help="tasks sharing the pool")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench_pool_instructions: valgrind is not installed (apt-get install valgrind)")
    variants = [v for v in args.variants.split(",") if v]
    if "bare" not in variants:
        variants.insert(0, "bare")
    with asyncpg_url(args.dsn) as url, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        jobs = [(v, n) for v in variants for n in (args.small, args.large)]
        with ThreadPoolExecutor(max_workers=2) as pool:  # two valgrinds at a time
            counts = dict(
                zip(
                    jobs,
                    pool.map(
                        lambda job: count(
                            script,
                            job[0],
                            job[1],
                            args.concurrency,
                            url,
                            Path(tmp) / f"cg.{job[0]}.{job[1]}",
                        ),
                        jobs,
                    ),
                    strict=True,
                )
            )
    per_op = {
        v: (counts[(v, args.large)] - counts[(v, args.small)]) / (args.large - args.small)
        for v in variants
    }
    print(
        f"instructions per `async with engine.connect(): pass`, {args.concurrency} task(s), "
        f"({args.large} - {args.small} operations)"
    )
    for v in variants:
        print(f"  {v:<30} {per_op[v]:10,.0f}   ratio {per_op[v] / per_op['bare']:.3f}")


if __name__ == "__main__":
    main()
