"""The demo's PgBouncer act: the app's pool is large, PgBouncer's is small, the queue moves.

After the four phases, when Debian's ``pgbouncer`` is installed and the demo runs its embedded
PostgreSQL, :func:`run_pgbouncer_act` starts a real PgBouncer in transaction mode in front of
it (``pool_size`` 2, a userlist with generated passwords), a second copy of the demo app whose
pool (20 connections) goes through it, and a ``poolwatch-exporter`` watching PgBouncer's admin
console as a ``stats_users`` role. Clients then call a 0.3 s query: the app's pool has
connections to spare (nobody waits at checkout) while clients queue inside PgBouncer
(``cl_waiting`` > 0, ``maxwait`` growing), and the act names the alerts of
:mod:`poolwatch.thresholds` that would fire. It stops and removes everything it started.
Otherwise it prints one line saying why it skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolwatch import metric_names as m
from poolwatch import thresholds
from poolwatch.demo.display import Display
from poolwatch.demo.metrics import Samples, quantile

APP_POOL = "demo-pgbouncer"
APP_POOL_SIZE = 20
PGBOUNCER_POOL_SIZE = 2
CLIENTS = 12
QUERY_SECONDS = 0.3
DATABASE = "poolwatch_demo"
APP_USER = "poolwatch_demo_app"
STATS_USER = "poolwatch_demo_stats"
BINARY_ENV = "POOLWATCH_PGBOUNCER"


def act_length(duration: float) -> float:
    """Seconds of load in the act: a fifth of ``--duration``, within 10..15 s."""
    return max(10.0, min(15.0, duration * 0.2))


def find_pgbouncer() -> tuple[str | None, str]:
    """(path of the pgbouncer binary, or None with why not)."""
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


# --- the alerts the act can make fire -------------------------------------------------------


@dataclass
class Numbers:
    """What both /metrics endpoints of the act said at one moment."""

    app: Samples
    bouncer: Samples

    def pool(self, name: str) -> float:
        """A ``sqlalchemy_pool_*`` value of the act's pool."""
        return self.app.value(f"sqlalchemy_pool_{name}", pool=APP_POOL)

    def pgb(self, spec: m.MetricSpec) -> float:
        """A PgBouncer metric summed over the demo database's pools."""
        return self.bouncer.value(spec.name, database=DATABASE)

    def maxwait(self) -> float:
        """The longest wait of a client queued in the demo database's pools."""
        return self.bouncer.maximum(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT.name, database=DATABASE)


def _pool_size(n: Numbers) -> float:
    # SHOW DATABASES keys its rows by `name`, which Samples.value cannot take as a label.
    rows = n.bouncer.series.get(m.PGBOUNCER_DATABASES_POOL_SIZE.name, [])
    return sum(v for labels, v in rows if labels.get("name") == DATABASE)


Check = Callable[[Numbers, float], str | None]

# (attribute of poolwatch.thresholds, the alert's name, how the demo evaluates its expression)
ALERTS: tuple[tuple[str, str, Check], ...] = (
    (
        "PGBOUNCER_CLIENTS_WAITING",
        "PoolwatchPgBouncerClientsWaiting",
        lambda n, limit: (
            f"cl_waiting {n.pgb(m.PGBOUNCER_POOLS_CLIENT_WAITING):g} > {limit:g}"
            if n.pgb(m.PGBOUNCER_POOLS_CLIENT_WAITING) > limit
            else None
        ),
    ),
    (
        "PGBOUNCER_WAIT_SLOW",
        "PoolwatchPgBouncerWaitSlow",
        lambda n, limit: (
            f"maxwait {n.maxwait():.2f} s > {limit:g} s" if n.maxwait() > limit else None
        ),
    ),
    (
        "PGBOUNCER_SERVER_POOL_SATURATED",
        "PoolwatchPgBouncerServerPoolSaturated",
        lambda n, _limit: (
            f"sv_active {n.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE):g} >= pool_size {_pool_size(n):g}"
            if _pool_size(n) > 0 and n.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE) >= _pool_size(n)
            else None
        ),
    ),
)


