"""``poolwatch size``: its parser, the command, and the table it prints."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from poolwatch import doctor_facts as facts_mod
from poolwatch import sizing
from poolwatch.cli_common import (
    EXIT_OK,
    CliError,
    Style,
    add_command,
    add_json_flag,
    add_workers_flag,
    run_doctor,
    seconds,
)
from poolwatch.redaction import redact_known_dsn

# --- size ------------------------------------------------------------------------------------

SIZE_EPILOG = """\
examples:
  poolwatch size --max-connections 200 --reserved 10 --workers 4 --max-overflow 5
      -> pool_size=42: floor((200 - 10) / 4) - 5
  poolwatch size --max-connections 200 --reserved 10 --workers 8 --max-overflow 5
      -> pool_size=18
  poolwatch size --dsn postgresql://app@db:5432/shop --workers 4
      reads max_connections and the reserved slots from the server
  poolwatch size --max-connections 200 --workers 4 --pgbouncer transaction --concurrency 150
      advice for asyncpg behind PgBouncer in transaction mode
  poolwatch size --max-connections 100 --workers 2 --json
"""


def add_size(sub: Any) -> None:
    """Register the ``size`` sub-command on argparse's sub-parsers ``sub``."""
    p = add_command(
        sub,
        "size",
        cmd_size,
        summary="recommend pool_size for your workers and the server's max_connections",
        description=(
            "Recommend pool_size so that every worker can reach its burst limit without "
            "exhausting PostgreSQL:\n"
            "  pool_size = floor((max_connections - reserved) / workers) - max_overflow"
        ),
        epilog=SIZE_EPILOG,
    )
    p.add_argument("--max-connections", type=int, help="the server's max_connections")
    p.add_argument(
        "--reserved",
        type=int,
        help="slots kept back for superusers, admin sessions, migrations, monitoring "
        "(default 10; with --dsn: the server's reserved slots)",
    )
    add_workers_flag(p)
    p.add_argument(
        "--max-overflow", type=int, default=5, help="burst connections per worker (default 5)"
    )
    p.add_argument("--dsn", help="read max_connections and reserved slots from this server")
    p.add_argument(
        "--pgbouncer",
        choices=sizing.PGBOUNCER_MODES,
        default="none",
        help="PgBouncer pool mode between the app and PostgreSQL (default none)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="expected concurrent coroutines per worker (PgBouncer transaction mode; default 100)",
    )
    p.add_argument(
        "--pgbouncer-pools",
        type=int,
        default=1,
        help="(database, user) pairs PgBouncer pools for (transaction mode; default 1)",
    )
    p.add_argument(
        "--pool-timeout", type=seconds, default=10.0, help="for the snippet (default 10)"
    )
    p.add_argument(
        "--pool-recycle",
        type=int,
        default=1800,
        help="for the snippet (default 1800; -1 = off)",
    )
    add_json_flag(p)


def cmd_size(args: argparse.Namespace, out: TextIO) -> int:
    """``poolwatch size``."""
    max_connections = args.max_connections
    reserved = args.reserved
    source = "flags"
    server: dict[str, Any] | None = None
    if args.dsn:
        facts = run_doctor(facts_mod.read_server_facts(args.dsn))
        source = redact_known_dsn(args.dsn)
        server = {
            "max_connections": facts.max_connections,
            "superuser_reserved_connections": facts.superuser_reserved,
            "reserved_connections": facts.reserved_connections,
            "server_version": facts.server_version,
        }
        if max_connections is None:
            max_connections = facts.max_connections
        if reserved is None:
            reserved = facts.reserved
    if max_connections is None:
        raise CliError(
            "give --max-connections N (the server's max_connections), or --dsn URL to read it "
            "from the server"
        )
    if reserved is None:
        reserved = sizing.MIN_ADMIN_SLOTS
    try:
        advice = sizing.recommend(
            sizing.SizingInput(
                max_connections=max_connections,
                reserved=reserved,
                workers=args.workers,
                max_overflow=args.max_overflow,
                pool_timeout=args.pool_timeout,
                pool_recycle=args.pool_recycle,
                pgbouncer=args.pgbouncer,
                concurrency=args.concurrency,
                pgbouncer_pools=args.pgbouncer_pools,
            )
        )
    except sizing.SizingError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        data = advice.as_dict()
        data["source"] = source
        data["server"] = server
        out.write(json.dumps(data, indent=2) + "\n")
        return EXIT_OK
    _print_size(advice, source, server, out)
    return EXIT_OK


def _print_size(
    a: sizing.SizingAdvice, source: str, server: dict[str, Any] | None, out: TextIO
) -> None:
    st = Style(out)
    w = out.write
    origin = ""
    if server is not None:
        origin = (
            f"  (from {source}: PostgreSQL {server['server_version']}, superuser_reserved_"
            f"connections={server['superuser_reserved_connections']}, reserved_connections="
            f"{server['reserved_connections']})"
        )
    w(
        st.bold(
            f"max_connections {a.max_connections}, {a.reserved} reserved -> {a.usable} usable; "
            f"{a.workers} worker{'s' if a.workers != 1 else ''}, max_overflow {a.max_overflow}"
        )
        + origin
        + "\n\n"
    )
    if a.mode == "transaction":
        rows = [
            (
                "app pool_size per worker",
                str(a.pool_size),
                "expected concurrent coroutines per worker (--concurrency)",
            ),
            (
                "client connections at peak",
                str(a.peak_total),
                f"({a.pool_size} + {a.max_overflow}) x {a.workers}, to PgBouncer, not PostgreSQL",
            ),
            (
                "PgBouncer max_client_conn",
                f">= {a.pgbouncer_max_client_conn}",
                f"{a.peak_total} client connections kept under 85 % (PgBouncer's default: 100)",
            ),
            (
                "PgBouncer default_pool_size",
                f"<= {a.pgbouncer_default_pool_size}",
                f"per pool, so all pools' server connections fit in {a.usable} usable",
            ),
        ]
    else:
        rows = [
            ("recommended pool_size", str(a.pool_size), a.formula),
            ("per worker at peak", str(a.per_worker_peak), "pool_size + max_overflow"),
            ("peak total", str(a.peak_total), f"{a.per_worker_peak} x {a.workers}"),
            (
                "headroom",
                str(a.headroom),
                f"of {a.usable} usable connections (plus the {a.reserved} reserved)",
            ),
        ]
    for i, (label, value, why) in enumerate(rows):
        shown = f"{value:<7}"
        w(f"  {label:<29}{st.green(shown) if i == 0 else shown} {why}\n")
    w("\n" + a.snippet + "\n")
    for note in a.notes:
        w("\n" + st.yellow("note: ") + note)
    if a.notes:
        w("\n")
