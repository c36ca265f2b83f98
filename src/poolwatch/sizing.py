"""Pool sizing advice: the formula from the sizing guide, as pure functions.

The connection budget of a PostgreSQL server is ``max_connections - reserved`` (the slots
ordinary roles cannot use, plus whatever you keep back for admin sessions, migrations and
monitoring). Every worker process has its own pool, and at peak each one opens
``pool_size + max_overflow`` connections, so::

    pool_size = floor((max_connections - reserved) / workers) - max_overflow

Example::

    >>> advice = recommend(SizingInput(max_connections=200, reserved=10, workers=4,
    ...                                max_overflow=5))
    >>> advice.pool_size, advice.peak_total, advice.headroom
    (42, 188, 2)

Behind PgBouncer in transaction mode the pool that guards PostgreSQL is PgBouncer's own
``default_pool_size``; the application pool may then be generous, and asyncpg's prepared
statements must be turned off (:func:`recommend` returns that advice instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: The sizing guides' advice: keep at least this many slots for admin / monitoring / migrations.
MIN_ADMIN_SLOTS = 10

PGBOUNCER_MODES = ("none", "session", "transaction")
PGBOUNCER_DEFAULT_MAX_CLIENT_CONN = 100
#: client connections used / max_client_conn (in %) at which the PgBouncer alert warns
CLIENT_CONN_ALERT_PERCENT = 85


class SizingError(ValueError):
    """The inputs cannot give a usable pool; the message says why and what to change."""


@dataclass(frozen=True)
class SizingInput:
    """What the sizing formula needs (all counts are connections or processes)."""

    max_connections: int
    reserved: int
    workers: int
    max_overflow: int
    pool_timeout: float = 10.0
    pool_recycle: int = 1800
    pgbouncer: str = "none"
    concurrency: int = 100
    pgbouncer_pools: int = 1


@dataclass(frozen=True)
class SizingAdvice:
    """The recommendation, the arithmetic behind it, and a ready engine snippet."""

    mode: str
    pool_size: int
    max_overflow: int
    workers: int
    max_connections: int
    reserved: int
    usable: int
    per_worker_peak: int
    peak_total: int
    headroom: int
    formula: str
    snippet: str
    notes: list[str] = field(default_factory=list)
    pgbouncer_default_pool_size: int | None = None
    pgbouncer_max_client_conn: int | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view of the advice."""
        return {
            "mode": self.mode,
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "workers": self.workers,
            "max_connections": self.max_connections,
            "reserved": self.reserved,
            "usable": self.usable,
            "per_worker_peak": self.per_worker_peak,
            "peak_total": self.peak_total,
            "headroom": self.headroom,
            "formula": self.formula,
            "snippet": self.snippet,
            "notes": list(self.notes),
            "pgbouncer_default_pool_size": self.pgbouncer_default_pool_size,
            "pgbouncer_max_client_conn": self.pgbouncer_max_client_conn,
        }


def validate(inp: SizingInput) -> None:
    """Raise :class:`SizingError` with one readable line when ``inp`` cannot be sized."""
    if inp.pgbouncer not in PGBOUNCER_MODES:
        raise SizingError(
            f"--pgbouncer must be one of {', '.join(PGBOUNCER_MODES)}, not {inp.pgbouncer!r}"
        )
    _at_least_one(
        inp.max_connections,
        "max_connections",
        "pass the server's value, e.g. --max-connections 100",
    )
    if inp.reserved < 0:
        raise SizingError(f"--reserved cannot be negative (got {inp.reserved}): use 0 or more")
    _at_least_one(
        inp.workers,
        "--workers",
        "count every process that opens its own pool (uvicorn/gunicorn workers, background "
        "workers)",
    )
    if inp.max_overflow < 0:
        raise SizingError(
            f"--max-overflow cannot be negative (got {inp.max_overflow}): use 0 to disable "
            "burst connections"
        )
    if inp.reserved >= inp.max_connections:
        raise SizingError(
            f"--reserved ({inp.reserved}) must be below max_connections "
            f"({inp.max_connections}): nothing is left for the application; lower --reserved "
            "or raise max_connections"
        )
    if not math.isfinite(inp.pool_timeout) or inp.pool_timeout <= 0:
        raise SizingError(f"--pool-timeout must be positive (got {inp.pool_timeout:g})")
    if inp.pool_recycle != -1 and inp.pool_recycle < 1:
        raise SizingError(
            f"--pool-recycle must be -1 (off) or at least 1 second (got {inp.pool_recycle})"
        )
    _at_least_one(inp.concurrency, "--concurrency")
    _at_least_one(
        inp.pgbouncer_pools,
        "--pgbouncer-pools",
        "count the (database, user) pairs PgBouncer keeps a pool for",
    )
    if inp.pgbouncer == "transaction" and inp.pgbouncer_pools > inp.max_connections - inp.reserved:
        raise SizingError(
            f"{inp.pgbouncer_pools} PgBouncer pools cannot each get a server connection out of "
            f"{inp.max_connections - inp.reserved} usable: fewer pools, or raise max_connections"
        )


