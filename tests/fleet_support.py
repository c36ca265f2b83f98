"""Helpers for the /probe tests: a throw-away Debian PostgreSQL cluster on a loopback TCP
port (password auth over TCP), and a listening socket that records every connect.

``debian_postgres()`` does what scripts/with-debian-postgres.sh does, plus
``listen_addresses=127.0.0.1`` on a free port and ``scram-sha-256`` for TCP clients, so a
``/probe`` address target (``127.0.0.1:PORT/db``) and a wrong password can be tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support import free_port, skip_or_fail

SUPERUSER_PASSWORD = "pw-fleet-s3cret"


@dataclass
class DebianPostgres:
    """A running throw-away cluster: TCP on 127.0.0.1:``port``, socket in ``socket_dir``."""

    version: str
    port: int
    socket_dir: str
    max_connections: int

    @property
    def socket_dsn(self) -> str:
        """Superuser over the Unix socket (trust)."""
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def tcp_dsn(self, database: str = "postgres") -> str:
        """Superuser over TCP (scram-sha-256)."""
        return f"postgresql://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{self.port}/{database}"


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent)
    return found[-1].parent if found else None


@contextlib.contextmanager
def debian_postgres(max_connections: int = 37) -> Iterator[DebianPostgres]:
    """Start Debian's newest installed PostgreSQL (15 here) for the duration of the block."""
    bindir = _bin_dir()
    if bindir is None:
        skip_or_fail("Debian's postgresql is not installed (run scripts/install.sh)")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix="pw-fleet-pg-"))
    root.chmod(0o755)
    runas: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        runas = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    pwfile = root / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if runas:
        shutil.chown(pwfile, "postgres")

    def run(*argv: str) -> None:
        subprocess.run([*runas, *argv], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
            f"-c max_connections={max_connections}"
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "log"),
            "-o",
            options,
            "start",
        )
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[2]  # "postgres (PostgreSQL) 15.18 (Debian 15.18-...)"
        yield DebianPostgres(version, port, str(root), max_connections)
    finally:
        with contextlib.suppress(Exception):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class ConnectRecorder:
    """A loopback listener counting connects: ``mode`` ``"close"`` hangs up at once (a dead
    server), ``"silent"`` accepts and never answers (a server that hangs)."""

    mode: str = "close"
    accepts: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> ConnectRecorder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        if self.mode == "close":
            writer.close()
        else:
            self._writers.append(writer)

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
