"""``poolwatch doctor --pgbouncer-admin-dsn``: PgBouncer's settings against the app's pool.

Reads ``SHOW CONFIG`` (and ``SHOW VERSION``) from PgBouncer's admin console as a
``stats_users`` role, then checks three places where an application pool and PgBouncer
disagree. Example::

    facts = asyncio.run(read_pgbouncer_facts("postgresql://stats@127.0.0.1:6432/pgbouncer"))
    for check in pgbouncer_checks(PoolSettings(pool_size=50, workers=4), facts, DoctorOptions()):
        print(check.status, check.summary)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from poolwatch.doctor import RECYCLE_FRACTION, Check, DoctorOptions
from poolwatch.doctor_facts import DoctorError, PoolSettings
from poolwatch.pgbouncer import AdminConsole, ConsoleError
from poolwatch.sizing import CLIENT_CONN_ALERT_PERCENT

_NUMBERS = (
    "max_client_conn",
    "default_pool_size",
    "reserve_pool_size",
    "max_db_connections",
    "max_user_connections",
    "server_lifetime",
    "server_idle_timeout",
    "query_wait_timeout",
    "client_idle_timeout",
)


@dataclass
class PgBouncerFacts:
    """What PgBouncer's SHOW CONFIG says (durations in seconds; 0 = off, None = not shown)."""

    version: str
    pool_mode: str
    max_client_conn: float | None
    default_pool_size: float | None
    reserve_pool_size: float | None
    max_db_connections: float | None
    max_user_connections: float | None
    server_lifetime: float | None
    server_idle_timeout: float | None
    query_wait_timeout: float | None
    client_idle_timeout: float | None


