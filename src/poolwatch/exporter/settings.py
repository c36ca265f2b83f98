"""Command-line flags (Prometheus exporter names) with ``POOLWATCH_EXPORTER_*`` env fallbacks.

Each flag ``--a.b-c`` falls back to the environment variable ``POOLWATCH_EXPORTER_A_B_C``;
a flag on the command line wins. Durations accept Go-style units (``500ms``, ``5s``, ``1m``)
or plain seconds.

Example::

    >>> s = parse_settings(["--dsn", "postgresql://monitor@db/postgres"], environ={})
    >>> (s.listen_host, s.listen_port, s.telemetry_path)
    ('0.0.0.0', 19187, '/metrics')
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .. import __version__
from ..cli_parser import OneLineErrorParser
from . import DEFAULT_PORT
from .logs import FORMATS, LEVELS

ENV_PREFIX = "POOLWATCH_EXPORTER_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """A flag, environment variable or config file is wrong; the message is one line."""


@dataclass(frozen=True)
class Settings:
    """Everything the exporter was told, validated."""

    dsn: str | None
    dsn_file: str | None
    listen_host: str
    listen_port: int
    telemetry_path: str
    web_config_file: str | None
    log_level: str
    log_format: str
    top_n: int
    stale_threshold: float
    min_interval: float
    query_timeout: float
    startup_check: bool
    healthcheck: bool
    max_connections: int = 256
    read_header_timeout: float = 10.0
    idle_timeout: float = 120.0
    pgbouncer_dsn: str | None = None
    pgbouncer_dsn_file: str | None = None
    config_file: str | None = None

    @property
    def lock_timeout(self) -> float:
        """Server-side lock_timeout: never wait long behind someone else's lock."""
        return min(1.0, self.query_timeout)


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``"500ms"``, ``"5s"``, ``"1m"``) or a plain number."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 5s, 1m)")
    return float(match[1]) * _UNIT[match[2]]