def _at_least_one(value: int, name: str, hint: str = "") -> None:
    if value < 1:
        raise SizingError(
            f"{name} must be at least 1 (got {value})" + (f": {hint}" if hint else "")
        )


def recommend(inp: SizingInput) -> SizingAdvice:
    """The recommended pool for ``inp``; raises :class:`SizingError` on unusable input."""
    validate(inp)
    if inp.pgbouncer == "transaction":
        return _recommend_pgbouncer_transaction(inp)
    usable = inp.max_connections - inp.reserved
    share = usable // inp.workers
    pool_size = share - inp.max_overflow
    if pool_size < 1:
        raise SizingError(_too_small(inp, usable, share, pool_size))
    formula = (
        f"floor(({inp.max_connections} - {inp.reserved}) / {inp.workers}) - "
        f"{inp.max_overflow} = {share} - {inp.max_overflow} = {pool_size}"
    )
    notes = _reserved_note(inp)
    if pool_size >= 20 and pool_size % 5:
        conservative = pool_size - pool_size % 5
        notes.append(
            f"an async worker rarely needs more than 10-20 connections; rounding down "
            f"(e.g. pool_size={conservative}) leaves more room for other tools"
        )
    if inp.pgbouncer == "session":
        notes.append(
            "PgBouncer in session mode gives each client connection its own server "
            "connection: size against PgBouncer's pool limit as if it were max_connections"
        )
    return _advice(
        inp,
        inp.pgbouncer,
        pool_size,
        limit=usable,
        formula=formula,
        snippet=engine_snippet(pool_size, inp.max_overflow, inp.pool_timeout, inp.pool_recycle),
        notes=notes,
    )


def _peak(inp: SizingInput, pool_size: int) -> int:
    """Connections all workers open at peak: ``(pool_size + max_overflow) * workers``."""
    return (pool_size + inp.max_overflow) * inp.workers


def _advice(
    inp: SizingInput,
    mode: str,
    pool_size: int,
    *,
    limit: int,
    formula: str,
    snippet: str,
    notes: list[str],
    pgbouncer_default_pool_size: int | None = None,
    pgbouncer_max_client_conn: int | None = None,
) -> SizingAdvice:
    """The advice for ``pool_size`` per worker; ``headroom`` is what the peak leaves of
    ``limit`` (the usable slots, or PgBouncer's max_client_conn)."""
    peak = _peak(inp, pool_size)
    return SizingAdvice(
        mode=mode,
        pool_size=pool_size,
        max_overflow=inp.max_overflow,
        workers=inp.workers,
        max_connections=inp.max_connections,
        reserved=inp.reserved,
        usable=inp.max_connections - inp.reserved,
        per_worker_peak=pool_size + inp.max_overflow,
        peak_total=peak,
        headroom=limit - peak,
        formula=formula,
        snippet=snippet,
        notes=notes,
        pgbouncer_default_pool_size=pgbouncer_default_pool_size,
        pgbouncer_max_client_conn=pgbouncer_max_client_conn,
    )


def _reserved_note(inp: SizingInput) -> list[str]:
    if inp.reserved >= MIN_ADMIN_SLOTS:
        return []
    return [
        f"only {inp.reserved} slots reserved: keep at least {MIN_ADMIN_SLOTS} for admin "
        "sessions, migrations and monitoring (--reserved 10)"
    ]


def _too_small(inp: SizingInput, usable: int, share: int, pool_size: int) -> str:
    why = (
        f"pool_size would be {pool_size}: {usable} usable connections / {inp.workers} "
        f"workers = {share} per worker, minus max_overflow {inp.max_overflow}"
    )
    if share >= 1:
        return (
            f"{why}; lower --max-overflow to at most {share - 1}, use fewer workers, "
            "or raise max_connections"
        )
    return (
        f"{why}; use at most {usable} workers, or raise max_connections, or put PgBouncer in front"
    )


