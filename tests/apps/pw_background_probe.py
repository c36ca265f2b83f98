"""Background-thread probe, run as a subprocess by tests/instrumentation/test_fork_safety.py.

usage: python pw_background_probe.py <sqlalchemy url>

Reports the names of poolwatch's threads at each step: after import (nothing instrumented),
after ``instrument(leak_threshold=...)``, in a forked child that holds a connection past the
threshold (the leak must be found there, by the child's own thread), and after ``close()`` in
both processes. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import poolwatch

url = sys.argv[1]


def poolwatch_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("poolwatch"))


def until(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


result: dict[str, object] = {"after_import": poolwatch_threads()}
engine = sa.create_engine(url, pool_size=2)
registry = CollectorRegistry()
handle = poolwatch.instrument(engine, name="held", registry=registry, leak_threshold=0.2)
result["after_instrument"] = poolwatch_threads()


def leaks() -> float | None:
    return registry.get_sample_value("sqlalchemy_pool_leaks_total", {"pool": "held"})


read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read_fd)
    child: dict[str, object] = {"at_start": poolwatch_threads()}
    conn = engine.connect()  # held past the threshold, never returned while we look
    child["leak_found"] = until(lambda: leaks() == 1)
    child["leaks"] = leaks()
    child["while_held"] = poolwatch_threads()
    conn.close()
    handle.close()
    child["stopped"] = until(lambda: poolwatch_threads() == [])
    child["after_close"] = poolwatch_threads()
    os.write(write_fd, json.dumps(child).encode())
    os._exit(0)
os.close(write_fd)
with os.fdopen(read_fd) as pipe:
    result["child"] = json.loads(pipe.read())
os.waitpid(pid, 0)
result["parent_leaks"] = leaks()
handle.close()
result["stopped"] = until(lambda: poolwatch_threads() == [])
result["after_close"] = poolwatch_threads()
print(json.dumps(result))
