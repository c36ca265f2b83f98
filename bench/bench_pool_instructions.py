"""Instructions per checkout+checkin, counted by valgrind (callgrind): a noise-free companion
to bench_pool.py's wall-clock ratios.

For each variant it runs a child Python under ``valgrind --tool=callgrind`` twice, doing
``--small`` and ``--large`` ``async with engine.connect(): pass`` operations (after the same
warm-up), and reports (instructions(large) - instructions(small)) / (large - small): the
cost of one operation with start-up and imports cancelled out.

One process's count is not a measurement of the code alone: it depends on the process's
layout. CPython 3.11 caches type attribute lookups in one 4,096-slot table indexed by the
type's version tag and the name's address, and two lookups made on every checkout that
land in the same slot evict each other. Which ones do changes with any class created
earlier, so the same code reads 211k-229k instructions per bare checkout from one layout
to the next (seen here, 2026-12-02), far more than any difference worth measuring. Run
``r`` therefore creates ``37 * r`` classes before the engine, which moves every later
version tag, and each variant is run in the same ``--repeat`` layouts; the median over
layouts is reported, with its quartiles. (Mytkowicz et al., "Producing wrong data without
doing anything obviously wrong!", ASPLOS 2009, found the same with link order and
environment size.)

    .venv/bin/python bench/bench_pool_instructions.py            # embedded PostgreSQL
    .venv/bin/python bench/bench_pool_instructions.py --variants bare,poolwatch --concurrency 50
    .venv/bin/python bench/bench_pool_instructions.py --variants poolwatch,poolwatch-routes
    .venv/bin/python bench/bench_pool_instructions.py --workload endpoint \
        --variants poolwatch-no-routes,poolwatch

``poolwatch-routes``: RouteMiddleware built and every checkout inside a matched request
(per-route series on); ``poolwatch-no-routes``: instrumented, without RouteMiddleware (for
the endpoint workload, where the other poolwatch variants add it).

Needs ``valgrind`` (Debian package). Takes several minutes: every run is ~40x slower than
native, and there are 2 x ``--repeat`` runs per variant, two at a time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
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
variant, n, tasks, url, workload, layout = sys.argv[1:7]
n, tasks = int(n), int(tasks)
# The layout: classes that take CPython's next type version tags before the engine's do,
# so which (type, attribute) lookups share a slot of its method cache changes with it.
_layout = [type(f"Layout{i}", (), {}) for i in range(int(layout) * 37)]
for _cls in _layout:
    getattr(_cls, "tagged", None)

async def main():
    # (pool_timeout: under valgrind, on a busy machine, 50 tasks can wait longer than 30 s)
    engine = create_async_engine(url, pool_size=10, max_overflow=5, pool_timeout=600)
    if variant == "poolwatch":
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry(), leak_threshold=30)
    elif variant == "poolwatch-exact-callsite":
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry(), leak_threshold=30,
                             leak_callsite="checkout")
    elif variant == "poolwatch-no-leak-detection":
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry())
    elif variant == "poolwatch-native-branches":
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry(), leak_threshold=30)
        # Under valgrind every duration poolwatch measures is ~50x longer than natively, so
        # its duration-dependent branches (the first-bucket shortcut before a bisect, the
        # 1 ms exemplar threshold) go the other way than in a native run of this loop, where
        # >99% of checkouts and holds are under 100 us. Scaling those thresholds by 50 makes
        # them go as natively; everything else is the unchanged "poolwatch" variant.
        from poolwatch.instrumentation import accounting, stats
        tr = engine.sync_engine.pool._poolwatch
        for name in ("checkout_duration", "hold_duration"):
            scaled = stats.Histogram([b * 50 for b in getattr(tr.stats, name).bounds])
            setattr(tr.stats, name, scaled)
        accounting.EXEMPLAR_MIN_SECONDS = 0.05
        tr.specialise()  # the accounting closes over the histograms and the threshold

    if variant == "poolwatch-routes":
        # RouteMiddleware built (as Starlette does at the first request): per-route series on
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry(), leak_threshold=30)
        poolwatch.RouteMiddleware(None)
    elif variant == "poolwatch-no-routes":  # the endpoint workload without RouteMiddleware
        poolwatch.instrument(engine, name="b", registry=CollectorRegistry(), leak_threshold=30)

    if variant == "poolwatch-in-place":
        # instrument() after the warm-up below, on a pool that already holds connections:
        # it is changed in place (its class swapped), not rebuilt.
        async def instrument_warm():
            poolwatch.instrument(engine, name="b", registry=CollectorRegistry(),
                                 leak_threshold=30)
    else:
        async def instrument_warm():
            pass

    if workload == "endpoint":
        import httpx
        import sqlalchemy as sa
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/one")
        async def one():
            async with engine.connect() as conn:
                return {"v": (await conn.execute(sa.text("select 1"))).scalar_one()}

        if variant not in ("bare", "poolwatch-no-routes"):
            app.add_middleware(poolwatch.RouteMiddleware)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")

        async def worker(k):
            for _ in range(k):
                assert (await client.get("/one")).status_code == 200
    elif variant == "poolwatch-routes":
        # each checkout inside a request whose route the router has matched (what
        # RouteMiddleware and Starlette's router leave in the context)
        from poolwatch.instrumentation.context import RequestScope, current_request

        class Route:
            path = "/items/{item_id}"

        async def worker(k):
            current_request.set(RequestScope({"method": "GET", "route": Route()}))
            for _ in range(k):
                async with engine.connect():
                    pass
    else:
        async def worker(k):
            for _ in range(k):
                async with engine.connect():
                    pass

    await asyncio.gather(*(worker(200 // tasks) for _ in range(tasks)))
    await instrument_warm()
    await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))
    await engine.dispose()

asyncio.run(main())
"""

