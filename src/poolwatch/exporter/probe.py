"""``/probe?target=...&module=...``: one exporter, many targets (Prometheus' multi-target
pattern, as postgres_exporter's ``/probe``).

The request is resolved before anything connects: the target must be a name from
``probe.targets`` or an address matching ``probe.allowed_targets``, the auth module must
exist; anything else is a 4xx and no connection attempt
(``poolwatch_exporter_probe_refused_total{reason}``). A resolved target gets one
:class:`~.scraper.Scraper`, created on first use from the target seam
(:mod:`poolwatch.exporter.target`) and kept: so per target the single-target rules hold (at
most one connection, reused, single flight, ``up 0`` promptly, reconnect with backoff).
``&kind=pgbouncer`` (or a named target's ``kind: pgbouncer``) probes a PgBouncer admin
console (``host:6432/pgbouncer``) instead of PostgreSQL. Bounds: ``max_targets`` targets
kept (a new one beyond that is a 503 rather than evicting a busy one),
``max_concurrent_scrapes`` snapshots taken at the same time (waiters queue; a cached or
in-flight snapshot needs no slot), and a target not probed for ``idle_timeout`` is closed
(its connection too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder

from ..metric_names import (
    EXPORTER_PROBE_CONNECTIONS,
    EXPORTER_PROBE_IDLE_CLOSED,
    EXPORTER_PROBE_REFUSED,
    EXPORTER_PROBE_TARGETS,
)
from .auth_modules import AuthModule, ProbeConfig
from .collectors.base import counter, gauge
from .database import Database
from .dsn import Dsn
from .exposition import OPENMETRICS_EOF, Family, render
from .own_metrics import collect_own, merge_health
from .pgbouncer import PgBouncerSource, pgbouncer_target
from .postgres import postgres_target
from .probe_address import TargetError, address_dsn, named_dsn, parse_address
from .scraper import Scraper
from .settings import Settings
from .target import Source, Target

log = logging.getLogger("poolwatch.exporter.probe")

REFUSAL_REASONS = ("not_allowed", "bad_request", "unknown_module", "too_many_targets")
BuiltTarget = tuple[Target[Any], Callable[[], bool]]


def _postgres(dsn: Dsn, settings: Settings) -> BuiltTarget:
    database = Database(
        dsn, query_timeout=settings.query_timeout, lock_timeout=settings.lock_timeout
    )
    target = postgres_target(
        database, top_n=settings.top_n, stale_threshold=settings.stale_threshold
    )
    return target, lambda: database.connected


def _pgbouncer(dsn: Dsn, settings: Settings) -> BuiltTarget:
    target = pgbouncer_target(dsn, timeout=settings.query_timeout, top_n=settings.top_n)
    source = target.source
    assert isinstance(source, PgBouncerSource)
    return target, lambda: source.connected


# kind -> builder of (target, "is its connection open"); auth_modules.KINDS lists the same
KIND_BUILDERS: dict[str, Callable[[Dsn, Settings], BuiltTarget]] = {
    "postgres": _postgres,
    "pgbouncer": _pgbouncer,
}


class ProbeRefused(Exception):
    """A /probe request that must not reach any server: HTTP ``status``, one-line reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class _BoundedSource:
    """A source whose snapshots wait for one of the shared slots (connecting included)."""

    def __init__(self, inner: Source[Any], slots: asyncio.Semaphore) -> None:
        self.inner = inner
        self.slots = slots

    @property
    def connections_opened(self) -> int:
        return self.inner.connections_opened

    async def take(self) -> Any:
        async with self.slots:
            return await self.inner.take()

    async def check(self) -> None:
        async with self.slots:
            await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class _Entry:
    key: str
    shown: str  # the target as logged and labelled: never a password
    scraper: Scraper
    connected: Callable[[], bool]
    last_used: float
    busy: int = 0


@dataclass(frozen=True)
class _Resolved:
    key: str
    shown: str
    kind: str
    dsn: Dsn


def _one(params: dict[str, list[str]], *names: str) -> str | None:
    values = [v for name in names for v in params.get(name, [])]
    if len(values) > 1:
        raise ProbeRefused(400, "bad_request", f"give {names[0]} once")
    return values[0].strip() if values else None


