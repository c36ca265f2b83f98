"""Fork-safety probe, run as a subprocess by tests/instrumentation/test_fork_safety.py.

usage: python pw_fork_probe.py <sqlalchemy url> <inherit|dispose|unused>

The parent creates and instruments a sync engine (multiprocess mode: PROMETHEUS_MULTIPROC_DIR
is set by the test), optionally uses it, then forks (as gunicorn --preload does). The child
optionally calls ``engine.dispose(close=False)`` and checks out twice. Both report their
own numbers; the parent prints one JSON line with everything.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import poolwatch
from poolwatch.instrumentation.flusher import flusher

url, mode = sys.argv[1], sys.argv[2]
messages: list[str] = []


class Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        messages.append(record.getMessage())


logging.getLogger("poolwatch").addHandler(Capture())
engine = sa.create_engine(url, pool_size=2)
registry = CollectorRegistry()
poolwatch.instrument(engine, name="forked", registry=registry)


def checkouts() -> float | None:
    return registry.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "forked"})


def use(times: int) -> None:
    for _ in range(times):
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))


if mode != "unused":
    use(1)  # the parent now has one idle connection in its pool
read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read_fd)
    child: dict[str, object] = {"checkouts_at_start": checkouts()}
    if mode == "dispose":
        engine.dispose(close=False)  # the documented post_fork fix
    use(2)
    flusher.flush_now()
    child.update(checkouts=checkouts(), messages=messages, pid=os.getpid())
    os.write(write_fd, json.dumps(child).encode())
    os._exit(0)
os.close(write_fd)
with os.fdopen(read_fd) as pipe:
    child_result = json.loads(pipe.read())
os.waitpid(pid, 0)
use(1)  # the parent keeps working and counting
flusher.flush_now()
aggregated = CollectorRegistry()
MultiProcessCollector(aggregated)
print(
    json.dumps(
        {
            "child": child_result,
            "parent_checkouts": checkouts(),
            "parent_messages": messages,
            "aggregated_checkouts": aggregated.get_sample_value(
                "sqlalchemy_pool_checkouts_total", {"pool": "forked"}
            ),
        }
    )
)
