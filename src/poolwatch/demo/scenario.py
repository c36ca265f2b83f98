"""``poolwatch demo``: start everything, walk through the failure modes, clean up.

Processes: an embedded PostgreSQL (unless ``--dsn``), the demo app under uvicorn
(``python -m poolwatch.demo.app``) and ``poolwatch-exporter``, each child in its own
session so a terminal's Ctrl-C reaches only the demo, which then stops them in order and
deletes every directory it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from poolwatch.demo.app import APP_NAME, DROP_SQL, MAX_OVERFLOW, POOL_SIZE, POOL_TIMEOUT
from poolwatch.demo.display import Display, Phase
from poolwatch.demo.metrics import AlertRule, Samples, Snapshot, firing, load_rules
from poolwatch.doctor_facts import libpq_dsn
from poolwatch.redaction import redact_known_dsn

LEAK_THRESHOLD = 3.0
CHARGE_DELAY = 2.0
HEALTHY_CLIENTS = 3
SATURATING_CLIENTS = 12
LEAKED_SESSIONS = 2
LOCK_WAITERS = 3
TICK = 1.0

PHASES: tuple[Phase, ...] = (
    Phase(
        "healthy",
        "healthy traffic",
        f"{HEALTHY_CLIENTS} clients read orders; each checkout comes back within milliseconds.",
        0.15,
    ),
    Phase(
        "saturation",
        "slow external call inside a transaction",
        f"{SATURATING_CLIENTS} clients call POST /orders/{{id}}/charge, which awaits a "
        f"{CHARGE_DELAY:g} s payment API inside `async with session.begin()`: all "
        f"{POOL_SIZE + MAX_OVERFLOW} connections are held, callers wait {POOL_TIMEOUT:g} s, then "
        "get `QueuePool limit ... timed out`.",
        0.30,
    ),
    Phase(
        "leak",
        "a leaked session",
        f"POST /reports/export opens a session and never closes it ({LEAKED_SESSIONS} calls): "
        f"those connections never come back; poolwatch counts each once it is held past the "
        f"{LEAK_THRESHOLD:g} s leak threshold.",
        0.25,
    ),
    Phase(
        "locks",
        "idle in transaction + lock wait chain",
        "POST /accounts/1/hold updates a row, then awaits slow work before committing (idle in "
        f"transaction, row locked); {LOCK_WAITERS} transfers on that row queue behind it.",
        0.30,
    ),
)


class DemoError(RuntimeError):
    """The demo could not run; the message is one readable line."""


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Interrupted()


@dataclass
class Child:
    """A child process the demo started."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Resources:
    """Everything the demo started or created, released by :meth:`close` in reverse."""

    workdir: Path
    children: list[Child] = field(default_factory=list)
    local: Any = None
    postmaster_pid: int | None = None
    dsn: str | None = None  # the user's server (--dsn): drop the demo table at the end

    def close(self) -> dict[str, Any]:
        """Stop every process, delete every directory; report what happened."""
        processes: list[dict[str, Any]] = []
        for child in reversed(self.children):
            processes.append({"name": child.name, "pid": child.proc.pid, "stopped": _stop(child)})
        if self.dsn is not None:
            with contextlib.suppress(Exception):
                asyncio.run(_execute(self.dsn, DROP_SQL))
        removed: list[str] = []
        if self.local is not None:
            directory = str(self.local.pgdata.parent)
            self.local.stop()
            removed.append(directory)
            if self.postmaster_pid is not None:
                processes.append(
                    {
                        "name": "postgres",
                        "pid": self.postmaster_pid,
                        "stopped": _wait_gone(self.postmaster_pid, 15.0),
                    }
                )
        shutil.rmtree(self.workdir, ignore_errors=True)
        removed.append(str(self.workdir))
        left = [p for p in removed if os.path.exists(p)]
        return {"processes": processes, "removed": removed, "left_behind": left}


def _stop(child: Child) -> bool:
    proc = child.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    return proc.poll() is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


async def _execute(dsn: str, *statements: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(libpq_dsn(dsn), timeout=10)
    try:
        return [await conn.fetchval(sql) for sql in statements]
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()
    return "no output"


def _spawn(res: Resources, name: str, argv: list[str], **kw: Any) -> Child:
    log = res.workdir / f"{name}.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **kw,
        )
    child = Child(name, proc, log)
    res.children.append(child)
    return child