def _number(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def facts_from_config(config: dict[str, Any], version: str) -> PgBouncerFacts:
    """:class:`PgBouncerFacts` from SHOW CONFIG's key -> value (missing keys give None)."""
    numbers = {key: _number(config[key]) if key in config else None for key in _NUMBERS}
    return PgBouncerFacts(
        version=version, pool_mode=str(config.get("pool_mode", "session")), **numbers
    )


async def read_pgbouncer_facts(dsn: str, timeout: float = 10.0) -> PgBouncerFacts:
    """Connect to PgBouncer's admin console and read its settings (one short session)."""
    try:
        async with await AdminConsole.connect(
            dsn, timeout=timeout, application_name="poolwatch-doctor"
        ) as console:
            config = {row["key"]: row["value"] for row in await console.show("CONFIG")}
            version_rows = await console.show("VERSION")
    except ConsoleError as exc:
        raise DoctorError(f"--pgbouncer-admin-dsn: {exc}") from None
    version = str(next(iter(version_rows[0].values()))) if version_rows else "PgBouncer"
    return facts_from_config(config, version)


def pgbouncer_checks(s: PoolSettings, p: PgBouncerFacts, o: DoctorOptions) -> list[Check]:
    """The PgBouncer checks, in the order they are printed."""
    return [
        check_client_capacity(s, p),
        check_recycle_vs_pgbouncer(s, p, o),
        check_queue_wait(s, p, o),
    ]


def _s(value: float) -> str:
    return f"{value:g} s"


def check_client_capacity(s: PoolSettings, p: PgBouncerFacts) -> Check:
    """(pool_size + max_overflow) x workers against PgBouncer's max_client_conn."""
    peak = (s.pool_size + s.max_overflow) * s.workers
    limit = p.max_client_conn
    arithmetic = f"({s.pool_size} + {s.max_overflow}) x {s.workers} = {peak} client connections"
    if limit is None:
        return Check("pgb_clients", "warn", f"{arithmetic}; SHOW CONFIG has no max_client_conn")
    needed = -(-peak * 100 // CLIENT_CONN_ALERT_PERCENT)
    fix = (
        f"max_client_conn = {needed} in pgbouncer.ini (keeps {peak} under "
        f"{CLIENT_CONN_ALERT_PERCENT} %), or a smaller pool; see `poolwatch size --pgbouncer "
        "transaction`"
    )
    if peak > limit:
        return Check(
            "pgb_clients",
            "fail",
            f"{arithmetic} at peak, over PgBouncer's max_client_conn {limit:g}: PgBouncer "
            "refuses the rest ('no more connections allowed (max_client_conn)')",
            fix,
        )
    if peak * 100 > limit * CLIENT_CONN_ALERT_PERCENT:
        return Check(
            "pgb_clients",
            "warn",
            f"{arithmetic} at peak: over {CLIENT_CONN_ALERT_PERCENT} % of max_client_conn "
            f"{limit:g}, with little room for other clients",
            fix,
        )
    return Check("pgb_clients", "ok", f"{arithmetic} at peak, within max_client_conn {limit:g}")


def check_recycle_vs_pgbouncer(s: PoolSettings, p: PgBouncerFacts, o: DoctorOptions) -> Check:
    """pool_recycle against client_idle_timeout, server_lifetime and server_idle_timeout."""
    shown = "off" if s.pool_recycle is None else _s(s.pool_recycle)
    idle_client = p.client_idle_timeout or 0
    lifetime = p.server_lifetime or 0
    server_side = (
        f"server_lifetime {_s(lifetime)}, server_idle_timeout {_s(p.server_idle_timeout or 0)}"
    )
    if idle_client > 0:
        limit = math.floor(RECYCLE_FRACTION * idle_client)
        if s.pool_recycle is None or s.pool_recycle > limit:
            return Check(
                "pgb_recycle",
                "fail",
                f"pool_recycle is {shown} but PgBouncer closes client connections idle for "
                f"{_s(idle_client)} (client_idle_timeout): the pool hands out closed ones",
                f"pool_recycle={limit} (75 % of client_idle_timeout), with pool_pre_ping=True",
            )
    mode = o.pgbouncer if o.pgbouncer != "none" else p.pool_mode
    if mode == "session" and lifetime > 0 and (s.pool_recycle is None or s.pool_recycle > lifetime):
        return Check(
            "pgb_recycle",
            "warn",
            f"pool_recycle is {shown} but in session mode a server connection lives as long as "
            f"the app's client connection, so PgBouncer's server_lifetime {_s(lifetime)} "
            "cannot retire it",
            f"pool_recycle={math.floor(lifetime)} or less (server_lifetime)",
        )
    if mode == "transaction":
        return Check(
            "pgb_recycle",
            "ok",
            f"pool_recycle {shown}: in transaction mode PgBouncer retires server connections "
            f"itself ({server_side}); pool_recycle only renews client connections",
        )
    return Check("pgb_recycle", "ok", f"pool_recycle {shown} fits PgBouncer's {server_side}")


def check_queue_wait(s: PoolSettings, p: PgBouncerFacts, o: DoctorOptions) -> Check:
    """pool_timeout against query_wait_timeout: where the queue moved, it must fail fast too."""
    wait = p.query_wait_timeout
    if wait is None:
        return Check("pgb_queue_wait", "warn", "SHOW CONFIG has no query_wait_timeout")
    shown = "off (0)" if wait == 0 else _s(wait)
    target = o.sla if o.sla is not None else s.pool_timeout
    what = f"the {_s(o.sla)} SLA" if o.sla is not None else f"pool_timeout {_s(s.pool_timeout)}"
    fix = (
        f"query_wait_timeout = {math.floor(min(s.pool_timeout, target)) or 1} in pgbouncer.ini "
        "(behind PgBouncer the app's checkout is instant: clients queue in PgBouncer instead)"
    )
    if wait == 0 or wait > target:
        status = "fail" if o.sla is not None else "warn"
        return Check(
            "pgb_queue_wait",
            status,
            f"query_wait_timeout is {shown}, longer than {what}: when PgBouncer's server pool "
            "is exhausted, queries wait there that long instead of failing fast",
            fix,
        )
    return Check("pgb_queue_wait", "ok", f"query_wait_timeout {shown} <= {what}")
