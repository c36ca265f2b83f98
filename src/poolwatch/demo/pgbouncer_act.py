"""The demo's PgBouncer act: the app's pool is large, PgBouncer's is small, the queue moves.

After the four phases, when Debian's ``pgbouncer`` is installed and the demo runs its embedded
PostgreSQL, :func:`run_pgbouncer_act` starts a real PgBouncer in transaction mode in front of
it (``pool_size`` 2, a userlist with generated passwords), a second copy of the demo app whose
pool (20 connections) goes through it, and a ``poolwatch-exporter`` watching PgBouncer's admin
console as a ``stats_users`` role. Clients then call a 0.3 s query: the app's pool has
connections to spare (nobody waits at checkout) while clients queue inside PgBouncer
(``cl_waiting`` > 0, ``maxwait`` growing), and the act names the alerts of
:mod:`poolwatch.thresholds` that would fire. It stops and removes everything it started
(:mod:`~poolwatch.demo.pgbouncer_stack`). Otherwise it prints one line saying why it skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from poolwatch import metric_names as m
from poolwatch import thresholds
from poolwatch.demo.display import Display
from poolwatch.demo.metrics import Samples, quantile
from poolwatch.demo.pgbouncer_stack import (
    APP_POOL,
    APP_POOL_SIZE,
    DATABASE,
    PGBOUNCER_POOL_SIZE,
    ActSkipped,
    act_directory,
    find_pgbouncer,
    start_stack,
)

CLIENTS = 12
QUERY_SECONDS = 0.3


def act_length(duration: float) -> float:
    """Seconds of load in the act: a fifth of ``--duration``, within 10..15 s."""
    return max(10.0, min(15.0, duration * 0.2))


# --- the alerts the act can make fire -------------------------------------------------------


@dataclass
class Numbers:
    """What both /metrics endpoints of the act said at one moment."""

    app: Samples
    bouncer: Samples

    def pool(self, name: str) -> float:
        """A ``sqlalchemy_pool_*`` value of the act's pool."""
        return self.app.value(f"sqlalchemy_pool_{name}", pool=APP_POOL)

    def pgb(self, spec: m.MetricSpec) -> float:
        """A PgBouncer metric summed over the demo database's pools."""
        return self.bouncer.value(spec.name, database=DATABASE)

    def maxwait(self) -> float:
        """The longest wait of a client queued in the demo database's pools."""
        return self.bouncer.maximum(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT.name, database=DATABASE)


def _pool_size(n: Numbers) -> float:
    # SHOW DATABASES keys its rows by `name`, which Samples.value cannot take as a label.
    rows = n.bouncer.series.get(m.PGBOUNCER_DATABASES_POOL_SIZE.name, [])
    return sum(v for labels, v in rows if labels.get("name") == DATABASE)


Check = Callable[[Numbers, float], str | None]

# (the alert's threshold, how the demo evaluates its expression on the scraped series)
ALERTS: tuple[tuple[thresholds.Threshold, Check], ...] = (
    (
        thresholds.PGBOUNCER_CLIENTS_WAITING,
        lambda n, limit: (
            f"cl_waiting {n.pgb(m.PGBOUNCER_POOLS_CLIENT_WAITING):g} > {limit:g}"
            if n.pgb(m.PGBOUNCER_POOLS_CLIENT_WAITING) > limit
            else None
        ),
    ),
    (
        thresholds.PGBOUNCER_WAIT_SLOW,
        lambda n, limit: (
            f"maxwait {n.maxwait():.2f} s > {limit:g} s" if n.maxwait() > limit else None
        ),
    ),
    (
        thresholds.PGBOUNCER_SERVER_POOL_SATURATED,
        lambda n, _limit: (
            f"sv_active {n.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE):g} >= pool_size {_pool_size(n):g}"
            if _pool_size(n) > 0 and n.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE) >= _pool_size(n)
            else None
        ),
    ),
)