def _wait_http(child: Child, url: str, timeout: float) -> str | None:
    """None when ``url`` answered 200, else why not."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            return f"exited with status {child.proc.returncode}: {_last_line(child.log)}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        time.sleep(0.2)
    return f"did not answer {url} within {timeout:g} s: {_last_line(child.log)}"


@dataclass
class Setup:
    """Where everything runs."""

    app_url: str
    app_metrics_url: str
    exporter_metrics_url: str | None
    exporter_note: str
    database: str
    postgres: str


def _prepare_database(res: Resources, dsn: str | None) -> tuple[str, str, str, str]:
    """(app SQLAlchemy URL, exporter DSN, database name, shown PostgreSQL)."""
    if dsn is not None:
        try:
            (database,) = asyncio.run(_execute(dsn, "SELECT current_database()"))
        except Exception as exc:
            raise DemoError(
                f"cannot use {redact_known_dsn(dsn)}: "
                f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            ) from exc
        res.dsn = dsn
        plain = libpq_dsn(dsn)
        return (
            "postgresql+asyncpg://" + plain[len("postgresql://") :],
            dsn,
            database,
            redact_known_dsn(dsn),
        )
    from poolwatch.embedded import EmbeddedPostgresUnavailable, start_local_postgres

    try:
        res.local = start_local_postgres()
    except EmbeddedPostgresUnavailable as exc:
        raise DemoError(f"{exc} (or pass --dsn to use your own server)") from exc
    with contextlib.suppress(OSError, ValueError, IndexError):
        res.postmaster_pid = int((res.local.pgdata / "postmaster.pid").read_text().split()[0])
    admin = res.local.dsn()
    asyncio.run(
        _execute(
            admin,
            "CREATE ROLE poolwatch_demo_app LOGIN",
            "CREATE ROLE poolwatch_exporter LOGIN",
            "GRANT pg_monitor TO poolwatch_exporter",
            "CREATE DATABASE poolwatch_demo OWNER poolwatch_demo_app",
        )
    )
    app_dsn = res.local.dsn(database="poolwatch_demo", user="poolwatch_demo_app")
    app_url = app_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    exporter_dsn = res.local.dsn(database="postgres", user="poolwatch_exporter")
    shown = f"embedded, socket {res.local.socket_dir} (data {res.local.pgdata})"
    return app_url, exporter_dsn, "poolwatch_demo", shown


def _start(res: Resources, dsn: str | None, stale_threshold: int) -> Setup:
    app_url, exporter_dsn, database, shown = _prepare_database(res, dsn)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    url_file = res.workdir / "app-url"
    url_file.write_text(app_url)
    url_file.chmod(0o600)
    try:
        app = _spawn(
            res,
            "app",
            [
                sys.executable,
                "-c",
                "import sys; from poolwatch.demo.app import main; sys.exit(main())",
                "--url-file",
                str(url_file),
                "--fd",
                str(listener.fileno()),
                "--leak-threshold",
                f"{LEAK_THRESHOLD:g}",
            ],
            pass_fds=(listener.fileno(),),
        )
    finally:
        listener.close()
    app_base = f"http://127.0.0.1:{port}"
    why = _wait_http(app, app_base + "/healthz", 30.0)
    if why:
        raise DemoError(f"the demo app {why}")

    exporter_url: str | None = None
    note = ""
    if importlib.util.find_spec("poolwatch.exporter.__main__") is None:
        note = "poolwatch-exporter is not installed here (no poolwatch.exporter.__main__)"
    else:
        dsn_file = res.workdir / "exporter-dsn"
        dsn_file.write_text(exporter_dsn)
        dsn_file.chmod(0o600)
        eport = _free_port()
        exporter = _spawn(
            res,
            "exporter",
            [
                sys.executable,
                "-m",
                "poolwatch.exporter",
                "--dsn-file",
                str(dsn_file),
                "--web.listen-address",
                f"127.0.0.1:{eport}",
                "--idle-in-transaction.stale-threshold",
                f"{stale_threshold}s",
            ],
        )
        candidate = f"http://127.0.0.1:{eport}/metrics"
        why = _wait_http(exporter, candidate, 20.0)
        if why:
            note = f"poolwatch-exporter {why}"
        else:
            exporter_url = candidate
    return Setup(
        app_url=app_base,
        app_metrics_url=app_base + "/metrics",
        exporter_metrics_url=exporter_url,
        exporter_note=note,
        database=database,
        postgres=shown,
    )


def run_demo(dsn: str | None, duration: float, json_lines: bool, out: TextIO) -> int:
    """Run the whole demo; 0 when it ran to the end, 130 when interrupted."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    display = Display(out, json_lines)
    res = Resources(workdir=Path(tempfile.mkdtemp(prefix="poolwatch-demo-")))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
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
        driver = Driver(setup, rules, display, duration, res)
        asyncio.run(driver.run())
        notes = []
        if setup.exporter_metrics_url is None:
            notes.append(f"no PostgreSQL-side metrics: {setup.exporter_note}")
        display.summary({"phases": driver.phase_summaries, "notes": notes})
    except KeyboardInterrupt:
        interrupted = True
        display.line("interrupted: stopping everything")
    finally:
        signal.signal(signal.SIGTERM, previous)
        report = res.close()
        display.cleanup(report)
    return 130 if interrupted else 0


