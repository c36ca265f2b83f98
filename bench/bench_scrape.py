"""What a /metrics scrape costs the application's event loop.

Builds a registry with ``--pools`` instrumented engines (each exports ~70 samples, most of
them histogram buckets), then, while a ticker task measures how late the event loop wakes
it up (every 1 ms), scrapes ``--scrapes`` times through

  prometheus_client.make_asgi_app   renders on the event loop
  poolwatch.metrics_app             renders in a worker thread

and prints the render time per scrape and the loop lag (p50 / p99 / max) for each,
side by side, plus the lag with no scrapes at all as the baseline.

    .venv/bin/python bench/bench_scrape.py --pools 4 --scrapes 200

No database is needed: the pools are SQLAlchemy engines on SQLite that are never used.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app

import poolwatch


async def lag_while(work: Any, period: float = 0.001) -> list[float]:
    """Run ``work()`` while measuring event-loop lag; returns the lags in seconds."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(period)
            lags.append(time.perf_counter() - t0 - period)

    task = asyncio.create_task(ticker())
    await work()
    done.set()
    await task
    return lags


async def scrape_many(app: Any, n: int) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(n):
            response = await client.get("/")
            assert response.status_code == 200
            await asyncio.sleep(0.002)


def summary(lags: list[float]) -> str:
    ordered = sorted(lags)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (
        f"p50 {statistics.median(ordered) * 1e3:6.3f} ms  p99 {p99 * 1e3:6.3f} ms  "
        f"max {ordered[-1] * 1e3:6.3f} ms"
    )


async def run(pools: int, scrapes: int) -> None:
    registry = CollectorRegistry()
    engines = [sa.create_engine("sqlite://", pool_size=5) for _ in range(pools)]
    for i, engine in enumerate(engines):
        poolwatch.instrument(engine, name=f"pool{i}", registry=registry, leak_threshold=30)
    body = generate_latest(registry)
    samples = sum(1 for line in body.decode().splitlines() if line and line[0] != "#")
    t0 = time.perf_counter()
    for _ in range(200):
        generate_latest(registry)
    render = (time.perf_counter() - t0) / 200
    print(f"{pools} pools, {samples} samples, {len(body)} bytes; render {render * 1e3:.3f} ms")

    async def idle() -> None:
        await asyncio.sleep(scrapes * 0.003)

    print(f"  {'no scrapes':<34} {summary(await lag_while(idle))}")
    on_loop = make_asgi_app(registry)
    print(
        f"  {'prometheus_client.make_asgi_app':<34} "
        f"{summary(await lag_while(lambda: scrape_many(on_loop, scrapes)))}"
    )
    threaded = poolwatch.metrics_app(registry)
    print(
        f"  {'poolwatch.metrics_app':<34} "
        f"{summary(await lag_while(lambda: scrape_many(threaded, scrapes)))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=4)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.pools, args.scrapes))


if __name__ == "__main__":
    main()
