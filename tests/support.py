"""Shared test helpers: the real PostgreSQL under test, required-tool checks and polling."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from poolwatch.embedded import LocalPostgres
from poolwatch.urls import sqlalchemy_url

REQUIRE_ALL = os.environ.get("POOLWATCH_REQUIRE_ALL") == "1"
UNTIL_TIMEOUT = 30.0  # a bound for waiting, not a measure: a healthy run converges far sooner

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


_TRUTHY: Any = object()  # until()'s default condition: the value is truthy


def _wanted(equals: Any, holds: Callable[[Any], bool] | None) -> Callable[[Any], bool]:
    if holds is not None:
        return holds
    if equals is _TRUTHY:
        return bool
    return lambda value: bool(value == equals)


class _Poll:
    """What one ``until()`` has seen so far, and the failure message when time runs out."""

    def __init__(
        self,
        what: str,
        timeout: float,
        equals: Any,
        holds: Callable[[Any], bool] | None,
        catch: tuple[type[BaseException], ...],
    ) -> None:
        self.what, self.timeout, self.equals, self.catch = what, timeout, equals, catch
        self.holds = _wanted(equals, holds)
        self.end = time.monotonic() + timeout
        self.last: str = "nothing (the first check had not returned)"

    def saw(self, value: Any) -> bool:
        """Whether ``value`` is what we wait for (and remember it for the failure message)."""
        self.last = f"last value: {value!r}"
        return self.holds(value)

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """One call of the check: an exception among ``catch`` is remembered, not raised."""
        try:
            yield
        except self.catch as exc:
            self.last = f"last exception: {type(exc).__name__}: {exc}"

    def give_up_if_late(self) -> None:
        """Fail with ``what`` and the last value or exception once the deadline has passed."""
        if time.monotonic() >= self.end:
            wanted = "" if self.equals is _TRUTHY else f" (want {self.equals!r})"
            raise AssertionError(
                f"timed out after {self.timeout:g} s waiting for {self.what}{wanted}; {self.last}"
            )


def until(
    check: Callable[[], T],
    *,
    what: str,
    timeout: float = UNTIL_TIMEOUT,
    interval: float = 0.05,
    equals: Any = _TRUTHY,
    holds: Callable[[T], bool] | None = None,
    catch: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``check()`` until its value is truthy (or ``== equals``, or ``holds(value)``) and
    return that value.

    On timeout the test fails with ``what`` and the last value ``check`` returned, or the last
    exception among ``catch`` it raised (other exceptions propagate at once). The sleep between
    calls is the poll interval only: nothing relies on it to let anything happen.
    """
    poll = _Poll(what, timeout, equals, holds, catch)
    while True:
        with poll.attempt():
            if poll.saw(value := check()):
                return value
        poll.give_up_if_late()
        time.sleep(interval)


async def until_async(
    check: Callable[[], T | Awaitable[T]],
    *,
    what: str,
    timeout: float = UNTIL_TIMEOUT,
    interval: float = 0.02,
    equals: Any = _TRUTHY,
    holds: Callable[[T], bool] | None = None,
    catch: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`until` for the event loop: ``check`` may be a plain or an async callable, and
    the loop keeps running (``asyncio.sleep``) between calls."""
    poll = _Poll(what, timeout, equals, holds, catch)
    while True:
        with poll.attempt():
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if poll.saw(value):
                return value  # type: ignore[return-value]
        poll.give_up_if_late()
        await asyncio.sleep(interval)


async def until_pool_sample(
    registry: Any, name: str, pool: str, equals: float, **labels: str
) -> float | None:
    """Poll one poolwatch metric of ``pool`` until it equals ``equals`` (or fail saying so)."""
    return await until_async(
        lambda: pool_sample(registry, name, pool, **labels),
        equals=equals,
        what=f"{name} of pool {pool!r}",
    )


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


async def terminate_backend(dsn: str, pid: int) -> None:
    """Kill one server backend from a separate admin connection, and wait until it is gone."""
    import asyncpg

    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("select pg_terminate_backend($1)", pid)
        await until_async(
            lambda: admin.fetchval("select count(*) = 0 from pg_stat_activity where pid = $1", pid),
            what=f"backend {pid} to leave pg_stat_activity",
        )
    finally:
        await admin.close()


async def pre_ping_finds_a_dead_connection(engine: Any, dsn: str) -> None:
    """Kill the server side of a pooled connection, then check out again: pre-ping finds it
    dead, the pool invalidates it and reconnects (``engine`` has ``pool_pre_ping=True``)."""
    import sqlalchemy as sa

    async with engine.connect() as conn:
        pid = (await conn.execute(sa.text("select pg_backend_pid()"))).scalar()
    await terminate_backend(dsn, pid)
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("select 1"))).scalar() == 1
