"""The processes of the demo's PgBouncer act: PgBouncer, the app through it, an exporter.

:func:`start_stack` starts Debian's ``pgbouncer`` in transaction mode in front of the embedded
PostgreSQL (``pool_size`` 2, a userlist with passwords generated for this run, as the server's
OS user when run as root: PgBouncer refuses root, and the server's socket directory admits only
its owner), a second copy of the demo app whose pool goes through it, and a
``poolwatch-exporter`` reading PgBouncer's admin console as a ``stats_users`` role.
:class:`ActProcesses` stops them and deletes the act's directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolwatch.demo.processes import (
    Child,
    DemoError,
    free_port,
    private_file,
    spawn,
    start_app,
    start_exporter,
    wait_http,
)

APP_POOL = "demo-pgbouncer"
APP_POOL_SIZE = 20
PGBOUNCER_POOL_SIZE = 2
DATABASE = "poolwatch_demo"
APP_USER = "poolwatch_demo_app"
STATS_USER = "poolwatch_demo_stats"
BINARY_ENV = "POOLWATCH_PGBOUNCER"


def find_pgbouncer() -> tuple[str | None, str]:
    """(path of the pgbouncer binary, or None with why not).

    ``$POOLWATCH_PGBOUNCER`` when set, else ``pgbouncer`` on PATH or in /usr/sbin (Debian's).
    """
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return chosen, ""
        return None, f"{BINARY_ENV}={chosen} is not an executable file"
    path = os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin:/usr/local/sbin"
    found = shutil.which("pgbouncer", path=path)
    if found:
        return found, ""
    return None, "pgbouncer is not installed (apt-get install pgbouncer)"


# --- processes --------------------------------------------------------------------------------


@dataclass
class ActProcesses:
    """The act's children and directory (0700, the act's own)."""

    directory: Path
    children: list[Child] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], **popen: Any) -> Child:
        """:func:`~poolwatch.demo.processes.spawn` in the act's directory."""
        child = spawn(self.directory, name, argv, **popen)
        self.children.append(child)
        return child

    def close(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL), then delete the directory."""
        for child in reversed(self.children):
            stopped = child.stop()
            self.stopped.append({"name": child.name, "pid": child.proc.pid, "stopped": stopped})
        self.children.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


class ActSkipped(Exception):
    """The act cannot run; the message says why in one line."""


def _private(directory: Path, name: str, text: str, owner: pwd.struct_passwd | None) -> Path:
    path = private_file(directory, name, text)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def _wait_listening(child: Child, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise ActSkipped(
                f"{child.name} exited with status {child.proc.returncode}: {child.last_line()}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise ActSkipped(
        f"{child.name} did not listen on 127.0.0.1:{port} in {timeout:g} s: {child.last_line()}"
    )


def _wait_http(child: Child, url: str, timeout: float) -> None:
    why = wait_http(child, url, timeout)
    if why:
        raise ActSkipped(f"{child.name} {why}")


def _server_socket(socket_dir: str) -> tuple[str, int]:
    ports = sorted(p.name.rsplit(".", 1)[-1] for p in Path(socket_dir).glob(".s.PGSQL.*"))
    numbers = [int(p) for p in ports if p.isdigit()]
    return socket_dir, numbers[0] if numbers else 5432


def start_stack(act: ActProcesses, local: Any, binary: str) -> tuple[str, str, str]:
    """Start PgBouncer, the app through it and the exporter: (app URL, its /metrics, exporter)."""
    host, port = _server_socket(local.socket_dir)
    # PgBouncer refuses to run as root; the embedded server's socket sits in a directory only
    # its own OS user may enter, so PgBouncer runs as that user. It logs to stderr, which
    # spawn() sends to pgbouncer.log.
    owner = None
    if os.geteuid() == 0:
        owner = pwd.getpwuid(os.stat(host).st_uid)
        if owner.pw_uid == 0:
            owner = pwd.getpwnam("nobody")
        os.chown(act.directory, owner.pw_uid, owner.pw_gid)
    app_password, stats_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    d = act.directory
    users = f'"{APP_USER}" "{app_password}"\n"{STATS_USER}" "{stats_password}"\n'
    _private(d, "userlist.txt", users, owner)
    bport = free_port()
    ini = "\n".join(
        [
            "[databases]",
            f"{DATABASE} = host={host} port={port} dbname={DATABASE} "
            f"pool_size={PGBOUNCER_POOL_SIZE}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {bport}",
            f"unix_socket_dir = {d}",
            "auth_type = md5",
            f"auth_file = {d / 'userlist.txt'}",
            f"pidfile = {d / 'pgbouncer.pid'}",
            f"stats_users = {STATS_USER}",
            "pool_mode = transaction",
            f"default_pool_size = {PGBOUNCER_POOL_SIZE}",
            "reserve_pool_size = 0",
            "max_client_conn = 100",
            "ignore_startup_parameters = extra_float_digits,options",
            "log_connections = 0",
            "log_disconnections = 0",
        ]
    )
    config = _private(d, "pgbouncer.ini", ini + "\n", owner)
    user: dict[str, Any] = {}
    if owner is not None:
        user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    bouncer = act.spawn("pgbouncer", [binary, str(config)], **user)
    _wait_listening(bouncer, bport, 15.0)

    url = f"postgresql+asyncpg://{APP_USER}:{app_password}@127.0.0.1:{bport}/{DATABASE}"
    url_file = _private(d, "app-url", url, None)
    app, app_url = start_app(
        act.spawn,
        "app-pgbouncer",
        url_file,
        "--pool-name",
        APP_POOL,
        "--pool-size",
        str(APP_POOL_SIZE),
        "--through-pgbouncer",
    )
    _wait_http(app, app_url + "/healthz", 30.0)

    admin = f"postgresql://{STATS_USER}:{stats_password}@127.0.0.1:{bport}/pgbouncer"
    try:
        exporter = start_exporter(
            d, admin, name="exporter-pgbouncer", dsn_flag="--pgbouncer.dsn-file"
        )
    except DemoError as exc:
        raise ActSkipped(str(exc)) from None
    act.children.append(exporter.child)
    exporter_url = exporter.metrics_url
    return app_url, app_url + "/metrics", exporter_url


@contextlib.contextmanager
def act_directory() -> Iterator[ActProcesses]:
    """A new act directory; everything in it stopped and removed on exit."""
    act = ActProcesses(Path(tempfile.mkdtemp(prefix="poolwatch-demo-pgbouncer-")))
    act.directory.chmod(0o700)
    try:
        yield act
    finally:
        act.close()