@dataclass(frozen=True)
class ActAlert:
    """An alert of the act: its threshold when this version's table has it."""

    name: str
    threshold: thresholds.Threshold | None
    check: Check

    def why(self, n: Numbers) -> str | None:
        """Why it would fire now (None when it would not, or cannot be evaluated)."""
        if self.threshold is None:
            return None
        return self.check(n, self.threshold.value or 0.0)


def act_alerts() -> list[ActAlert]:
    """The act's alerts, with the thresholds :mod:`poolwatch.thresholds` has for them."""
    return [ActAlert(name, getattr(thresholds, attr, None), check) for attr, name, check in ALERTS]


# --- processes --------------------------------------------------------------------------------


@dataclass
class _Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class _Act:
    directory: Path
    procs: list[_Proc] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], **popen: Any) -> _Proc:
        log = self.directory / f"{name}.out"
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                **popen,
            )
        child = _Proc(name, proc, log)
        self.procs.append(child)
        return child

    def close(self) -> None:
        report = self.stopped
        for child in reversed(self.procs):
            proc = child.proc
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=8)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            report.append({"name": child.name, "pid": proc.pid, "stopped": proc.poll() is not None})
        self.procs.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


class _Skip(Exception):
    """The act cannot run; the message says why in one line."""


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()[:200]
    return "no output"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _private(directory: Path, name: str, text: str, owner: pwd.struct_passwd | None) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def _wait(child: _Proc, ready: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise _Skip(
                f"{child.name} exited with status {child.proc.returncode}: {_last_line(child.log)}"
            )
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    raise _Skip(f"{child.name} did not {what} within {timeout:g} s: {_last_line(child.log)}")


def _http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=2).status_code == 200


def _tcp_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def _server_socket(socket_dir: str) -> tuple[str, int]:
    ports = sorted(p.name.rsplit(".", 1)[-1] for p in Path(socket_dir).glob(".s.PGSQL.*"))
    numbers = [int(p) for p in ports if p.isdigit()]
    return socket_dir, numbers[0] if numbers else 5432


def _start(act: _Act, local: Any, binary: str) -> tuple[str, str, str]:
    """Start PgBouncer, the app through it and the exporter: (app URL, its /metrics, exporter)."""
    host, port = _server_socket(local.socket_dir)
    # PgBouncer refuses to run as root; the embedded server's socket sits in a directory only
    # its own OS user may enter, so PgBouncer runs as that user.
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
    bport = _free_port()
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
            f"logfile = {d / 'pgbouncer.log'}",
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
    _wait(bouncer, lambda: _tcp_ok(bport), f"listen on 127.0.0.1:{bport}", 15.0)

    url = f"postgresql+asyncpg://{APP_USER}:{app_password}@127.0.0.1:{bport}/{DATABASE}"
    url_file = _private(d, "app-url", url, None)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    app_port = listener.getsockname()[1]
    try:
        app = act.spawn(
            "app-pgbouncer",
            [
                sys.executable,
                "-c",
                "import sys; from poolwatch.demo.app import main; sys.exit(main())",
                "--url-file",
                str(url_file),
                "--fd",
                str(listener.fileno()),
                "--pool-name",
                APP_POOL,
                "--pool-size",
                str(APP_POOL_SIZE),
                "--through-pgbouncer",
            ],
            pass_fds=(listener.fileno(),),
        )
    finally:
        listener.close()
    app_url = f"http://127.0.0.1:{app_port}"
    _wait(app, lambda: _http_ok(app_url + "/healthz"), "answer /healthz", 30.0)

    admin = f"postgresql://{STATS_USER}:{stats_password}@127.0.0.1:{bport}/pgbouncer"
    dsn_file = _private(d, "exporter-pgbouncer-dsn", admin, None)
    eport = _free_port()
    exporter = act.spawn(
        "exporter-pgbouncer",
        [
            sys.executable,
            "-m",
            "poolwatch.exporter",
            "--pgbouncer.dsn-file",
            str(dsn_file),
            "--web.listen-address",
            f"127.0.0.1:{eport}",
        ],
    )
    exporter_url = f"http://127.0.0.1:{eport}/metrics"
    _wait(exporter, lambda: _http_ok(exporter_url), "serve /metrics", 20.0)
    return app_url, app_url + "/metrics", exporter_url


