"""Fixtures for the exporter tests: throw-away databases, real sessions, the exporter
in-process (fast) or as a real ``poolwatch-exporter`` subprocess (CLI, TLS)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from poolwatch.exporter.dsn import parse_dsn
from poolwatch.exporter.settings import parse_settings
from poolwatch.exporter.web import ExporterApp
from poolwatch.exporter.webconfig import WebConfig
from support import PgTarget, free_port, until, until_async

EXPORTER_BIN = str(Path(sys.executable).with_name("poolwatch-exporter"))


def with_database(dsn: str, database: str, user: str | None = None, password: str = "") -> str:
    """``dsn`` pointing at ``database`` (and optionally another user/password)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user is not None:
        host = netloc.rpartition("@")[2]
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        netloc = f"{auth}@{host}"
    return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))


def socket_url(dsn: str, database: str) -> str:
    """``dsn`` (a Unix-socket URL) for ``database`` without its credentials."""
    parts = urlsplit(with_database(dsn, database))
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, ""))


def socket_dir(dsn: str) -> str | None:
    """The unix socket directory of a ``?host=/dir`` DSN, if any."""
    return dict(parse_qsl(urlsplit(dsn).query)).get("host")


@dataclass(repr=False)
class Scrape:
    """One parsed /metrics body: samples keyed by name and label set."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    text: str

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return cls(samples, text)

    def get(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, or None."""
        return self.samples.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def series(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        want = set(labels.items())
        return {ls: v for (n, ls), v in self.samples.items() if n == name and want <= ls}

    def __repr__(self) -> str:  # what until() shows of the last scrape when it times out
        return f"scrape:\n{self.text}"


@dataclass
class InProcess:
    """An :class:`ExporterApp` driven directly (no sockets), for fast exact checks."""

    app: ExporterApp

    async def scrape(self) -> Scrape:
        body, _ = await self.app.render()
        return Scrape.parse(body.decode())

    async def until(
        self,
        check: Callable[[Scrape], bool],
        timeout: float = 30.0,
        pause: float = 0.1,
        what: str = "the scrape to satisfy the test's condition",
    ) -> Scrape:
        """Scrape until ``check`` holds (a deadline for waiting, not a timing assertion)."""
        return await until_async(
            self.scrape, holds=check, what=what, timeout=timeout, interval=pause
        )


@pytest.fixture
async def exporter_factory(pg: PgTarget) -> AsyncIterator[Callable[..., InProcess]]:
    """Build in-process exporters: ``factory("--labels.top-n", "3", dsn=...)``; with
    ``pgbouncer=URL`` it watches that PgBouncer too (alone with ``dsn=""``)."""
    made: list[ExporterApp] = []

    def factory(*flags: str, dsn: str | None = None, pgbouncer: str | None = None) -> InProcess:
        settings = parse_settings(["--scrape.min-interval", "0", *flags], environ={})
        target = None if dsn == "" else parse_dsn(dsn or pg.dsn)
        bouncer = parse_dsn(pgbouncer) if pgbouncer else None
        app = ExporterApp(settings, target, WebConfig(), bouncer)
        made.append(app)
        return InProcess(app)

    yield factory
    for app in made:
        await app.close()


@pytest.fixture
async def database(pg: PgTarget, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database for one test (exact counts need a datname nobody else uses)."""
    name = "pw_" + re.sub(r"\W", "", request.node.name)[:30].lower() + "_" + uuid.uuid4().hex[:6]
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield name
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await until_async(
            lambda: admin.execute(f'DROP DATABASE IF EXISTS "{name}"'),
            what=f"database {name} to be dropped once its sessions are gone",
            catch=(asyncpg.ObjectInUseError,),
            interval=0.1,
        )
    finally:
        await admin.close()


@dataclass
class Sessions:
    """Real client sessions opened by a test, all closed at the end."""

    dsn: str
    conns: list[asyncpg.Connection] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def open(self, n: int, app: str = "pw-test", **kw: Any) -> list[asyncpg.Connection]:
        new = [
            await asyncpg.connect(
                kw.get("dsn", self.dsn), server_settings={"application_name": app}
            )
            for _ in range(n)
        ]
        self.conns += new
        return new

    def background(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for conn in self.conns:
            conn.terminate()


@pytest.fixture
async def sessions(pg: PgTarget, database: str) -> AsyncIterator[Sessions]:
    """Open sessions in this test's fresh database."""
    s = Sessions(with_database(pg.dsn, database))
    yield s
    await s.close()


@dataclass
class Subprocess:
    """A running ``poolwatch-exporter`` process."""

    proc: subprocess.Popen[str]
    base_url: str

    def stop(self) -> str:
        """Stop it and return everything it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``poolwatch-exporter`` to completion (for errors, --help, --healthcheck)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("POOLWATCH_EXPORTER_")}
    full_env.update(env or {})
    return subprocess.run(
        [EXPORTER_BIN, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


@pytest.fixture
def spawn() -> Iterator[Callable[..., Subprocess]]:
    """Start ``poolwatch-exporter`` subprocesses; waits for /healthz; stops them at the end."""
    started: list[Subprocess] = []

    def start(*args: str, scheme: str = "http", env: dict[str, str] | None = None) -> Subprocess:
        port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("POOLWATCH_EXPORTER_")}
        full_env.update(env or {})
        proc = subprocess.Popen(
            [EXPORTER_BIN, "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        sub = Subprocess(proc, f"{scheme}://127.0.0.1:{port}")
        started.append(sub)

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"exporter exited {proc.returncode}: {sub.stop()}")
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True

        until(listening, what="the exporter to listen", catch=(OSError,))
        return sub

    yield start
    for sub in started:
        sub.stop()
