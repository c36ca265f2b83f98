"""Scrape the two ``/metrics`` endpoints and evaluate the alert rules' thresholds.

The demo does not run Prometheus; it reads the same series Prometheus would and applies
the thresholds of :mod:`poolwatch.thresholds`, the table ``alerts/*.rules.yml`` are
generated from (ignoring ``for:``, so it says which alert *would* fire).

A rule over a counter (``increase(...[window])``) or a change (``changes(...[window])``)
compares the latest scrape with the run's first one: a counter's increase since then (a value
below the first one is a reset, so all of it counts, as ``increase()`` does), a gauge that
differs. A demo run is shorter than those windows (10 or 15 minutes), so both see the same
events; a run past the window still counts from its start.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from poolwatch import metric_names as m
from poolwatch import thresholds as t

Labels = tuple[tuple[str, str], ...]


@dataclass
class Samples:
    """One scrape: ``name -> [(labels, value)]`` (an empty scrape when the target is down)."""

    series: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    up: bool = False

    @classmethod
    def parse(cls, text: str) -> Samples:
        """Parse Prometheus text exposition."""
        out = cls(up=True)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.series.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out

    def matching(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """The samples of ``name`` whose labels include ``labels`` (NaN left out)."""
        return [
            (have, v)
            for have, v in self.series.get(name, [])
            if all(have.get(k) == want for k, want in labels.items()) and not math.isnan(v)
        ]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(v for _, v in self.matching(name, **labels))

    def maximum(self, name: str, **labels: str) -> float:
        """Largest matching sample (0 when none)."""
        return max((v for _, v in self.matching(name, **labels)), default=0.0)

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """Cumulative ``(le, count)`` of histogram ``name``, sorted by ``le``."""
        found: dict[float, float] = {}
        for have, v in self.series.get(name + "_bucket", []):
            if all(have.get(k) == want for k, want in labels.items()):
                le = float(have["le"])
                found[le] = found.get(le, 0.0) + v
        return sorted(found.items())


def quantile(q: float, now: list[tuple[float, float]], before: list[tuple[float, float]]) -> float:
    """``histogram_quantile(q, increase)`` between two cumulative bucket lists (0 if empty)."""
    old = dict(before)
    inc = [(le, count - old.get(le, 0.0)) for le, count in now]
    if not inc or inc[-1][1] <= 0:
        return 0.0
    rank = q * inc[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in inc:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 1.0)
        prev_le, prev_count = le, count
    return prev_le


@dataclass
class Snapshot:
    """What both endpoints said at one moment, plus the demo's own request counts."""

    at: float
    app: Samples
    pg: Samples
    requests_ok: int = 0
    requests_timed_out: int = 0
    requests_failed: int = 0

    def pool(self, name: str) -> float:
        """A ``sqlalchemy_pool_*`` value of the demo pool."""
        return self.app.value(f"sqlalchemy_pool_{name}", pool="demo")

    def as_dict(self, database: str) -> dict[str, float | int | bool]:
        """The numbers the display shows, JSON-ready."""
        p, g = self.pool, self.pg
        return {
            "pool_size": p("size"),
            "max_overflow": p("max_overflow"),
            "checked_out": p("checked_out"),
            "idle": p("idle"),
            "overflow": p("overflow"),
            "waiting": p("waiting"),
            "oldest_checkout_seconds": round(p("oldest_checkout_seconds"), 2),
            "checkouts_total": p("checkouts_total"),
            "checkins_total": p("checkins_total"),
            "timeouts_total": p("timeouts_total"),
            "leaks_total": p("leaks_total"),
            "exporter_up": g.up,
            "pg_up": g.value("pg_up"),
            "pg_active": g.value("pg_sessions", datname=database, state="active"),
            "pg_idle": g.value("pg_sessions", datname=database, state="idle"),
            "pg_idle_in_transaction": g.value("pg_idle_in_transaction_sessions", datname=database),
            "pg_idle_in_transaction_stale": g.value(
                "pg_idle_in_transaction_stale_sessions", datname=database
            ),
            "pg_lock_waiting": g.value("pg_lock_waiting_sessions", datname=database),
            "pg_lock_wait_max_seconds": round(
                g.maximum("pg_lock_wait_max_seconds", datname=database), 2
            ),
            "pg_blocked": g.value("pg_blocked_sessions", datname=database),
            "pg_blocking": g.value("pg_blocking_sessions", datname=database),
            "requests_ok": self.requests_ok,
            "requests_timed_out": self.requests_timed_out,
            "requests_failed": self.requests_failed,
        }


