"""The demo's child processes: start each in its own session with a log file, wait until it
answers, stop it (SIGTERM to its process group, SIGKILL after a grace period), and release
everything the demo created in reverse order.

:func:`start_exporter` runs ``poolwatch-exporter`` the way the demo (and tests) need it::

    exporter = start_exporter(workdir, "postgresql://monitor@db/postgres")
    try:
        httpx.get(exporter.metrics_url)
    finally:
        exporter.child.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolwatch.pids import pid_exists


class DemoError(RuntimeError):
    """The demo could not run; the message is one readable line."""


@dataclass
class Child:
    """A child process started by :func:`spawn`; its output goes to ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> bool:
        """SIGTERM its process group, SIGKILL after 8 s; whether it is gone."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        return proc.poll() is not None

    def last_line(self) -> str:
        """The last non-empty line of its log (why it failed, usually)."""
        with contextlib.suppress(OSError):
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
            if lines:
                return lines[-1].strip()
        return "no output"


def spawn(workdir: Path, name: str, argv: list[str], **popen: Any) -> Child:
    """Start ``argv`` in a new session (a terminal's Ctrl-C reaches only the demo), output
    to ``workdir/<name>.log``."""
    log = workdir / f"{name}.log"
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
    return Child(name, proc, log)


def wait_http(child: Child, url: str, timeout: float) -> str | None:
    """None once ``url`` answers 200, else why not (the child exited, or no answer in time)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            return f"exited with status {child.proc.returncode}: {child.last_line()}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        time.sleep(0.2)
    return f"did not answer {url} within {timeout:g} s: {child.last_line()}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def private_file(workdir: Path, name: str, text: str) -> Path:
    """``text`` in a file only this user can read (a DSN with a password, say)."""
    path = workdir / name
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def start_app(
    spawn_child: Callable[..., Child], name: str, url_file: Path, *options: str
) -> tuple[Child, str]:
    """Start the demo app (:mod:`poolwatch.demo.app`, database URL read from ``url_file``)
    with ``spawn_child(name, argv, **popen)``; returns the child and its base URL.

    The app inherits a socket already listening on a free loopback port, so the port cannot
    be taken in between and a request never finds nothing listening. It is not waited for.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    main = "import sys; from poolwatch.demo.app import main; sys.exit(main())"
    argv = [sys.executable, "-c", main, "--url-file", str(url_file), "--fd", str(listener.fileno())]
    argv += options
    try:
        child = spawn_child(name, argv, pass_fds=(listener.fileno(),))
    finally:
        listener.close()
    return child, f"http://127.0.0.1:{port}"


@dataclass
class Exporter:
    """A running ``poolwatch-exporter``."""

    child: Child
    metrics_url: str


def start_exporter(
    workdir: Path,
    dsn: str,
    *flags: str,
    timeout: float = 20.0,
    name: str = "exporter",
    dsn_flag: str = "--dsn-file",
) -> Exporter:
    """Run ``poolwatch-exporter`` for ``dsn`` (passed in a 0600 file, never on the command
    line, with ``dsn_flag``: ``--pgbouncer.dsn-file`` for PgBouncer's admin console) on a
    free loopback port, and wait until ``/metrics`` answers.

    Raises :class:`DemoError` (the process stopped again) when it does not come up.
    """
    dsn_file = private_file(workdir, f"{name}-dsn", dsn)
    port = free_port()
    argv = [sys.executable, "-m", "poolwatch.exporter", dsn_flag, str(dsn_file)]
    argv += ["--web.listen-address", f"127.0.0.1:{port}", *flags]
    child = spawn(workdir, name, argv)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        why = wait_http(child, url, timeout)
    except BaseException:  # Ctrl-C while waiting: the caller never got the child to stop
        child.stop()
        raise
    if why:
        child.stop()
        raise DemoError(f"poolwatch-exporter {why}")
    return Exporter(child, url)


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone or ``timeout`` passes; whether it is gone."""
    deadline = time.monotonic() + timeout
    while pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not pid_exists(pid)


@dataclass
class Resources:
    """Everything the demo started or created, released by :meth:`close` in reverse."""

    workdir: Path
    children: list[Child] = field(default_factory=list)
    local: Any = None  # poolwatch.embedded.LocalPostgres
    postmaster_pid: int | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], **popen: Any) -> Child:
        """:func:`spawn` in the work directory; stopped by :meth:`close`."""
        child = spawn(self.workdir, name, argv, **popen)
        self.children.append(child)
        return child

    def close(self) -> dict[str, Any]:
        """Stop every process, run the clean-ups, delete every directory; report it."""
        processes: list[dict[str, Any]] = []
        for child in reversed(self.children):
            processes.append({"name": child.name, "pid": child.proc.pid, "stopped": child.stop()})
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        removed: list[str] = []
        if self.local is not None:
            directory = str(self.local.pgdata.parent)
            self.local.stop()
            removed.append(directory)
            if self.postmaster_pid is not None:
                gone = wait_gone(self.postmaster_pid, 15.0)
                processes.append({"name": "postgres", "pid": self.postmaster_pid, "stopped": gone})
        shutil.rmtree(self.workdir, ignore_errors=True)
        removed.append(str(self.workdir))
        left = [p for p in removed if os.path.exists(p)]
        return {"processes": processes, "removed": removed, "left_behind": left}
