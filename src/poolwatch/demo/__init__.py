"""``poolwatch demo``: an instrumented FastAPI app exhausting its pool, live in the terminal.

Modules: :mod:`~poolwatch.demo.app` (the FastAPI app), :mod:`~poolwatch.demo.scenario`
(start, walk, clean up), :mod:`~poolwatch.demo.processes` (child processes, the exporter),
:mod:`~poolwatch.demo.database` (the server and its roles), :mod:`~poolwatch.demo.phases`
(the phases and their load), :mod:`~poolwatch.demo.metrics` (scraping and alert
thresholds), :mod:`~poolwatch.demo.display` (live panel, plain lines, JSON lines),
:mod:`~poolwatch.demo.pgbouncer_act` (the PgBouncer act; its processes in
:mod:`~poolwatch.demo.pgbouncer_stack`).
"""

from poolwatch.demo.scenario import DemoError, run_demo

__all__ = ["DemoError", "run_demo"]