@dataclass(frozen=True)
class AlertRule:
    """An alert of ``alerts/*.rules.yml`` and how the demo evaluates its threshold."""

    name: str
    severity: str
    for_: str
    check: Callable[[Snapshot, Snapshot, str], str | None]

    @classmethod
    def of(
        cls, threshold: t.Threshold, check: Callable[[Snapshot, Snapshot, str], str | None]
    ) -> AlertRule:
        """The rule of ``threshold``'s alert, evaluated by ``check``."""
        return cls(threshold.alert, threshold.severity, threshold.for_, check)


def _value(threshold: t.Threshold) -> float:
    assert threshold.value is not None, threshold.alert
    return threshold.value


def _exhausted(now: Snapshot, _first: Snapshot, _db: str) -> str | None:
    # Callers wait only at capacity (the alert: sqlalchemy_pool_waiting > 0).
    waiting = now.pool("waiting")
    if waiting > _value(t.POOL_EXHAUSTED):
        cap = now.pool("size") + now.pool("max_overflow")
        return f"{waiting:g} waiting, {now.pool('checked_out'):g}/{cap:g} checked out"
    return None


def _near_capacity(now: Snapshot, _first: Snapshot, _db: str) -> str | None:
    cap = now.pool("size") + now.pool("max_overflow")
    limit = _value(t.POOL_NEAR_CAPACITY)
    if cap and now.pool("checked_out") / cap >= limit:
        return f"utilization {now.pool('checked_out') / cap:.2f} >= {limit:g}"
    return None


def _checkout_slow(now: Snapshot, first: Snapshot, _db: str) -> str | None:
    name, limit = m.POOL_CHECKOUT_DURATION.name, _value(t.POOL_CHECKOUT_SLOW)
    p95 = quantile(0.95, now.app.buckets(name, pool="demo"), first.app.buckets(name, pool="demo"))
    return f"checkout p95 {p95:.2f} s > {limit:g} s" if p95 > limit else None


def _increase(metric: str, what: str) -> Callable[[Snapshot, Snapshot, str], str | None]:
    def check(now: Snapshot, first: Snapshot, _db: str) -> str | None:
        delta = now.pool(metric) - first.pool(metric)
        return f"{delta:g} {what}" if delta > 0 else None

    return check


def _checkins_lagging(now: Snapshot, first: Snapshot, _db: str) -> str | None:
    outs = now.pool("checkouts_total") - first.pool("checkouts_total")
    ins = now.pool("checkins_total") - first.pool("checkins_total")
    if ins < outs and now.pool("oldest_checkout_seconds") > _value(t.POOL_CHECKINS_LAGGING):
        oldest = now.pool("oldest_checkout_seconds")
        return f"{outs - ins:g} more checkouts than checkins, oldest held {oldest:.0f} s"
    return None


def _rule(
    threshold: t.Threshold, check: Callable[..., str | None], *args: Any, **kwargs: Any
) -> AlertRule:
    """``threshold``'s alert, evaluated by ``check(now, first, database, limit, *args,
    **kwargs)`` with the table's value as ``limit``."""
    limit = _value(threshold)
    return AlertRule.of(
        threshold, lambda now, first, db: check(now, first, db, limit, *args, **kwargs)
    )


def _pg(
    now: Snapshot,
    _first: Snapshot,
    db: str,
    limit: float,
    spec: m.MetricSpec,
    what: str,
    at_least: bool = False,
) -> str | None:
    """``spec`` (summed over the demo database) compared as its alert does: > or >=."""
    value = now.pg.value(spec.name, datname=db)
    compare = operator.ge if at_least else operator.gt
    return f"{value:g} {what}" if compare(value, limit) else None


def _oldest(
    now: Snapshot, _first: Snapshot, db: str, limit: float, spec: m.MetricSpec, what: str
) -> str | None:
    """The largest age of ``spec`` in the demo database (over every other label) > the limit."""
    age = now.pg.maximum(spec.name, datname=db)
    return f"{what} for {age:.0f} s > {limit:g} s" if age > limit else None


def _counter(
    now: Snapshot, first: Snapshot, db: str, limit: float, spec: m.MetricSpec, what: str
) -> str | None:
    """``increase()`` of a server counter in the demo database since the run's first scrape."""
    if not (now.pg.matching(spec.name, datname=db) and first.pg.matching(spec.name, datname=db)):
        return None  # no two scrapes of it (PostgreSQL < 14, a degraded scrape, down)
    value, before = now.pg.value(spec.name, datname=db), first.pg.value(spec.name, datname=db)
    delta = value - before if value >= before else value
    return f"{delta:g} {what} since the start" if delta > limit else None