@dataclass(frozen=True)
class ActAlert:
    """An alert of the act: its threshold and how the demo evaluates its expression."""

    threshold: thresholds.Threshold
    check: Check

    @property
    def name(self) -> str:
        """The alert's name in alerts/pgbouncer.rules.yml."""
        return self.threshold.alert

    def why(self, n: Numbers) -> str | None:
        """Why it would fire now (None when it would not)."""
        return self.check(n, self.threshold.value or 0.0)


def act_alerts() -> list[ActAlert]:
    """The act's alerts, with the thresholds :mod:`poolwatch.thresholds` has for them."""
    return [ActAlert(threshold, check) for threshold, check in ALERTS]


# --- the act ----------------------------------------------------------------------------------


@dataclass
class _Seen:
    app_waiting: float = 0.0
    app_checked_out: float = 0.0
    cl_waiting: float = 0.0
    maxwait: float = 0.0
    sv_active: float = 0.0
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    alerts: list[str] = field(default_factory=list)


async def _drive(
    app_url: str, app_metrics: str, exporter: str, length: float, display: Display
) -> dict[str, Any]:
    import httpx

    seen = _Seen()
    alerts = act_alerts()
    name = m.POOL_CHECKOUT_DURATION.name
    hold = m.POOL_HOLD_DURATION.name
    limits = httpx.Limits(max_connections=CLIENTS + 5)
    async with (
        httpx.AsyncClient(base_url=app_url, timeout=30.0, limits=limits) as client,
        httpx.AsyncClient(timeout=3.0) as scraper,
    ):

        async def scrape(url: str) -> Samples:
            with contextlib.suppress(Exception):
                response = await scraper.get(url)
                response.raise_for_status()
                return Samples.parse(response.text)
            return Samples()

        async def numbers() -> Numbers:
            app, bouncer = await asyncio.gather(scrape(app_metrics), scrape(exporter))
            return Numbers(app, bouncer)

        async def one_client(i: int) -> None:
            while True:
                try:
                    r = await client.get(f"/reports/summary?seconds={QUERY_SECONDS:g}")
                    r.raise_for_status()
                    seen.requests += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    seen.errors += 1
                    seen.last_error = f"{type(exc).__name__}: {str(exc)[:150]}"
                    await asyncio.sleep(0.2)

        first = await numbers()
        tasks = [asyncio.create_task(one_client(i)) for i in range(CLIENTS)]
        start = time.monotonic()
        last_line = -1e9
        now = first
        try:
            while (elapsed := time.monotonic() - start) < length:
                await asyncio.sleep(min(1.0, max(0.05, length - elapsed)))
                now = await numbers()
                seen.app_waiting = max(seen.app_waiting, now.pool("waiting"))
                seen.app_checked_out = max(seen.app_checked_out, now.pool("checked_out"))
                cl_waiting = now.pgb(m.PGBOUNCER_POOLS_CLIENT_WAITING)
                seen.cl_waiting = max(seen.cl_waiting, cl_waiting)
                seen.maxwait = max(seen.maxwait, now.maxwait())
                seen.sv_active = max(seen.sv_active, now.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE))
                for alert in alerts:
                    why = alert.why(now)
                    if why and alert.name not in seen.alerts:
                        seen.alerts.append(alert.name)
                        t = alert.threshold
                        display.event(
                            f"{alert.name} ({t.severity}) would fire after for: {t.for_}: {why}",
                            "alert",
                        )
                if time.monotonic() - last_line >= 3.0:
                    last_line = time.monotonic()
                    p95 = quantile(
                        0.95,
                        now.app.buckets(name, pool=APP_POOL),
                        first.app.buckets(name, pool=APP_POOL),
                    )
                    held = quantile(
                        0.95,
                        now.app.buckets(hold, pool=APP_POOL),
                        first.app.buckets(hold, pool=APP_POOL),
                    )
                    display.event(
                        f"[{elapsed:4.0f}/{length:.0f}s] app pool {now.pool('checked_out'):g}/"
                        f"{now.pool('size') + now.pool('max_overflow'):g} waiting "
                        f"{now.pool('waiting'):g} checkout p95 {p95:.3f} s hold p95 {held:.2f} s"
                        f" | PgBouncer cl_waiting {cl_waiting:g} maxwait {now.maxwait():.2f} s "
                        f"sv_active {now.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE):g}/"
                        f"{_pool_size(now):g}",
                        "pgbouncer",
                    )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    checkout_p95 = quantile(
        0.95, now.app.buckets(name, pool=APP_POOL), first.app.buckets(name, pool=APP_POOL)
    )
    return {
        "key": "pgbouncer",
        "seconds": round(length, 1),
        "requests": seen.requests,
        "errors": seen.errors,
        "last_error": seen.last_error,
        "max_app_checked_out": seen.app_checked_out,
        "max_app_waiting": seen.app_waiting,
        "app_checkout_p95_seconds": round(checkout_p95, 4),
        "max_pgbouncer_cl_waiting": seen.cl_waiting,
        "max_pgbouncer_maxwait_seconds": round(seen.maxwait, 3),
        "max_pgbouncer_sv_active": seen.sv_active,
        "alerts": seen.alerts,
    }