@dataclass
class Counters:
    """What the demo's own clients saw."""

    ok: int = 0
    timed_out: int = 0
    failed: int = 0
    first_timeout: str | None = None
    last_error: str | None = None


class Driver:
    """Drives load through the phases and reports what the metrics say."""

    def __init__(
        self,
        setup: Setup,
        rules: list[AlertRule],
        display: Display,
        duration: float,
        res: Resources,
    ) -> None:
        self.setup = setup
        self.rules = rules
        self.display = display
        self.duration = duration
        self.res = res
        self.counters = Counters()
        self.phase_summaries: list[dict[str, Any]] = []
        self._seen_alerts: set[str] = set()
        self._log_offset = 0
        self._announced: set[str] = set()

    async def run(self) -> None:
        """All phases, in order."""
        import httpx

        limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
        async with (
            httpx.AsyncClient(
                base_url=self.setup.app_url, timeout=httpx.Timeout(60.0), limits=limits
            ) as client,
            httpx.AsyncClient(timeout=3.0) as scraper,
        ):
            self.client, self.scraper = client, scraper
            first = await self.snapshot()
            background = [
                asyncio.create_task(self._loop(self._healthy, i)) for i in range(HEALTHY_CLIENTS)
            ]
            try:
                for index, phase in enumerate(PHASES, start=1):
                    await self._phase(index, phase, first)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)

    async def snapshot(self) -> Snapshot:
        """Scrape both endpoints."""
        app, pg = await asyncio.gather(
            self._scrape(self.setup.app_metrics_url),
            self._scrape(self.setup.exporter_metrics_url),
        )
        c = self.counters
        return Snapshot(time.monotonic(), app, pg, c.ok, c.timed_out, c.failed)

    async def _scrape(self, url: str | None) -> Samples:
        if url is None:
            return Samples()
        try:
            response = await self.scraper.get(url)
            response.raise_for_status()
        except Exception:
            return Samples()
        return Samples.parse(response.text)

    async def _phase(self, index: int, phase: Phase, first: Snapshot) -> None:
        length = phase.fraction * self.duration
        self.display.phase(index, len(PHASES), phase)
        start = time.monotonic()
        tasks = self._start_phase(phase.key, length)
        before = await self.snapshot()
        maxima = {"checked_out": 0.0, "waiting": 0.0, "idle_tx": 0.0, "lock_waiting": 0.0}
        alerts_seen: list[str] = []
        seen_before = set(self._seen_alerts)
        snap = before
        try:
            while (elapsed := time.monotonic() - start) < length:
                snap = await self.snapshot()
                numbers = snap.as_dict(self.setup.database)
                maxima["checked_out"] = max(maxima["checked_out"], float(numbers["checked_out"]))
                maxima["waiting"] = max(maxima["waiting"], float(numbers["waiting"]))
                maxima["idle_tx"] = max(maxima["idle_tx"], float(numbers["pg_idle_in_transaction"]))
                maxima["lock_waiting"] = max(
                    maxima["lock_waiting"], float(numbers["pg_lock_waiting"])
                )
                alerts = firing(self.rules, snap, first, self.setup.database)
                self._events(numbers, alerts)
                for rule, _ in alerts:
                    if rule.name not in alerts_seen:
                        alerts_seen.append(rule.name)
                self.display.update(
                    phase, index, len(PHASES), elapsed, length, snap, numbers, alerts
                )
                await asyncio.sleep(max(0.05, min(TICK, length - (time.monotonic() - start))))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.phase_summaries.append(
            {
                "key": phase.key,
                "title": phase.title,
                "seconds": round(length, 1),
                "max_checked_out": maxima["checked_out"],
                "max_waiting": maxima["waiting"],
                "timeouts": snap.pool("timeouts_total") - before.pool("timeouts_total"),
                "leaks": snap.pool("leaks_total") - before.pool("leaks_total"),
                "max_idle_in_transaction": maxima["idle_tx"],
                "max_lock_waiting": maxima["lock_waiting"],
                "alerts": alerts_seen,
                "new_alerts": [a for a in alerts_seen if a not in seen_before],
            }
        )

    def _events(self, n: dict[str, Any], alerts: list[tuple[AlertRule, str]]) -> None:
        say = self.display.event
        c = self.counters
        if c.first_timeout and "timeout" not in self._announced:
            self._announced.add("timeout")
            say(f"503 from the app: {c.first_timeout}")
        for line in self._new_app_log_lines():
            leak_line = "leak threshold" in line and "/reports/export" in line
            if leak_line and "leak" not in self._announced:
                self._announced.add("leak")
                text = line.split("WARNING poolwatch: ", 1)[-1]
                say("app log: " + re.sub(r";? checked out at <[^>]*>:\d+ in \S+", "", text))
        if n["pg_idle_in_transaction_stale"] and "idle" not in self._announced:
            self._announced.add("idle")
            say(
                f"exporter: {n['pg_idle_in_transaction_stale']:g} session(s) idle in transaction "
                "past the stale threshold"
            )
        if n["pg_blocked"] and "blocked" not in self._announced:
            self._announced.add("blocked")
            say(
                f"exporter: lock wait chain: {n['pg_blocked']:g} blocked session(s), "
                f"{n['pg_blocking']:g} blocking others, {n['pg_lock_waiting']:g} waiting on locks"
            )
        for rule, why in alerts:
            if rule.name not in self._seen_alerts:
                self._seen_alerts.add(rule.name)
                say(
                    f"{rule.name} ({rule.severity}) would fire after for: {rule.for_}: {why}",
                    "alert",
                )

    def _new_app_log_lines(self) -> list[str]:
        log = self.res.workdir / "app.log"
        try:
            with open(log, "rb") as handle:
                handle.seek(self._log_offset)
                data = handle.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        return data[:end].decode(errors="replace").splitlines()

    # -- load -------------------------------------------------------------------------------

    def _start_phase(self, key: str, length: float) -> list[asyncio.Task[Any]]:
        if key == "saturation":
            return [
                asyncio.create_task(self._loop(self._charge, i)) for i in range(SATURATING_CLIENTS)
            ]
        if key == "leak":
            return [asyncio.create_task(self._leak())]
        if key == "locks":
            return [asyncio.create_task(self._locks(max(2.0, length - 1.5)))]
        return []

    async def _loop(self, call: Callable[[int], Awaitable[None]], worker: int) -> None:
        i = worker
        while True:
            await call(i)
            i += 17

    async def _request(self, method: str, path: str) -> None:
        c = self.counters
        try:
            response = await self.client.request(method, path)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            c.failed += 1
            c.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
            return
        if response.status_code == 200:
            c.ok += 1
        elif response.status_code == 503:
            c.timed_out += 1
            if c.first_timeout is None:
                c.first_timeout = f"{method} {path}: {response.json().get('error', response.text)}"
        else:
            c.failed += 1
            c.last_error = response.text[:200]

    async def _healthy(self, i: int) -> None:
        await self._request("GET", f"/orders/{i}")
        await asyncio.sleep(0.05)

    async def _charge(self, i: int) -> None:
        await self._request("POST", f"/orders/{i}/charge?delay={CHARGE_DELAY:g}")

    async def _leak(self) -> None:
        for _ in range(LEAKED_SESSIONS):
            await self._request("POST", "/reports/export")
            await asyncio.sleep(0.5)
        await asyncio.Event().wait()

    async def _locks(self, hold: float) -> None:
        holder = asyncio.create_task(self._request("POST", f"/accounts/1/hold?seconds={hold:.1f}"))
        await asyncio.sleep(0.5)
        waiters = [
            asyncio.create_task(self._request("POST", "/accounts/1/transfer"))
            for _ in range(LOCK_WAITERS)
        ]
        try:
            await asyncio.gather(holder, *waiters)
            await asyncio.Event().wait()
        finally:
            for task in (holder, *waiters):
                task.cancel()


__all__ = ["APP_NAME", "DemoError", "run_demo"]
