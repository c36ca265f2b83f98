"""Shared test helpers: the real PostgreSQL under test and required-tool checks."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from poolwatch.embedded import LocalPostgres
from poolwatch.urls import sqlalchemy_url

REQUIRE_ALL = os.environ.get("POOLWATCH_REQUIRE_ALL") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; under POOLWATCH_REQUIRE_ALL=1 (CI) a missing part is a failure."""
    if REQUIRE_ALL:
        pytest.fail(f"POOLWATCH_REQUIRE_ALL=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, *extra_dirs: str) -> str:
    """Path of executable ``name`` (on PATH or in ``extra_dirs``), else skip/fail clearly."""
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    skip_or_fail(f"`{name}` is not installed (apt-get install the package that ships it)")
    raise AssertionError("unreachable")


@dataclass
class PgTarget:
    """The PostgreSQL server tests talk to.

    ``dsn`` is a libpq URL with superuser rights; ``local`` is the embedded server when
    the tests started one (None when POOLWATCH_TEST_DSN points at an existing server).
    """

    dsn: str
    local: LocalPostgres | None

    def url(self, driver: str = "asyncpg") -> str:
        """SQLAlchemy URL for this server with the given driver."""
        return sqlalchemy_url(self.dsn, driver, what="POOLWATCH_TEST_DSN")

    def need_local(self) -> LocalPostgres:
        """The embedded server, for tests that restart it or edit pg_hba.conf."""
        if self.local is None:
            pytest.skip("needs the embedded server (POOLWATCH_TEST_DSN points elsewhere)")
        return self.local


@contextmanager
def running_exporter(dsn: str, workdir: Path, *flags: str) -> Iterator[Any]:
    """A real ``poolwatch-exporter`` for ``dsn`` (the demo's helper), stopped on exit.

    Yields a :class:`poolwatch.demo.processes.Exporter` (``.metrics_url``, ``.child``).
    """
    from poolwatch.demo.processes import start_exporter

    exporter = start_exporter(workdir, dsn, *flags)
    try:
        yield exporter
    finally:
        exporter.child.stop()


def pool_sample(registry: Any, name: str, pool: str, **labels: str) -> float | None:
    """One sample of a poolwatch metric for ``pool`` from a prometheus_client registry."""
    value: float | None = registry.get_sample_value(name, {"pool": pool, **labels})
    return value


async def hold_connections(engine: Any, n: int) -> list[Any]:
    """Check out ``n`` connections of an AsyncEngine and use each once; caller closes them."""
    import sqlalchemy as sa

    conns = []
    for _ in range(n):
        conn = await engine.connect()
        await conn.execute(sa.text("select 1"))
        conns.append(conn)
    return conns


async def wait_for_sample(
    registry: Any, name: str, pool: str, expected: float, *, tries: int = 200, **labels: str
) -> None:
    """Poll a pool metric every 20 ms until it equals ``expected`` (callers assert after)."""
    import asyncio

    for _ in range(tries):
        if pool_sample(registry, name, pool, **labels) == expected:
            return
        await asyncio.sleep(0.02)


async def terminate_backend(dsn: str, pid: int) -> None:
    """Kill one server backend from a separate admin connection, and wait until it is gone."""
    import asyncio

    import asyncpg

    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("select pg_terminate_backend($1)", pid)
        for _ in range(200):
            gone = await admin.fetchval(
                "select count(*) = 0 from pg_stat_activity where pid = $1", pid
            )
            if gone:
                return
            await asyncio.sleep(0.01)
    finally:
        await admin.close()