def parse_listen_address(text: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (all interfaces) or ``[ipv6]:port`` -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--web.listen-address must look like :{DEFAULT_PORT} or host:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_name(flag: str) -> str:
    return ENV_PREFIX + re.sub(r"[.\-]", "_", flag.lstrip("-")).upper()


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser; defaults come from ``environ`` where set."""
    parser = OneLineErrorParser(
        prog="poolwatch-exporter",
        description=(
            "Prometheus exporter for PostgreSQL connection-slot pressure: sessions by "
            "database/role/application/state, lock waits, blocking, idle-in-transaction "
            "ages, transaction and query ages. One read-only connection, one query per scrape. "
            "With --pgbouncer.dsn also (or only) PgBouncer's pools, over one admin-console "
            "connection."
        ),
        epilog=(
            "Every flag --a.b-c also reads the environment variable POOLWATCH_EXPORTER_A_B_C "
            "(e.g. POOLWATCH_EXPORTER_DSN, POOLWATCH_EXPORTER_WEB_LISTEN_ADDRESS); the command "
            "line wins. Give the password in --dsn-file or PGPASSWORD rather than on the command "
            "line. Exit status: 1 when the server cannot be used at start, "
            "2 on a configuration error. Guide: docs/exporter.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        # unlike poolwatch's sub-commands, an unambiguous prefix of a flag is accepted (and an
        # ambiguous one named: "--ds could match --dsn, --dsn-file"), as it always was here
        allow_abbrev=True,
    )

    def add(flag: str, default: str | None, help_text: str, **kw: object) -> None:
        env = _env_name(flag)
        parser.add_argument(
            flag,
            default=environ.get(env, default),
            help=f"{help_text} [env {env}]",
            **kw,  # type: ignore[arg-type]
        )

    add("--dsn", None, "PostgreSQL URL, e.g. postgresql://monitor@db:5432/postgres", metavar="URL")
    add("--dsn-file", None, "read the PostgreSQL URL from this file (keeps it out of ps)")
    add(
        "--pgbouncer.dsn",
        None,
        "PgBouncer admin console URL (a stats_users role), e.g. "
        "postgresql://stats@pgbouncer:6432/pgbouncer; with it, --dsn is optional",
        metavar="URL",
    )
    add("--pgbouncer.dsn-file", None, "read the PgBouncer URL from this file", metavar="FILE")
    add("--web.listen-address", f":{DEFAULT_PORT}", "address to serve HTTP on", metavar="ADDR")
    add("--web.telemetry-path", "/metrics", "path that serves the metrics", metavar="PATH")
    add(
        "--web.config.file",
        None,
        "exporter-toolkit style YAML with tls_server_config and basic_auth_users (bcrypt)",
        metavar="FILE",
    )
    add(
        "--web.max-connections",
        "256",
        "most HTTP connections open at once; at the cap the longest-idle one is closed for a "
        "new one",
        metavar="N",
    )
    add(
        "--web.read-header-timeout",
        "10s",
        "a request header (and TLS handshake) must arrive within this of the connection",
        metavar="DURATION",
    )
    add(
        "--web.idle-timeout",
        "2m",
        "close a kept-alive HTTP connection idle this long",
        metavar="DURATION",
    )
    add(
        "--config.file",
        None,
        "YAML with auth_modules and the probe section: enables /probe?target=...&module=... "
        "(then --dsn is optional); see docs/fleet.md",
        metavar="FILE",
    )
    add("--log.level", "info", "minimum log level", choices=sorted(LEVELS))
    add("--log.format", "logfmt", "log line format", choices=FORMATS)
    add(
        "--labels.top-n",
        "10",
        "keep the N most frequent values of each of datname, usename and application_name; "
        "fold the rest into 'other'",
        metavar="N",
    )
    add(
        "--idle-in-transaction.stale-threshold",
        "5s",
        "idle in transaction longer than this counts as stale",
        metavar="DURATION",
    )
    add(
        "--scrape.min-interval",
        "1s",
        "scrapes closer together than this are answered from the last snapshot",
        metavar="DURATION",
    )
    add(
        "--query.timeout",
        "3s",
        "connect timeout and server-side statement_timeout of the exporter's query "
        "(lock_timeout is the smaller of this and 1s)",
        metavar="DURATION",
    )
    check_env = _env_name("--startup.connect-check")
    env_check = (environ.get(check_env) or "true").strip().lower()
    if env_check not in _TRUE + _FALSE:
        parser.error(f"{check_env} must be true or false (got {env_check!r})")
    parser.add_argument(
        "--startup.connect-check",
        action=argparse.BooleanOptionalAction,
        default=env_check in _TRUE,
        help="connect once at start and exit 1 if the server cannot be used (unreachable, "
        "authentication, permission); with --no-startup.connect-check the exporter starts "
        "anyway and reports pg_up 0 until the server answers "
        f"[env {_env_name('--startup.connect-check')}]",
    )
    parser.add_argument(
        "--healthcheck",
        action="store_true",
        help="ask a running exporter's /healthz (same --web.* settings) and exit 0 if healthy; "
        "for container HEALTHCHECK",
    )
    parser.add_argument("--version", action="version", version=f"poolwatch-exporter {__version__}")
    return parser


def _whole_number(value: object, flag: str, *, minimum: int) -> int:
    try:
        number: int | None = int(str(value))
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"{flag} must be a whole number >= {minimum}")
    return number


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Parse ``argv`` (without the program name); raise :class:`ConfigError` on bad values."""
    env = os.environ if environ is None else environ
    ns = vars(build_parser(env).parse_args(list(argv)))
    try:
        host, port = parse_listen_address(str(ns["web.listen_address"]))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    path = str(ns["web.telemetry_path"])
    if not path.startswith("/") or path in ("/", "/healthz"):
        raise ConfigError("--web.telemetry-path must start with / and not be / or /healthz")
    top_n = _whole_number(ns["labels.top_n"], "--labels.top-n", minimum=1)
    max_conns = _whole_number(ns["web.max_connections"], "--web.max-connections", minimum=2)
    durations: dict[str, float] = {}
    for key, flag in (
        ("web.read_header_timeout", "--web.read-header-timeout"),
        ("web.idle_timeout", "--web.idle-timeout"),
        ("idle_in_transaction.stale_threshold", "--idle-in-transaction.stale-threshold"),
        ("scrape.min_interval", "--scrape.min-interval"),
        ("query.timeout", "--query.timeout"),
    ):
        try:
            durations[flag] = parse_duration(str(ns[key]))
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    for flag in ("--web.read-header-timeout", "--web.idle-timeout"):
        if durations[flag] < 0.01:
            raise ConfigError(f"{flag} must be at least 10ms")
    if durations["--query.timeout"] < 0.01:
        raise ConfigError("--query.timeout must be at least 10ms")
    if ns["log.level"] not in LEVELS:
        raise ConfigError(f"--log.level must be one of {', '.join(sorted(LEVELS))}")
    if ns["log.format"] not in FORMATS:
        raise ConfigError(f"--log.format must be one of {', '.join(FORMATS)}")
    return Settings(
        dsn=ns["dsn"] or None,
        dsn_file=ns["dsn_file"] or None,
        listen_host=host,
        listen_port=port,
        telemetry_path=path,
        web_config_file=ns["web.config.file"] or None,
        log_level=str(ns["log.level"]),
        log_format=str(ns["log.format"]),
        top_n=top_n,
        stale_threshold=durations["--idle-in-transaction.stale-threshold"],
        min_interval=durations["--scrape.min-interval"],
        query_timeout=durations["--query.timeout"],
        startup_check=bool(ns["startup.connect_check"]),
        healthcheck=bool(ns["healthcheck"]),
        max_connections=max_conns,
        read_header_timeout=durations["--web.read-header-timeout"],
        idle_timeout=durations["--web.idle-timeout"],
        pgbouncer_dsn=ns["pgbouncer.dsn"] or None,
        pgbouncer_dsn_file=ns["pgbouncer.dsn_file"] or None,
        config_file=ns["config.file"] or None,
    )
