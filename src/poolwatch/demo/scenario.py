"""``poolwatch demo``: start everything, walk through the failure modes, clean up.

Processes (:mod:`~poolwatch.demo.processes`): an embedded PostgreSQL unless ``--dsn``
(:mod:`~poolwatch.demo.database`), the demo app under uvicorn and ``poolwatch-exporter``, each
child in its own session so a terminal's Ctrl-C reaches only the demo, which then stops them
in order and deletes every directory it created. The walk itself is
:mod:`~poolwatch.demo.phases`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import tempfile
import warnings
from pathlib import Path
from types import FrameType
from typing import TextIO

from poolwatch.demo.app import APP_NAME, MAX_OVERFLOW, POOL_SIZE, POOL_TIMEOUT
from poolwatch.demo.database import prepare_database
from poolwatch.demo.display import Display
from poolwatch.demo.metrics import load_rules
from poolwatch.demo.pgbouncer_act import run_pgbouncer_act
from poolwatch.demo.phases import LEAK_THRESHOLD, PHASES, Driver, Setup
from poolwatch.demo.processes import (
    DemoError,
    Resources,
    private_file,
    start_app,
    start_exporter,
    wait_http,
)


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM or SIGHUP (the terminal closed), handled like Ctrl-C."""
    # Turned into the Ctrl-C it stands for: asyncio.run() cancels its main task on SIGINT
    # cleanly, where an exception raised here would land in whichever task was running.
    signal.raise_signal(signal.SIGINT)


def _start(res: Resources, dsn: str | None, stale_threshold: int) -> Setup:
    db = prepare_database(res, dsn)

    url_file = private_file(res.workdir, "app-url", db.app_url)
    app, app_base = start_app(res.spawn, "app", url_file, "--leak-threshold", f"{LEAK_THRESHOLD:g}")
    why = wait_http(app, app_base + "/healthz", 30.0)
    if why:
        raise DemoError(f"the demo app {why}")

    exporter_url: str | None = None
    note = ""
    if importlib.util.find_spec("poolwatch.exporter.__main__") is None:
        note = "poolwatch-exporter is not installed here (no poolwatch.exporter.__main__)"
    else:
        try:
            exporter = start_exporter(
                res.workdir,
                db.exporter_dsn,
                "--idle-in-transaction.stale-threshold",
                f"{stale_threshold}s",
            )
        except DemoError as exc:
            note = str(exc)
        else:
            res.children.append(exporter.child)
            exporter_url = exporter.metrics_url
    return Setup(
        app_url=app_base,
        app_metrics_url=app_base + "/metrics",
        exporter_metrics_url=exporter_url,
        exporter_note=note,
        database=db.name,
        postgres=db.shown,
        app_log=app.log,
    )


def run_demo(dsn: str | None, duration: float, json_lines: bool, out: TextIO) -> int:
    """Run the whole demo; 0 when it ran to the end, 130 when interrupted."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    display = Display(out, json_lines)
    res = Resources(workdir=Path(tempfile.mkdtemp(prefix="poolwatch-demo-")))
    # The children run in their own process groups: a closed terminal (SIGHUP) must stop
    # them too, as Ctrl-C and SIGTERM do, not leave the app, exporter and server running.
    stops = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    previous = {sig: signal.signal(sig, _on_sigterm) for sig in stops}
    interrupted = False
    lock_length = duration * PHASES[-1].fraction
    stale_threshold = max(1, min(5, int(lock_length / 3)))
    try:
        setup = _start(res, dsn, stale_threshold)
        rules, source = load_rules()
        display.start(
            {
                "duration": duration,
                "postgres": setup.postgres,
                "app_metrics_url": setup.app_metrics_url,
                "exporter_metrics_url": setup.exporter_metrics_url,
                "exporter_note": setup.exporter_note,
                "pool": f"pool_size {POOL_SIZE}, max_overflow {MAX_OVERFLOW}, pool_timeout "
                f"{POOL_TIMEOUT:g} s, leak_threshold {LEAK_THRESHOLD:g} s",
                "alerts_source": source
                + f"; idle-in-transaction counts as stale after {stale_threshold} s",
            }
        )
        driver = Driver(setup, rules, display, duration)
        asyncio.run(driver.run())
        if driver.interrupted:
            raise KeyboardInterrupt
        notes = [run_pgbouncer_act(res.local, display, duration)]
        if setup.exporter_metrics_url is None:
            notes.append(f"no PostgreSQL-side metrics: {setup.exporter_note}")
        display.summary({"phases": driver.phase_summaries, "notes": notes})
    except KeyboardInterrupt:
        interrupted = True
        display.line("interrupted: stopping everything")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        report = res.close()
        display.cleanup(report)
    return 130 if interrupted else 0


__all__ = ["APP_NAME", "DemoError", "run_demo"]
