"""``poolwatch doctor``: the sizing guides' common mistakes, checked against a real server.

Each check looks at the application's pool settings (given as flags, or read from an
importable engine) and at what the server reports (both read by :mod:`poolwatch.doctor_facts`),
and returns a :class:`Check` with a status (``ok``, ``warn`` or ``fail``), what it saw, and
the fix. Example::

    facts = asyncio.run(doctor_facts.read_server_facts("postgresql://app@db/shop"))
    for check in run_checks(PoolSettings(pool_size=20, workers=8), facts, DoctorOptions()):
        print(check.status, check.summary)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from poolwatch.doctor_facts import PoolSettings, ServerFacts
from poolwatch.sizing import MIN_ADMIN_SLOTS

#: Recycle connections at 75 % of the proxy's idle timeout, before the proxy drops them.
RECYCLE_FRACTION = 0.75
#: A session idle in transaction for longer than this holds its connection for nothing.
IDLE_IN_TRANSACTION_THRESHOLD = 5.0
#: A pool_timeout above this hides exhaustion behind slow responses (5-10 s is the baseline).
POOL_TIMEOUT_BASELINE = 10.0

# --- the checks ------------------------------------------------------------------------------


@dataclass
class DoctorOptions:
    """What the application promises the outside world."""

    proxy_idle_timeout: float | None = None
    sla: float | None = None
    pgbouncer: str = "none"
    idle_threshold: float = IDLE_IN_TRANSACTION_THRESHOLD


@dataclass
class Check:
    """One finding: ``status`` is ``ok``, ``warn`` or ``fail``."""

    id: str
    status: str
    summary: str
    fix: str = ""
    details: list[str] = field(default_factory=list)


def run_checks(s: PoolSettings, f: ServerFacts, o: DoctorOptions) -> list[Check]:
    """All checks, in the order they are printed."""
    return [
        check_capacity(s, f, o),
        check_pre_ping(s, o),
        check_recycle(s, o),
        check_pool_timeout(s, o),
        check_prepared_statements(s, o),
        check_server_timeout(
            "idle_in_transaction_session_timeout", f.idle_in_transaction_timeout_ms, f, "5s"
        ),
        check_server_timeout("statement_timeout", f.statement_timeout_ms, f, "30s"),
        check_idle_in_transaction(f, o),
    ]


def check_capacity(s: PoolSettings, f: ServerFacts, o: DoctorOptions) -> Check:
    """(pool_size + max_overflow) x workers against the server's usable connections."""
    per_worker = s.pool_size + s.max_overflow
    peak = per_worker * s.workers
    arithmetic = (
        f"({s.pool_size} + {s.max_overflow}) x {s.workers} worker{'s' if s.workers != 1 else ''}"
        f" = {peak} at peak; the server allows {f.usable} "
        f"(max_connections {f.max_connections} - {f.reserved} reserved)"
    )
    if o.pgbouncer == "transaction":
        return Check(
            "capacity",
            "ok",
            f"{arithmetic}; behind PgBouncer (transaction mode) its default_pool_size is "
            f"what must fit in {f.usable}",
        )
    admin = max(MIN_ADMIN_SLOTS, f.reserved)
    budget = f.max_connections - admin
    suggested = budget // s.workers - s.max_overflow
    share = budget // s.workers
    if suggested >= 1:
        fix = (
            f"pool_size={suggested} (floor(({f.max_connections} - {admin}) / {s.workers}) - "
            f"{s.max_overflow}, keeping {admin} slots for admin sessions and migrations)"
        )
        if suggested < s.max_overflow and share > 6:
            fix += f", or smaller bursts: pool_size={share - 5}, max_overflow=5"
        fix += f"; see `poolwatch size --dsn ... --workers {s.workers}`"
    else:
        fix = (
            f"fewer workers or a smaller max_overflow: {s.workers} workers leave "
            f"{share} connections each; or put PgBouncer (transaction mode) in front"
        )
    if peak > f.usable:
        return Check(
            "capacity",
            "fail",
            f"{arithmetic}: at peak PostgreSQL refuses connections "
            "('remaining connection slots are reserved')",
            fix,
        )
    if peak > budget:
        return Check(
            "capacity",
            "warn",
            f"{arithmetic}: fits, but leaves fewer than {MIN_ADMIN_SLOTS} slots for admin "
            "sessions, migrations and monitoring",
            fix,
        )
    return Check("capacity", "ok", f"{arithmetic}: {f.usable - peak} to spare")


