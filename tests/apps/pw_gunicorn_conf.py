"""gunicorn config for the multi-worker tests: the documented production recipe.

* ``child_exit``: a dead worker's live gauges leave the aggregation (mark_process_dead).
* ``post_fork``: with --preload the engine was created in the master; give each worker a
  fresh pool without touching the master's connections (``dispose(close=False)``).
"""

from __future__ import annotations

import sys
from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)


def post_fork(server: Any, worker: Any) -> None:
    app_module = sys.modules.get("pw_workers_app")
    if app_module is not None:  # loaded in the master by --preload
        app_module.engine.sync_engine.dispose(close=False)
