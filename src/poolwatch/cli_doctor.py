"""``poolwatch doctor``: its parser, the command, and the report it prints."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO
from urllib.parse import unquote

from poolwatch import doctor as doc
from poolwatch import doctor_facts as facts_mod
from poolwatch import doctor_pgbouncer as doc_pgb
from poolwatch import sizing
from poolwatch.cli_common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    CliError,
    Style,
    add_command,
    add_json_flag,
    add_workers_flag,
    recycle_seconds,
    run_doctor,
    seconds,
    seconds_or_zero,
    wrap_doctor_error,
)
from poolwatch.redaction import redact_known_dsn

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


def add_doctor(sub: Any) -> None:
    """Register the ``doctor`` sub-command on argparse's sub-parsers ``sub``."""
    p = add_command(
        sub,
        "doctor",
        cmd_doctor,
        summary="check pool settings and the server for the usual pool-exhaustion mistakes",
        description="Check an application's pool settings against a real PostgreSQL server "
        "and explain every problem with its fix.",
        epilog=DOCTOR_EPILOG,
    )
    p.add_argument("--dsn", help="the server the application uses (postgresql://...)")
    p.add_argument(
        "--engine", metavar="MODULE:ATTR", help="import the app's engine and read its settings"
    )
    p.add_argument("--pool-size", type=int)
    p.add_argument("--max-overflow", type=int)
    p.add_argument("--pool-timeout", type=seconds, help="seconds")
    p.add_argument("--pool-recycle", type=recycle_seconds, help="seconds (-1 = off, the default)")
    p.add_argument("--pool-pre-ping", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--prepared-statements",
        choices=("on", "off"),
        help="asyncpg prepared statements (default on; matters behind PgBouncer)",
    )
    add_workers_flag(p)
    p.add_argument(
        "--proxy-idle-timeout",
        type=seconds,
        help="idle timeout of a proxy / load balancer, seconds",
    )
    p.add_argument("--sla", type=seconds, help="response-time target of the app, seconds")
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
        type=seconds_or_zero,
        default=doc.IDLE_IN_TRANSACTION_THRESHOLD,
        help="report sessions idle in transaction at least this long (default 5 s)",
    )
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    add_json_flag(p)


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
        bouncer = run_doctor(doc_pgb.read_pgbouncer_facts(args.pgbouncer_admin_dsn))
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
        engine = wrap_doctor_error(lambda: facts_mod.load_engine(args.engine))
        settings = facts_mod.settings_from_engine(engine, args.workers, args.engine)
        facts, cparams = run_doctor(facts_mod.inspect_engine(engine, args.dsn))
        if args.dsn:
            target = redact_known_dsn(args.dsn)
        else:
            target = unquote(str(engine.url.render_as_string(hide_password=True)))
        if settings.driver == "asyncpg":
            cache_on, unique_names = facts_mod.statement_settings(cparams)
            settings.prepared_statements = cache_on
            settings.unique_statement_names = unique_names
    else:
        settings = facts_mod.PoolSettings(workers=args.workers, **given)
        if settings.pool_recycle is not None and settings.pool_recycle < 0:
            settings.pool_recycle = None
        facts = run_doctor(facts_mod.read_server_facts(args.dsn))
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
    s: facts_mod.PoolSettings,
    f: facts_mod.ServerFacts,
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