def check_pre_ping(s: PoolSettings, o: DoctorOptions) -> Check:
    """pool_pre_ping off means a dropped connection fails the next query."""
    if s.pool_pre_ping:
        return Check("pool_pre_ping", "ok", "pool_pre_ping is on")
    if o.pgbouncer == "transaction":
        return Check(
            "pool_pre_ping",
            "ok",
            "pool_pre_ping is off; behind PgBouncer (transaction mode) it adds little",
        )
    return Check(
        "pool_pre_ping",
        "fail",
        "pool_pre_ping is off: a connection a proxy or the server dropped fails the next "
        "query instead of being replaced",
        "pool_pre_ping=True (a SELECT 1 on checkout)",
    )


def check_recycle(s: PoolSettings, o: DoctorOptions) -> Check:
    """pool_recycle missing, or longer than 75 % of the proxy's idle timeout."""
    shown = "off" if s.pool_recycle is None else f"{s.pool_recycle:g} s"
    if o.proxy_idle_timeout is not None:
        limit = math.floor(RECYCLE_FRACTION * o.proxy_idle_timeout)
        if s.pool_recycle is None or s.pool_recycle > limit:
            return Check(
                "pool_recycle",
                "fail",
                f"pool_recycle is {shown} but the proxy drops idle connections after "
                f"{o.proxy_idle_timeout:g} s: stale sockets reach the application "
                "(ConnectionResetError / connection was closed in the middle of operation)",
                f"pool_recycle={limit} (75 % of the proxy idle timeout), with pool_pre_ping=True",
            )
        return Check(
            "pool_recycle",
            "ok",
            f"pool_recycle {shown} <= {limit} s (75 % of the {o.proxy_idle_timeout:g} s proxy "
            "idle timeout)",
        )
    if s.pool_recycle is None:
        return Check(
            "pool_recycle",
            "warn",
            "pool_recycle is off: connections live forever, and a proxy or load balancer "
            "that drops idle sockets leaves stale ones in the pool",
            "pool_recycle=1800 (below the common 3600 s idle timeout), or pass "
            "--proxy-idle-timeout to check against your proxy",
        )
    return Check(
        "pool_recycle", "ok", f"pool_recycle {shown} (pass --proxy-idle-timeout to check it)"
    )


def check_pool_timeout(s: PoolSettings, o: DoctorOptions) -> Check:
    """pool_timeout longer than the SLA hides exhaustion behind slow requests."""
    if o.sla is not None:
        if s.pool_timeout >= o.sla:
            return Check(
                "pool_timeout",
                "fail",
                f"pool_timeout {s.pool_timeout:g} s >= the {o.sla:g} s SLA: when the pool is "
                "exhausted, requests hang past the SLA instead of failing fast and visibly",
                f"pool_timeout={_nice(o.sla / 2)} (well under the SLA) and alert on "
                "sqlalchemy_pool_timeouts_total",
            )
        return Check(
            "pool_timeout", "ok", f"pool_timeout {s.pool_timeout:g} s < the {o.sla:g} s SLA"
        )
    if s.pool_timeout > POOL_TIMEOUT_BASELINE:
        return Check(
            "pool_timeout",
            "warn",
            f"pool_timeout {s.pool_timeout:g} s: waiters pile up that long before an error "
            "shows exhaustion",
            "pool_timeout=10 or less (5-10 s is the usual baseline), or pass --sla to "
            "check against your response-time target",
        )
    return Check("pool_timeout", "ok", f"pool_timeout {s.pool_timeout:g} s")


#: The verified setting for asyncpg behind PgBouncer in transaction mode (sizing, runbook).
PREPARED_FIX = (
    'connect_args={"statement_cache_size": 0} (asyncpg then sends every statement unnamed; '
    "SQLAlchemy's prepared_statement_cache_size needs no change)"
)