# --- the act ----------------------------------------------------------------------------------


@dataclass
class _Seen:
    app_waiting: float = 0.0
    app_checked_out: float = 0.0
    cl_waiting: float = 0.0
    maxwait: float = 0.0
    sv_active: float = 0.0
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    alerts: list[str] = field(default_factory=list)


async def _drive(
    app_url: str, app_metrics: str, exporter: str, length: float, display: Display
) -> dict[str, Any]:
    import httpx

    seen = _Seen()
    alerts = act_alerts()
    name = m.POOL_CHECKOUT_DURATION.name
    hold = m.POOL_HOLD_DURATION.name
    limits = httpx.Limits(max_connections=CLIENTS + 5)
    async with (
        httpx.AsyncClient(base_url=app_url, timeout=30.0, limits=limits) as client,
        httpx.AsyncClient(timeout=3.0) as scraper,
    ):

        async def scrape(url: str) -> Samples:
            with contextlib.suppress(Exception):
                response = await scraper.get(url)
                response.raise_for_status()
                return Samples.parse(response.text)
            return Samples()

        async def numbers() -> Numbers:
            app, bouncer = await asyncio.gather(scrape(app_metrics), scrape(exporter))
            return Numbers(app, bouncer)

        async def one_client(i: int) -> None:
            while True:
                try:
                    r = await client.get(f"/reports/summary?seconds={QUERY_SECONDS:g}")
                    r.raise_for_status()
                    seen.requests += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    seen.errors += 1
                    seen.last_error = f"{type(exc).__name__}: {str(exc)[:150]}"
                    await asyncio.sleep(0.2)

        first = await numbers()
        tasks = [asyncio.create_task(one_client(i)) for i in range(CLIENTS)]
        start = time.monotonic()
        last_line = -1e9
        now = first
        try:
            while (elapsed := time.monotonic() - start) < length:
                await asyncio.sleep(min(1.0, max(0.05, length - elapsed)))
                now = await numbers()
                seen.app_waiting = max(seen.app_waiting, now.pool("waiting"))
                seen.app_checked_out = max(seen.app_checked_out, now.pool("checked_out"))
                cl_waiting = now.pgb(m.PGBOUNCER_POOLS_CLIENT_WAITING)
                seen.cl_waiting = max(seen.cl_waiting, cl_waiting)
                seen.maxwait = max(seen.maxwait, now.maxwait())
                seen.sv_active = max(seen.sv_active, now.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE))
                for alert in alerts:
                    why = alert.why(now)
                    if why and alert.name not in seen.alerts:
                        seen.alerts.append(alert.name)
                        t = alert.threshold
                        assert t is not None
                        display.event(
                            f"{alert.name} ({t.severity}) would fire after for: {t.for_}: {why}",
                            "alert",
                        )
                if time.monotonic() - last_line >= 3.0:
                    last_line = time.monotonic()
                    p95 = quantile(
                        0.95,
                        now.app.buckets(name, pool=APP_POOL),
                        first.app.buckets(name, pool=APP_POOL),
                    )
                    held = quantile(
                        0.95,
                        now.app.buckets(hold, pool=APP_POOL),
                        first.app.buckets(hold, pool=APP_POOL),
                    )
                    display.event(
                        f"[{elapsed:4.0f}/{length:.0f}s] app pool {now.pool('checked_out'):g}/"
                        f"{now.pool('size') + now.pool('max_overflow'):g} waiting "
                        f"{now.pool('waiting'):g} checkout p95 {p95:.3f} s hold p95 {held:.2f} s"
                        f" | PgBouncer cl_waiting {cl_waiting:g} maxwait {now.maxwait():.2f} s "
                        f"sv_active {now.pgb(m.PGBOUNCER_POOLS_SERVER_ACTIVE):g}/"
                        f"{_pool_size(now):g}",
                        "pgbouncer",
                    )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    checkout_p95 = quantile(
        0.95, now.app.buckets(name, pool=APP_POOL), first.app.buckets(name, pool=APP_POOL)
    )
    missing = [a.name for a in alerts if a.threshold is None]
    return {
        "key": "pgbouncer",
        "seconds": round(length, 1),
        "requests": seen.requests,
        "errors": seen.errors,
        "last_error": seen.last_error,
        "max_app_checked_out": seen.app_checked_out,
        "max_app_waiting": seen.app_waiting,
        "app_checkout_p95_seconds": round(checkout_p95, 4),
        "max_pgbouncer_cl_waiting": seen.cl_waiting,
        "max_pgbouncer_maxwait_seconds": round(seen.maxwait, 3),
        "max_pgbouncer_sv_active": seen.sv_active,
        "alerts": seen.alerts,
        "alerts_not_in_thresholds": missing,
    }


