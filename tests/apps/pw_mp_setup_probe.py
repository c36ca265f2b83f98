"""Multiprocess set-up probe, run as a subprocess by tests/instrumentation/test_multiprocess_setup.py.

usage: python pw_mp_setup_probe.py <sqlalchemy url>   (PROMETHEUS_MULTIPROC_DIR set by the test)

Logs with an ordinary format (``LEVEL name: message``) to stderr. If the directory does not
exist: instrument() must not raise, a scrape through metrics_app() answers 503; then the
directory is created and the next flush writes the series. Prints one JSON line: what a
scrape aggregated right after instrument() (before any checkout or flush) and after one
checkout, and the 503 answer if there was one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import poolwatch
from poolwatch.instrumentation.flusher import flusher

logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
missing = not os.path.isdir(path)
engine = sa.create_engine(sys.argv[1], pool_size=2, max_overflow=1)
poolwatch.instrument(engine, name="probe")  # must not raise, whatever the directory


async def scrape() -> dict[str, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": [], "query_string": b""}
    await poolwatch.metrics_app()(scope, receive, send)
    return {"status": sent[0]["status"], "body": sent[1]["body"].decode()}


result: dict[str, Any] = {}
if missing:
    result["scrape_while_missing"] = asyncio.run(scrape())
    os.mkdir(path)
    flusher.flush_now()


def samples() -> dict[str, float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.labels.get("pool") == "probe":
                extra = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pool")
                out[s.name + (f"{{{extra}}}" if extra else "")] = s.value
    return out


result["at_start"] = samples()
with engine.connect() as conn:
    conn.execute(sa.text("select 1"))
flusher.flush_now()
result["after_checkout"] = samples()
result["scrape_status"] = asyncio.run(scrape())["status"]
print(json.dumps(result))