def run_pgbouncer_act(local: Any, display: Display, duration: float) -> str:
    """Run the act in front of the embedded server ``local``; its result (or why it was
    skipped) in one line, for the demo's summary.

    ``local`` is the demo's :class:`~poolwatch.embedded.LocalPostgres` (None with ``--dsn``:
    the act is skipped, as it is without ``pgbouncer`` or ``poolwatch-exporter``).
    """
    binary, why = find_pgbouncer()
    if local is None:
        why = "it runs in front of the embedded PostgreSQL only (not with --dsn)"
    elif binary is not None and importlib.util.find_spec("poolwatch.exporter.__main__") is None:
        why = "poolwatch-exporter is not installed here"
    if binary is None or why:
        return f"skipped the PgBouncer act: {why}"
    length = act_length(duration)
    display.line("")
    display.event(
        f"PgBouncer act ({length:g} s): app pool '{APP_POOL}' of {APP_POOL_SIZE} connections "
        f"through PgBouncer ({binary}, transaction mode, pool_size {PGBOUNCER_POOL_SIZE}); "
        f"{CLIENTS} clients each run a {QUERY_SECONDS:g} s query",
        "pgbouncer",
    )
    with act_directory() as act:
        try:
            app_url, app_metrics, exporter = start_stack(act, local, binary)
        except ActSkipped as exc:
            return f"skipped the PgBouncer act: {exc}"
        display.event(
            f"app /metrics {app_metrics}; exporter --pgbouncer.dsn /metrics {exporter}",
            "pgbouncer",
        )
        result = asyncio.run(_drive(app_url, app_metrics, exporter, length, display))
    stopped = ", ".join(
        f"{p['name']} (pid {p['pid']}{'' if p['stopped'] else ', STILL RUNNING'})"
        for p in act.stopped
    )
    fired = ", ".join(result["alerts"]) or "none"
    moved = result["max_app_waiting"] == 0 and result["max_pgbouncer_cl_waiting"] > 0
    text = (
        f"PgBouncer act: app pool max waiting {result['max_app_waiting']:g} (checkout p95 "
        f"{result['app_checkout_p95_seconds']:.3f} s) while PgBouncer had up to "
        f"{result['max_pgbouncer_cl_waiting']:g} clients waiting (maxwait "
        f"{result['max_pgbouncer_maxwait_seconds']:.2f} s, sv_active "
        f"{result['max_pgbouncer_sv_active']:g}/{PGBOUNCER_POOL_SIZE}); "
        + (
            "the wait moved into PgBouncer's queue"
            if moved
            else "the wait did not move into PgBouncer's queue alone this time"
        )
        + f"; alerts that would fire: {fired}"
    )
    if result["errors"]:
        text += f"; {result['errors']} request errors, last: {result['last_error']}"
    gone = "LEFT BEHIND" if act.directory.exists() else "removed"
    display.event(
        f"PgBouncer act cleaned up: stopped {stopped}; {gone} {act.directory}", "pgbouncer"
    )
    return text