class Prober:
    """Resolves, bounds and serves ``/probe`` requests; owns every probed target."""

    def __init__(self, config: ProbeConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self.idle_closed = 0
        self._entries: dict[str, _Entry] = {}
        self._slots: asyncio.Semaphore | None = None
        self._reaper: asyncio.Task[None] | None = None

    @property
    def entries(self) -> dict[str, _Entry]:
        """The targets kept right now, by key (kind, target, module)."""
        return self._entries

    def resolve(self, query_string: str) -> _Resolved:
        """The target a query string asks for, or :class:`ProbeRefused` (nothing connects)."""
        params = parse_qs(query_string, keep_blank_values=True)
        target = _one(params, "target")
        module_name = _one(params, "module", "auth_module")
        kind = _one(params, "kind")
        if not target:
            raise ProbeRefused(400, "bad_request", "missing ?target=host:port/database or name")
        named = self.config.targets.get(target)
        if named is not None:
            if kind and kind != named.kind:
                raise ProbeRefused(400, "bad_request", f"target {target!r} is a {named.kind}")
            kind = named.kind
            module_name = module_name or named.auth_module
        kind = kind or "postgres"
        if kind not in KIND_BUILDERS:
            raise ProbeRefused(
                400, "bad_request", f"kind must be one of {', '.join(sorted(KIND_BUILDERS))}"
            )
        if named is not None:
            module = self._module(module_name or self.config.default_auth_module)
            shown = f"{target} ({named_dsn(named.url, module.username, None, {}).redacted})"
            dsn = named_dsn(named.url, module.username, module.password, dict(module.options))
            return _Resolved(f"{kind}|name:{target}|{module.name}", shown, kind, dsn)
        try:
            address = parse_address(target)
        except TargetError as exc:
            raise ProbeRefused(400, "bad_request", str(exc)) from None
        if not any(pattern.matches(address) for pattern in self.config.allowed):
            raise ProbeRefused(
                403,
                "not_allowed",
                f"target {address} is not in probe.allowed_targets or probe.targets",
            )
        module = self._module(module_name or self.config.default_auth_module)
        dsn = address_dsn(address, module.username, module.password, dict(module.options))
        return _Resolved(f"{kind}|{address}|{module.name}", str(address), kind, dsn)

    def _module(self, name: str | None) -> AuthModule:
        if not name:
            raise ProbeRefused(
                400,
                "unknown_module",
                "no auth module: add &module=<name> or set probe.default_auth_module",
            )
        module = self.config.auth_modules.get(name)
        if module is None:
            known = ", ".join(sorted(self.config.auth_modules))
            raise ProbeRefused(
                400, "unknown_module", f"unknown auth module {name[:64]!r} (known: {known})"
            )
        return module

    def _entry(self, resolved: _Resolved) -> _Entry:
        entry = self._entries.get(resolved.key)
        if entry is not None:
            return entry
        if len(self._entries) >= self.config.max_targets:
            raise ProbeRefused(
                503,
                "too_many_targets",
                f"already probing probe.max_targets={self.config.max_targets} targets; "
                "raise it or wait for idle ones to close (probe.idle_timeout)",
            )
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_concurrent)
        target, connected = KIND_BUILDERS[resolved.kind](resolved.dsn, self.settings)
        bounded = replace(target, source=_BoundedSource(target.source, self._slots))
        scraper = Scraper(bounded, min_interval=self.settings.min_interval, name=resolved.shown)
        entry = _Entry(resolved.key, resolved.shown, scraper, connected, time.monotonic())
        self._entries[resolved.key] = entry
        log.info("new probe target", extra={"fields": {"target": resolved.shown}})
        self._start_reaper()
        return entry

    async def probe(self, query_string: str, accept: str | None = None) -> tuple[int, bytes, str]:
        """(status, body, content type) for one ``/probe`` request."""
        try:
            entry = self._entry(self.resolve(query_string))
        except ProbeRefused as exc:
            self.refused[exc.reason] += 1
            log.debug("probe refused", extra={"fields": {"reason": exc.reason, "err": str(exc)}})
            return exc.status, f"probe refused: {exc}\n".encode(), "text/plain; charset=utf-8"
        entry.busy += 1
        try:
            snap = await entry.scraper.snapshot()
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()
        _, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith("application/openmetrics-text")
        own = [*collect_own(entry.scraper, snap), *merge_health([snap])]
        body = render(own, openmetrics) + snap.encoded(openmetrics)
        return 200, (body + OPENMETRICS_EOF if openmetrics else body), content_type

    def collect(self) -> Iterator[Family]:
        """The prober's own metrics (served on ``/metrics``)."""
        targets = gauge(EXPORTER_PROBE_TARGETS)
        targets.add_metric([], float(len(self._entries)))
        yield targets
        conns = gauge(EXPORTER_PROBE_CONNECTIONS)
        conns.add_metric([], float(sum(1 for e in self._entries.values() if e.connected())))
        yield conns
        refused = counter(EXPORTER_PROBE_REFUSED)
        for reason, n in self.refused.items():
            refused.add_metric([reason], float(n))
        yield refused
        closed = counter(EXPORTER_PROBE_IDLE_CLOSED)
        closed.add_metric([], float(self.idle_closed))
        yield closed

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _reap_forever(self) -> None:
        period = max(0.05, min(self.config.idle_timeout / 4, 30.0))
        while self._entries:
            await asyncio.sleep(period)
            await self.reap()

    async def reap(self) -> int:
        """Close the targets not probed for ``idle_timeout``; how many were closed."""
        cutoff = time.monotonic() - self.config.idle_timeout
        idle = [e for e in self._entries.values() if e.busy == 0 and e.last_used < cutoff]
        for entry in idle:  # forget them first: a probe arriving meanwhile starts afresh
            del self._entries[entry.key]
        self.idle_closed += len(idle)
        for entry in idle:
            try:
                await entry.scraper.target.source.close()
            except Exception:  # one target's close must not leave the others' connections open
                log.exception(
                    "closing idle probe target failed", extra={"fields": {"target": entry.shown}}
                )
                continue
            log.info("closed idle probe target", extra={"fields": {"target": entry.shown}})
        return len(idle)

    async def close(self) -> None:
        """Stop the reaper and close every target's connection."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await entry.scraper.target.source.close()


__all__ = ["KIND_BUILDERS", "REFUSAL_REASONS", "ProbeRefused", "Prober"]