VARIANTS = (
    "bare",
    "poolwatch",
    "poolwatch-no-leak-detection",
    "poolwatch-exact-callsite",
    "poolwatch-native-branches",
    "poolwatch-in-place",
    "poolwatch-routes",
    "poolwatch-no-routes",
)


def count(
    script: Path,
    variant: str,
    n: int,
    tasks: int,
    url: str,
    workload: str,
    layout: int,
    out: Path,
) -> int:
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
            workload,
            str(layout),
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
    parser.add_argument(
        "--workload",
        choices=("checkout", "endpoint"),
        default="checkout",
        help="checkout: `async with engine.connect(): pass`; endpoint: a FastAPI GET doing "
        "SELECT 1 through httpx's in-process ASGI transport (poolwatch variants add "
        "RouteMiddleware)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=9,
        help="layouts per variant (run r in layout r); the median per-op count is reported, "
        "with its quartiles",
    )
    parser.add_argument("--each", action="store_true", help="also print every layout's count")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench_pool_instructions: valgrind is not installed (apt-get install valgrind)")
    variants = [v for v in args.variants.split(",") if v]
    if "bare" not in variants:
        variants.insert(0, "bare")
    with asyncpg_url(args.dsn) as url, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        sizes = (args.small, args.large)
        jobs = [(v, n, r) for r in range(args.repeat) for v in variants for n in sizes]
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
                            args.workload,
                            job[2],
                            Path(tmp) / f"cg.{job[0]}.{job[1]}.{job[2]}",
                        ),
                        jobs,
                    ),
                    strict=True,
                )
            )
    # One per-op figure per layout (large minus small in that layout).
    per_layout = {
        v: [
            (counts[(v, args.large, r)] - counts[(v, args.small, r)]) / (args.large - args.small)
            for r in range(args.repeat)
        ]
        for v in variants
    }
    per_op = {v: statistics.median(values) for v, values in per_layout.items()}
    what = (
        "`async with engine.connect(): pass`"
        if args.workload == "checkout"
        else "FastAPI GET /one (SELECT 1)"
    )
    print(
        f"instructions per {what}, {args.concurrency} task(s), "
        f"({args.large} - {args.small} operations), median over {args.repeat} layouts"
    )
    for v in variants:
        values = per_layout[v]
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        print(
            f"  {v:<30} {per_op[v]:10,.0f}   ratio {per_op[v] / per_op['bare']:.3f}"
            f"   (layouts p25-p75 {quartiles[0]:,.0f}..{quartiles[2]:,.0f},"
            f" {min(values):,.0f}..{max(values):,.0f} in all)"
        )
    if args.each:
        for v in variants:
            print(f"  {v} by layout: " + " ".join(f"{x:,.0f}" for x in per_layout[v]))


if __name__ == "__main__":
    main()
