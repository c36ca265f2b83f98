"""The demo's walk: the four phases, the load each one drives through the app, and what the
metrics say while it runs (events, alerts that would fire, a summary per phase)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolwatch.demo.app import MAX_OVERFLOW, POOL_SIZE, POOL_TIMEOUT
from poolwatch.demo.display import Display, Phase, Progress
from poolwatch.demo.metrics import AlertRule, Samples, Snapshot, firing

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


@dataclass
class Setup:
    """Where everything runs."""

    app_url: str
    app_metrics_url: str
    exporter_metrics_url: str | None
    exporter_note: str
    database: str
    postgres: str
    app_log: Path


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
    ) -> None:
        self.setup = setup
        self.rules = rules
        self.display = display
        self.duration = duration
        self.counters = Counters()
        self.interrupted = False  # Ctrl-C (or SIGTERM / SIGHUP, turned into it) arrived
        self.phase_summaries: list[dict[str, Any]] = []
        self._seen_alerts: set[str] = set()
        self._log_offset = 0
        self._announced: set[str] = set()

    async def run(self) -> None:
        """All phases, in order; returns early, with :attr:`interrupted` set, on Ctrl-C."""
        # Ctrl-C is ours to handle, not asyncio.run()'s: its handler only cancels the main
        # task, and a cancellation swallowed on the way (a library's timeout scope ending at
        # the same moment) would let the demo run on to the end and exit 0. The flag is
        # checked at every tick as well.
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def stop() -> None:
            self.interrupted = True
            if main is not None:
                main.cancel()

        # (not possible off the main thread or on Windows: asyncio's own handler then)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, stop)
        try:
            await self._run()
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)

    async def _run(self) -> None:
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
                if self.interrupted:
                    raise asyncio.CancelledError
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
                progress = Progress(phase, index, len(PHASES), elapsed, length)
                self.display.update(progress, snap, numbers, alerts)
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
        log = self.setup.app_log
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
