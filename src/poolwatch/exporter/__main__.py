"""``poolwatch-exporter`` entry point: flags -> checks -> serve.

Expected problems (bad flag, bad DSN, unreadable web config, unreachable server, wrong
password, missing permission) end with one line on stderr and a non-zero exit, never a
traceback: 2 for configuration errors, 1 when the server cannot be used at start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from .. import __version__
from ..redaction import longest_first
from .auth_modules import load_probe_config
from .database import DatabaseUnavailable
from .dsn import DsnError, environment_password, load_dsns, scrub
from .logs import setup_logging
from .server import build_server, healthcheck
from .settings import ConfigError, Settings, parse_settings
from .web import ExporterApp
from .webconfig import load_web_config

log = logging.getLogger("poolwatch.exporter")


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"poolwatch-exporter: error: {message}\n")
    sys.stderr.flush()
    return code


async def _startup_check(app: ExporterApp) -> str | None:
    """Why a target cannot be used right now (one line), or None when all can."""
    if app.scraper is not None and app.dsn is not None:
        try:
            await app.scraper.target.source.check()
        except DatabaseUnavailable as exc:
            hint = " (wrong password or pg_hba.conf?)" if "password" in str(exc).lower() else ""
            return f"cannot use PostgreSQL at {app.dsn.redacted}: {exc}{hint}"
    if app.pgbouncer is not None:
        try:
            await app.pgbouncer.target.source.check()
        except DatabaseUnavailable as exc:  # the console's message names PgBouncer already
            return str(exc)
    return None


async def _run(app: ExporterApp, settings: Settings, stopped_by: list[int]) -> int:
    if settings.startup_check:
        failed = await _startup_check(app)
        if failed:
            await app.close()
            return _fail(failed, 1)
    problem = _cannot_listen(settings.listen_host, settings.listen_port)
    if problem:
        await app.close()
        return _fail(
            f"cannot listen on {settings.listen_host or '*'}:{settings.listen_port}: {problem} "
            "(pick another --web.listen-address)",
            1,
        )
    server = build_server(app)
    log.info(
        "poolwatch-exporter listening",
        extra={
            "fields": {
                "version": __version__,
                "address": f"{settings.listen_host}:{settings.listen_port}",
                "telemetry_path": settings.telemetry_path,
                "tls": app.web_config.tls is not None,
                "basic_auth": app.web_config.auth_required,
                "target": app.targets_redacted,
                "probe": app.prober is not None,
                "max_connections": server.limits.max_connections,
            }
        },
    )
    try:
        await server.serve()
    finally:
        await app.close()
    if server.captured_signal is not None:
        stopped_by.append(server.captured_signal)
    return 0 if server.started else 1


def _cannot_listen(host: str, port: int) -> str | None:
    """Why binding ``host:port`` fails (address in use, unknown host...), or None."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return exc.strerror or str(exc)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter until SIGINT/SIGTERM; returns the process exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = parse_settings(args)
        web_config = load_web_config(settings.web_config_file)
        if settings.healthcheck:
            return healthcheck(settings, tls=web_config.tls is not None)
        probe = load_probe_config(settings.config_file)
        given = (
            settings.dsn,
            settings.dsn_file,
            settings.pgbouncer_dsn,
            settings.pgbouncer_dsn_file,
        )
        dsn, bouncer = None, None
        if probe is None or any(given):  # with --config.file alone: probe-only
            dsn, bouncer = load_dsns(
                (settings.dsn, settings.dsn_file),
                (settings.pgbouncer_dsn, settings.pgbouncer_dsn_file),
            )
    except (ConfigError, DsnError) as exc:
        return _fail(scrub(str(exc)), 2)
    secrets = [*(dsn.secrets if dsn else ()), *(bouncer.secrets if bouncer else ())]
    password = environment_password()
    if password:  # libpq-style clients read PGPASSWORD when the URL has none: mask it too
        secrets.append(password)
    if probe is not None:
        secrets += [m.password for m in probe.auth_modules.values() if m.password]
    masked = longest_first(tuple(secrets))
    dsn = replace(dsn, secrets=masked) if dsn else None
    bouncer = replace(bouncer, secrets=masked) if bouncer else None
    setup_logging(settings.log_level, settings.log_format, masked)
    app = ExporterApp(settings, dsn, web_config, bouncer, probe)
    stopped_by: list[int] = []
    try:
        code = _event_loop_runner()(_run(app, settings, stopped_by))
    except KeyboardInterrupt:
        return 0
    if stopped_by:  # die of the signal after a clean stop (SIGTERM: status 143, as before)
        signal.signal(stopped_by[0], signal.SIG_DFL)
        signal.raise_signal(stopped_by[0])
    return code


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's ``run`` where installed (a faster loop: about half the per-request
    overhead), else :func:`asyncio.run`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    runner: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    return runner


if __name__ == "__main__":
    sys.exit(main())