@contextlib.contextmanager
def _act_directory() -> Iterator[_Act]:
    act = _Act(Path(tempfile.mkdtemp(prefix="poolwatch-demo-pgbouncer-")))
    act.directory.chmod(0o700)
    try:
        yield act
    finally:
        act.close()


def run_pgbouncer_act(local: Any, display: Display, duration: float) -> str:
    """Run the act in front of the embedded server ``local``; one summary line for the end.

    ``local`` is the demo's :class:`~poolwatch.embedded.LocalPostgres` (None with ``--dsn``:
    the act is skipped, as it is without ``pgbouncer`` or ``poolwatch-exporter``).
    """
    import importlib.util

    binary, why = find_pgbouncer()
    if local is None:
        why = "it runs in front of the embedded PostgreSQL only (not with --dsn)"
    elif binary is not None and importlib.util.find_spec("poolwatch.exporter.__main__") is None:
        why = "poolwatch-exporter is not installed here"
    if binary is None or why:
        text = f"skipped the PgBouncer act: {why}"
        display.event(text, "skip")
        return text
    length = act_length(duration)
    display.line("")
    display.event(
        f"PgBouncer act ({length:g} s): app pool '{APP_POOL}' of {APP_POOL_SIZE} connections "
        f"through PgBouncer ({binary}, transaction mode, pool_size {PGBOUNCER_POOL_SIZE}); "
        f"{CLIENTS} clients each run a {QUERY_SECONDS:g} s query",
        "pgbouncer",
    )
    with _act_directory() as act:
        try:
            app_url, app_metrics, exporter = _start(act, local, binary)
        except _Skip as exc:
            text = f"skipped the PgBouncer act: {exc}"
            display.event(text, "skip")
            return text
        display.event(
            f"app /metrics {app_metrics}; exporter --pgbouncer.dsn /metrics {exporter}",
            "pgbouncer",
        )
        result = asyncio.run(_drive(app_url, app_metrics, exporter, length, display))
    stopped = ", ".join(
        f"{p['name']} (pid {p['pid']}{'' if p['stopped'] else ', STILL RUNNING'})"
        for p in act.stopped
    )
    fired = ", ".join(result["alerts"]) or "none"
    text = (
        f"PgBouncer act: app pool max waiting {result['max_app_waiting']:g} (checkout p95 "
        f"{result['app_checkout_p95_seconds']:.3f} s) while PgBouncer had up to "
        f"{result['max_pgbouncer_cl_waiting']:g} clients waiting (maxwait "
        f"{result['max_pgbouncer_maxwait_seconds']:.2f} s, sv_active "
        f"{result['max_pgbouncer_sv_active']:g}/{PGBOUNCER_POOL_SIZE}); the wait moved into "
        f"PgBouncer's queue; alerts that would fire: {fired}"
    )
    if result["alerts_not_in_thresholds"]:
        text += "; not evaluated (not in this version's poolwatch.thresholds): " + ", ".join(
            result["alerts_not_in_thresholds"]
        )
    if result["errors"]:
        text += f"; {result['errors']} request errors, last: {result['last_error']}"
    display.event(text, "pgbouncer")
    gone = "LEFT BEHIND" if act.directory.exists() else "removed"
    display.event(
        f"PgBouncer act cleaned up: stopped {stopped}; {gone} {act.directory}", "pgbouncer"
    )
    return text
