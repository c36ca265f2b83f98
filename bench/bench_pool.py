"""Checkout/checkin overhead of poolwatch vs the alternatives, measured side by side.

Variants, each on its own AsyncEngine against the same real PostgreSQL, interleaved
round by round in one process so machine noise hits them all alike:

  bare        no instrumentation
  poolwatch   poolwatch.instrument(...) with every metric and leak detection on
  naive       prometheus_client listeners: Gauge inc/dec + Histogram observe on
              checkout/checkin (what most blog posts suggest)
  empty       a checkout and a checkin listener that do nothing: what hooking the
              pool through SQLAlchemy's events costs before any bookkeeping
  otel        OpenTelemetry's SQLAlchemyInstrumentor with an SDK MeterProvider
  pw+otel     poolwatch with Prometheus and an OpenTelemetry MeterProvider
  in-place    poolwatch instrumenting a pool that already holds connections (the warm-up
              below), so it is changed in place instead of rebuilt
  routes      poolwatch with per-route series (what RouteMiddleware turns on), every
              checkout inside a request whose route the router has matched

Workloads: ``async with engine.connect(): pass`` on a warm pool (pool_size=10),
sequentially and from 50 concurrent tasks; and a FastAPI endpoint doing ``SELECT 1``
(in-process ASGI transport) with and without poolwatch (with RouteMiddleware).

RouteMiddleware switches per-route accounting on for every pool of its process: the pool
workloads switch it off again after the endpoint rounds, and the ``routes`` variant's pool
alone is built with it on, so ``poolwatch`` measures the path without the middleware.

    .venv/bin/python bench/bench_pool.py            # embedded PostgreSQL
    .venv/bin/python bench/bench_pool.py --dsn postgresql://...  --rounds 60

Prints microseconds per operation (median over rounds) and the ratio to ``bare``: the
median over rounds of (variant time / bare time in that same round), with its quartiles.

One process's ratios move by about +-0.01 from one process to the next even with many
rounds (where each object lands in memory differs per process). ``--processes N`` repeats
the whole interleaved run in N fresh processes, one after the other, and pools their
rounds; it also prints each process's own median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import poolwatch
from _postgres import asyncpg_url
from poolwatch.instrumentation.context import RequestScope, current_request, route_tracking
from poolwatch.instrumentation.flusher import flusher

Setup = Callable[[str], AsyncEngine]
DSN_ENV = "POOLWATCH_BENCH_DSN"


def make_bare(url: str) -> AsyncEngine:
    return create_async_engine(url, pool_size=10, max_overflow=5)


def make_poolwatch(url: str) -> AsyncEngine:
    engine = make_bare(url)
    poolwatch.instrument(engine, name="bench", registry=CollectorRegistry(), leak_threshold=30)
    return engine


def make_naive(url: str) -> AsyncEngine:
    engine = make_bare(url)
    registry = CollectorRegistry()
    in_use = Gauge("naive_in_use", "in use", ["pool"], registry=registry).labels("bench")
    hold = Histogram("naive_hold_seconds", "hold", ["pool"], registry=registry).labels("bench")
    started: dict[int, float] = {}

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        in_use.inc()
        started[id(record)] = time.perf_counter()

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def on_checkin(dbapi_conn: Any, record: Any) -> None:
        in_use.dec()
        t0 = started.pop(id(record), None)
        if t0 is not None:
            hold.observe(time.perf_counter() - t0)

    return engine


def make_empty_listeners(url: str) -> AsyncEngine:
    """The floor of any listener-based approach: checkout and checkin listeners that do
    nothing (the issue measured ~1.03-1.05 for one before any code)."""
    engine = make_bare(url)

    def on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        pass

    def on_checkin(dbapi_conn: Any, record: Any) -> None:
        pass

    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    event.listen(engine.sync_engine.pool, "checkin", on_checkin)
    return engine


def make_otel(url: str) -> AsyncEngine:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    engine = make_bare(url)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    # skip_dep_check: the instrumentor declares sqlalchemy<2.1 and silently does nothing
    # on 2.1 otherwise.
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine,
        meter_provider=provider,
        enable_commenter=False,
        skip_dep_check=True,
    )
    return engine


def make_poolwatch_otel(url: str) -> AsyncEngine:
    # poolwatch with Prometheus *and* OpenTelemetry (SDK MeterProvider): durations are
    # buffered on the hot path and replayed into the SDK by poolwatch's background flusher,
    # which shares the GIL with this loop, so its cost shows up in this column too.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    engine = make_bare(url)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    poolwatch.instrument(
        engine,
        name="bench-otel",
        registry=CollectorRegistry(),
        leak_threshold=30,
        meter_provider=provider,
    )
    return engine


def exempt_from_otel_connect_wrap(engine: AsyncEngine) -> None:
    """Keep OpenTelemetry's instrumentor to the engine it was given.

    ``SQLAlchemyInstrumentor().instrument(engine=...)`` also wraps ``Engine.connect`` for
    every engine in the process (a "connect" span per checkout): left alone, the bare and
    poolwatch engines would pay for it too, and every ratio to bare would shrink. An
    instance attribute pins this engine's ``connect`` to the unwrapped method.
    """
    sync_engine = engine.sync_engine
    original = getattr(type(sync_engine).connect, "__wrapped__", None)
    if original is not None:
        sync_engine.connect = original.__get__(sync_engine)  # type: ignore[method-assign]


def instrument_in_place(engine: AsyncEngine) -> None:
    """The in-place path: ``instrument()`` on a pool that already has connections."""
    assert engine.sync_engine.pool.checkedin() > 0  # type: ignore[attr-defined]
    poolwatch.instrument(engine, name="in-place", registry=CollectorRegistry(), leak_threshold=30)


def make_routes(url: str) -> AsyncEngine:
    """poolwatch with per-route accounting on for this pool only (the switch is
    process-wide: a RouteMiddleware would turn it on for every variant's pool)."""
    engine = make_poolwatch(url)
    tracker = engine.sync_engine.pool._poolwatch  # type: ignore[attr-defined]
    route_tracking.enabled = True
    try:
        tracker.specialise()  # the accounting closes over the flag
    finally:
        route_tracking.enabled = False
    return engine


class _Route:
    path = "/items/{item_id}"


async def in_request(measure: Any) -> float:
    """Run ``measure`` (a coroutine) as a task inside a request Starlette has routed."""
    context = contextvars.copy_context()
    context.run(current_request.set, RequestScope({"method": "GET", "route": _Route()}))
    result: float = await asyncio.get_running_loop().create_task(measure, context=context)
    return result


VARIANTS: dict[str, Setup] = {
    "bare": make_bare,
    "poolwatch": make_poolwatch,
    "naive": make_naive,
    "empty": make_empty_listeners,
    "otel": make_otel,
    "pw+otel": make_poolwatch_otel,
    "in-place": make_bare,
    "routes": make_routes,
}
# Variants whose checkouts run inside a request (current_request set, route matched).
IN_REQUEST = {"routes"}
# Variants finished after the warm-up, once their pool holds connections.
AFTER_WARM_UP: dict[str, Callable[[AsyncEngine], None]] = {"in-place": instrument_in_place}


async def sequential(engine: AsyncEngine, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        async with engine.connect():
            pass
    return (time.perf_counter() - t0) / n


async def concurrent(engine: AsyncEngine, n: int, tasks: int = 50) -> float:
    per_task = n // tasks

    async def worker() -> None:
        for _ in range(per_task):
            async with engine.connect():
                pass

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (time.perf_counter() - t0) / (per_task * tasks)


def make_endpoint(url: str, instrumented: bool) -> tuple[Any, AsyncEngine]:
    from fastapi import FastAPI

    engine = make_poolwatch(url) if instrumented else make_bare(url)
    app = FastAPI()

    @app.get("/one")
    async def one() -> dict[str, int]:
        async with engine.connect() as conn:
            return {"v": (await conn.execute(sa.text("select 1"))).scalar_one()}

    if instrumented:
        app.add_middleware(poolwatch.RouteMiddleware)
    return app, engine


async def endpoint_rate(app: Any, n: int, tasks: int = 20) -> float:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        per_task = n // tasks

        async def worker() -> None:
            for _ in range(per_task):
                response = await client.get("/one")
                assert response.status_code == 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        return (time.perf_counter() - t0) / (per_task * tasks)


async def run(url: str, rounds: int, ops: int, variants: list[str]) -> dict[str, Any]:
    # The endpoint first: OpenTelemetry's instrumentor, once loaded for the "otel" variant,
    # also instruments engines created afterwards, and would slow both endpoint apps.
    apps = {flag: make_endpoint(url, flag) for flag in (False, True)}
    endpoint: dict[bool, list[float]] = {False: [], True: []}
    for app, _ in apps.values():
        await endpoint_rate(app, 200)
    for r in range(rounds):
        for flag in (False, True) if r % 2 == 0 else (True, False):
            endpoint[flag].append(await endpoint_rate(apps[flag][0], ops // 2))
    for _, engine in apps.values():
        await engine.dispose()
    endpoint_times = {"bare": endpoint[False], "poolwatch": endpoint[True]}
    route_tracking.enable(False)  # the endpoint's RouteMiddleware turned it on (see above)

    engines = {name: VARIANTS[name](url) for name in variants}
    for name, engine in engines.items():
        if name != "otel":
            exempt_from_otel_connect_wrap(engine)
    for engine in engines.values():  # warm: open every pooled connection once
        await asyncio.gather(*(concurrent(engine, 200, tasks=10) for _ in range(1)))
    for name, finish in AFTER_WARM_UP.items():
        if name in engines:
            finish(engines[name])
    results: dict[str, dict[str, list[float]]] = {
        w: {v: [] for v in variants} for w in ("sequential", "concurrent-50")
    }
    shuffle = random.Random(20261121)
    for _ in range(rounds):
        # Each workload's variants run back to back in a fresh random order, so a slow
        # moment of the machine hits one round of every variant, not one variant.
        for workload, measure in (("sequential", sequential), ("concurrent-50", concurrent)):
            order = list(variants)
            shuffle.shuffle(order)
            for name in order:
                run_one = measure(engines[name], ops)
                per_op = await (in_request(run_one) if name in IN_REQUEST else run_one)
                # What pw+otel buffered is its cost, whether the background flusher got to
                # it during the round or not: flushed here, and charged to the variant.
                flush_started = time.perf_counter()
                flusher.flush_now()
                per_op += (time.perf_counter() - flush_started) / ops
                results[workload][name].append(per_op)
    for engine in engines.values():
        await engine.dispose()

    return {"pool": results, "endpoint": endpoint_times}


def median_ratio(times: list[float], bare: list[float]) -> float:
    """Median over rounds of (variant time / bare time in the same round)."""
    return statistics.median(t / b for t, b in zip(times, bare, strict=True))


def report(runs: list[dict[str, Any]], variants: list[str]) -> None:
    """Print the pooled rounds of ``runs`` (one per process), each process's median too."""
    print(f"python {sys.version.split()[0]}, sqlalchemy {sa.__version__}, pid {os.getpid()}")
    processes = len(runs)
    for workload in runs[0]["pool"]:
        per_run = [run["pool"][workload] for run in runs]
        bare = [t for run in per_run for t in run["bare"]]
        print(
            f"\n{workload}: async with engine.connect(): pass  "
            f"({len(bare)} rounds, {processes} process{'es' if processes > 1 else ''})"
        )
        each = "   per-process ratios" if processes > 1 else ""
        print(f"  {'variant':<10} {'us/op':>8} {'ratio':>7}   ratio p25-p75{each}")
        for name in variants:
            times = [t for run in per_run for t in run[name]]
            ratios = sorted(t / b for t, b in zip(times, bare, strict=True))
            q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
            line = (
                f"  {name:<10} {statistics.median(times) * 1e6:8.1f} "
                f"{statistics.median(ratios):7.3f}   {q1:.3f}-{q3:.3f}"
            )
            if processes > 1:
                line += "   " + " ".join(
                    f"{median_ratio(run[name], run['bare']):.3f}" for run in per_run
                )
            print(line)
    bare_t = [t for run in runs for t in run["endpoint"]["bare"]]
    inst_t = [t for run in runs for t in run["endpoint"]["poolwatch"]]
    paired = sorted(b / i for b, i in zip(bare_t, inst_t, strict=True))
    print("\nFastAPI GET /one (SELECT 1), 20 concurrent clients, in-process ASGI")
    print(f"  {'variant':<10} {'req/s':>8} {'ratio':>7}")
    print(f"  {'bare':<10} {1 / statistics.median(bare_t):8.0f} {1.0:7.3f}")
    line = (
        f"  {'poolwatch':<10} {1 / statistics.median(inst_t):8.0f} "
        f"{statistics.median(paired):7.3f}  (throughput ratio)"
    )
    if processes > 1:
        line += "  per process: " + " ".join(
            f"{median_ratio(run['endpoint']['bare'], run['endpoint']['poolwatch']):.3f}"
            for run in runs
        )
    print(line)
    print("\nratio = median over rounds of (variant time / bare time in the same round)")


def run_processes(url: str, args: argparse.Namespace, variants: list[str]) -> list[dict[str, Any]]:
    """The whole run in ``args.processes`` fresh processes, one after the other."""
    runs = []
    # The URL goes through the environment: a password on a command line is visible to
    # every user of the machine (ps).
    env = {**os.environ, DSN_ENV: url}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            out = os.path.join(tmp, f"run{i}.json")
            command = [sys.executable, os.path.abspath(__file__)]
            command += ["--rounds", str(args.rounds), "--ops", str(args.ops)]
            command += ["--variants", ",".join(variants), "--json-out", out]
            status = subprocess.run(command, env=env, check=False).returncode
            if status != 0:
                sys.exit(f"bench_pool: process {i + 1} of {args.processes} failed (exit {status})")
            with open(out) as f:
                runs.append(json.load(f))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV),
        help=f"libpq URL of a PostgreSQL to use (default: ${DSN_ENV}, else embedded)",
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--ops", type=int, default=500, help="operations per round and variant")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="repeat the whole run in N fresh processes and pool their rounds",
    )
    parser.add_argument("--json-out", help=argparse.SUPPRESS)  # a --processes child's results
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if "bare" not in variants:
        variants.insert(0, "bare")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    with asyncpg_url(args.dsn) as url:
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(asyncio.run(run(url, args.rounds, args.ops, variants)), f)
            return
        if args.processes == 1:
            runs = [asyncio.run(run(url, args.rounds, args.ops, variants))]
        else:
            runs = run_processes(url, args, variants)
    report(runs, variants)


if __name__ == "__main__":
    main()