def _recommend_pgbouncer_transaction(inp: SizingInput) -> SizingAdvice:
    usable = inp.max_connections - inp.reserved
    pool_size = inp.concurrency
    peak = _peak(inp, pool_size)
    per_worker = pool_size + inp.max_overflow
    # stay below the 85 % at which PoolwatchPgBouncerClientsNearLimit-style alerts fire
    max_client_conn = -(-peak * 100 // CLIENT_CONN_ALERT_PERCENT)  # ceil, in integers
    default_pool_size = usable // inp.pgbouncer_pools
    pools = inp.pgbouncer_pools
    notes = [
        f"PgBouncer max_client_conn >= {max_client_conn}: the app opens up to {peak} client "
        f"connections ({per_worker} x {inp.workers} workers), kept under 85 % of the limit; "
        f"PgBouncer's default is {PGBOUNCER_DEFAULT_MAX_CLIENT_CONN}, and a client over it is "
        "refused ('no more connections allowed (max_client_conn)')",
        f"PgBouncer default_pool_size <= {default_pool_size}: it is the pool that protects "
        f"PostgreSQL; {pools} pool{'s' if pools != 1 else ''} (database, user) x "
        "(default_pool_size + reserve_pool_size) must fit in "
        f"{usable} (max_connections {inp.max_connections} - reserved {inp.reserved}); "
        "max_db_connections / max_user_connections cap it too",
        f"the application pool can match coroutine concurrency (pool_size={pool_size} per "
        "worker); PgBouncer multiplexes those client connections onto few server connections",
        "asyncpg's statement cache must be off (statement_cache_size=0): its named statements "
        "would stay on PgBouncer's server connections and collide with other clients'; "
        "SQLAlchemy's prepared_statement_cache_size needs no change, and a unique "
        "prepared_statement_name_func would leave one statement per query behind",
        "pool_pre_ping is of little use here: PgBouncer presents a healthy client connection "
        "even when its server side was replaced",
        *_reserved_note(inp),
    ]
    return _advice(
        inp,
        "transaction",
        pool_size,
        limit=max_client_conn,
        formula=(
            f"app pool_size = expected concurrency per worker = {pool_size}; "
            f"PgBouncer max_client_conn >= ceil({peak} / 0.85) = {max_client_conn}; "
            f"default_pool_size <= floor({usable} / {pools}) = {default_pool_size}"
        ),
        snippet=pgbouncer_snippet(pool_size, inp.max_overflow, inp.pool_timeout),
        notes=notes,
        pgbouncer_default_pool_size=default_pool_size,
        pgbouncer_max_client_conn=max_client_conn,
    )


_IMPORTS = "import os\n\nfrom sqlalchemy.ext.asyncio import create_async_engine\n\n"


def engine_snippet(pool_size: int, max_overflow: int, pool_timeout: float, recycle: int) -> str:
    """A ready ``create_async_engine(...)`` call for a direct PostgreSQL connection."""
    return _IMPORTS + (
        "engine = create_async_engine(\n"
        '    os.environ["DATABASE_URL"],  # postgresql+asyncpg://...\n'
        f"    pool_size={pool_size},\n"
        f"    max_overflow={max_overflow},\n"
        f"    pool_timeout={pool_timeout:g},  # fail fast instead of piling up waiters\n"
        f"    pool_recycle={recycle},  # below the idle timeout of proxies / load balancers\n"
        "    pool_pre_ping=True,  # catches connections the server or a proxy dropped\n"
        ")"
    )


def pgbouncer_snippet(pool_size: int, max_overflow: int, pool_timeout: float) -> str:
    """A ready ``create_async_engine(...)`` call for asyncpg behind PgBouncer (transaction)."""
    return _IMPORTS + (
        "engine = create_async_engine(\n"
        '    os.environ["DATABASE_URL"],  # postgresql+asyncpg://app@pgbouncer:6432/db\n'
        f"    pool_size={pool_size},\n"
        f"    max_overflow={max_overflow},\n"
        f"    pool_timeout={pool_timeout:g},\n"
        "    # PgBouncer transaction mode: asyncpg sends unnamed statements only\n"
        '    connect_args={"statement_cache_size": 0},\n'
        ")"
    )


#: asyncpg behind PgBouncer in transaction mode: turn asyncpg's statement cache off; its
#: statements are then unnamed, so none outlives a transaction on PgBouncer's server side.
#: Required and enough; SQLAlchemy's prepared_statement_cache_size needs no change, and a
#: unique prepared_statement_name_func leaks named statements onto PgBouncer's server
#: connections (tests/instrumentation/test_pgbouncer_transaction_settings.py).
PGBOUNCER_CONNECT_ARGS: dict[str, int] = {"statement_cache_size": 0}