def check_prepared_statements(s: PoolSettings, o: DoctorOptions) -> Check:
    """asyncpg's named prepared statements behind PgBouncer in transaction mode."""
    if o.pgbouncer != "transaction":
        return Check(
            "prepared_statements", "ok", "not behind PgBouncer in transaction mode (--pgbouncer)"
        )
    if s.driver != "asyncpg":
        return Check("prepared_statements", "ok", f"driver {s.driver}: not asyncpg")
    if s.prepared_statements:
        return Check(
            "prepared_statements",
            "fail",
            "asyncpg's statement cache is on behind PgBouncer in transaction mode: its named "
            "statements (__asyncpg_stmt_N__) stay on PgBouncer's server connections and collide "
            'with other clients\' (prepared statement "__asyncpg_stmt_..." already exists / '
            "does not exist)",
            PREPARED_FIX,
        )
    if s.unique_statement_names:
        return Check(
            "prepared_statements",
            "warn",
            "prepared_statement_name_func gives every statement a unique name: each one stays "
            "prepared on PgBouncer's server connections, which fill up with them",
            "drop prepared_statement_name_func: statement_cache_size=0 alone is enough",
        )
    return Check(
        "prepared_statements",
        "ok",
        "asyncpg's statement cache is off: every statement is unnamed (safe behind PgBouncer)",
    )


def check_server_timeout(name: str, value_ms: int, f: ServerFacts, suggested: str) -> Check:
    """A server-side safety timeout (0 = unset)."""
    if value_ms:
        return Check(name, "ok", f"{name} = {_ms(value_ms)}")
    return Check(
        name,
        "fail",
        f"{name} is unset (0) for role {f.role} on database {f.database}: "
        + (
            "a session left idle in transaction holds its locks and its connection forever"
            if name.startswith("idle")
            else "a runaway query holds its connection until it finishes"
        ),
        f"ALTER DATABASE {_ident(f.database)} SET {name} = '{suggested}'; or in the app: "
        f"connect_args={{'server_settings': {{'{name}': '{_to_ms(suggested)}'}}}} "
        "(doctor sees the latter only with --engine)",
    )


def check_idle_in_transaction(f: ServerFacts, o: DoctorOptions) -> Check:
    """Sessions idle in transaction right now (a slow call awaited inside a transaction)."""
    stale = [s for s in f.idle_in_transaction if s.idle_seconds >= o.idle_threshold]
    fresh = len(f.idle_in_transaction) - len(stale)
    visibility = (
        ""
        if f.sees_all_sessions
        else f" (role {f.role} sees only its own sessions: grant pg_monitor to see all)"
    )
    if not stale:
        extra = f"; {fresh} briefly (< {o.idle_threshold:g} s)" if fresh else ""
        return Check(
            "idle_in_transaction",
            "ok",
            f"no session on {f.database} idle in transaction for {o.idle_threshold:g} s or more"
            f"{extra}{visibility}",
        )
    details = [
        f"pid {s.pid} {s.usename}@{s.datname} app={s.application_name or '-'} "
        f"{s.state} for {s.idle_seconds:.1f} s (transaction open {s.transaction_seconds:.1f} s)"
        for s in stale[:10]
    ]
    if len(stale) > 10:
        details.append(f"... and {len(stale) - 10} more")
    return Check(
        "idle_in_transaction",
        "fail",
        f"{len(stale)} session{'s' if len(stale) != 1 else ''} idle in transaction for "
        f"{o.idle_threshold:g} s or more{visibility}: each holds a connection and its locks",
        "find the code that awaits slow non-database work inside `async with session.begin()` "
        "and move that work outside the transaction; set idle_in_transaction_session_timeout; "
        "end a stuck one with SELECT pg_terminate_backend(pid)",
        details,
    )


def _nice(seconds: float) -> str:
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


def _ms(value: int) -> str:
    return f"{value / 1000:g} s" if value % 1000 == 0 else f"{value} ms"


def _to_ms(text: str) -> str:
    return str(int(text.rstrip("s")) * 1000)


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def summary_counts(checks: Sequence[Check]) -> tuple[int, int]:
    """(problems, warnings)."""
    return (
        sum(1 for c in checks if c.status == "fail"),
        sum(1 for c in checks if c.status == "warn"),
    )


def report_dict(
    target: str, s: PoolSettings, f: ServerFacts, o: DoctorOptions, checks: Sequence[Check]
) -> dict[str, Any]:
    """The ``--json`` document."""
    problems, warnings = summary_counts(checks)
    server = asdict(f)
    server["reserved"] = f.reserved
    server["usable"] = f.usable
    return {
        "target": target,
        "server": server,
        "settings": asdict(s),
        "options": asdict(o),
        "checks": [asdict(c) for c in checks],
        "problems": problems,
        "warnings": warnings,
    }
