"""A worker process writing into PROMETHEUS_MULTIPROC_DIR, for tests/instrumentation/test_multiprocess_archive.py.

usage: python pw_metrics_writer.py <sqlalchemy url> <checkouts>

Writes poolwatch's series of pool "w" (real checkouts on real PostgreSQL) and the app's own
prometheus_client counter, histogram and summary (values that are exact in binary, so sums
compare exactly), prints ``ready <pid>`` and then obeys lines on stdin: ``inc <n>`` adds n
to the app's counter (and answers ``ok``), ``exit`` (or end of input) exits.
"""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa
from prometheus_client import Counter, Histogram, Summary

import poolwatch
from poolwatch.instrumentation.flusher import flusher

url, checkouts = sys.argv[1], int(sys.argv[2])
requests = Counter("app_requests", "Requests served.", ["route"])
latency = Histogram("app_latency_seconds", "Request latency.", ["route"], buckets=(0.25, 1.0))
sizes = Summary("app_response_bytes", "Response sizes.")

engine = sa.create_engine(url, pool_size=2, max_overflow=0)
poolwatch.instrument(engine, name="w")
for _ in range(checkouts):
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))
    requests.labels("/a").inc()
    latency.labels("/a").observe(0.5)
    sizes.observe(256)
flusher.flush_now()
print(f"ready {os.getpid()}", flush=True)
for line in sys.stdin:
    command = line.split()
    if command[:1] == ["inc"]:
        requests.labels("/a").inc(int(command[1]))
        print("ok", flush=True)
    elif command[:1] == ["exit"]:
        break
engine.dispose()