def _near_limit(
    now: Snapshot, _first: Snapshot, _db: str, at: float, used: m.MetricSpec, limit: m.MetricSpec
) -> str | None:
    """``used / (limit > 0) >= at`` per role or database: the fullest one."""
    label = used.labels[0]
    ratios = [
        (now.pg.value(used.name, **labels) / cap, labels.get(label, ""))
        for labels, cap in now.pg.matching(limit.name)
        if cap > 0
    ]
    ratio, name = max(ratios, default=(0.0, ""))
    return f"{label} {name}: {ratio:.0%} of its CONNECTION LIMIT" if ratio >= at else None


def _changed(
    now: Snapshot, first: Snapshot, _db: str, limit: float, spec: m.MetricSpec, what: str
) -> str | None:
    """``changes()`` of a server gauge: it differs from the run's first scrape (both served)."""
    was, new = first.pg.matching(spec.name), now.pg.matching(spec.name)
    changes = 1 if was and new and was[0][1] != new[0][1] else 0
    return what if changes > limit else None


RULES: tuple[AlertRule, ...] = (
    AlertRule.of(t.POOL_EXHAUSTED, _exhausted),
    AlertRule.of(t.POOL_NEAR_CAPACITY, _near_capacity),
    AlertRule.of(t.POOL_CHECKOUT_SLOW, _checkout_slow),
    AlertRule.of(t.POOL_TIMEOUTS, _increase("timeouts_total", "timeouts")),
    AlertRule.of(t.POOL_CONNECTION_LEAK, _increase("leaks_total", "leaks")),
    AlertRule.of(t.POOL_CHECKINS_LAGGING, _checkins_lagging),
    _rule(
        t.POSTGRES_IDLE_IN_TRANSACTION,
        _pg,
        m.PG_IDLE_IN_TRANSACTION_STALE_SESSIONS,
        "stale idle-in-transaction sessions",
    ),
    _rule(
        t.POSTGRES_LOCK_WAITS, _pg, m.PG_LOCK_WAITING_SESSIONS, "waiting on locks", at_least=True
    ),
    _rule(t.POSTGRES_BLOCKED_SESSIONS, _pg, m.PG_BLOCKED_SESSIONS, "blocked"),
    # alerts/server.rules.yml
    _rule(
        t.POSTGRES_LONG_TRANSACTION, _oldest, m.PG_TRANSACTION_MAX_AGE_SECONDS, "a transaction open"
    ),
    _rule(t.POSTGRES_LONG_QUERY, _oldest, m.PG_QUERY_MAX_AGE_SECONDS, "a statement running"),
    _rule(
        t.POSTGRES_SESSIONS_FATAL,
        _counter,
        m.PG_STAT_DATABASE_SESSIONS_FATAL,
        "sessions ended by a FATAL error (idle_in_transaction_session_timeout?)",
    ),
    _rule(t.POSTGRES_DEADLOCKS, _counter, m.PG_STAT_DATABASE_DEADLOCKS, "deadlocks"),
    _rule(
        t.POSTGRES_ROLE_CONNECTION_LIMIT,
        _near_limit,
        m.PG_ROLES_CONNECTIONS,
        m.PG_ROLES_CONNECTION_LIMIT,
    ),
    _rule(
        t.POSTGRES_DATABASE_CONNECTION_LIMIT,
        _near_limit,
        m.PG_DATABASE_CONNECTIONS,
        m.PG_DATABASE_CONNECTION_LIMIT,
    ),
    _rule(
        t.POSTGRES_RESTARTED, _changed, m.PG_POSTMASTER_START_TIME, "the server's start time moved"
    ),
    _rule(
        t.POSTGRES_ROLE_CHANGED,
        _changed,
        m.PG_REPLICATION_IS_REPLICA,
        "the server changed role (primary / standby)",
    ),
)


def load_rules() -> tuple[list[AlertRule], str]:
    """The rules the demo evaluates and where their thresholds come from."""
    return list(RULES), "poolwatch.thresholds (as alerts/*.rules.yml)"


def firing(
    rules: Iterable[AlertRule], now: Snapshot, first: Snapshot, database: str
) -> list[tuple[AlertRule, str]]:
    """The rules whose condition holds now, with why."""
    out = []
    for rule in rules:
        why = rule.check(now, first, database)
        if why:
            out.append((rule, why))
    return out
