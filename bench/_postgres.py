"""The PostgreSQL a benchmark runs against: ``--dsn`` when given, else an embedded one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from poolwatch.urls import sqlalchemy_url


@contextlib.contextmanager
def asyncpg_url(dsn: str | None) -> Iterator[str]:
    """A ``postgresql+asyncpg://`` URL for ``dsn``, or for an embedded server started here
    (and stopped on exit)."""
    if dsn:
        yield sqlalchemy_url(dsn, "asyncpg")
        return
    from poolwatch.embedded import start_local_postgres

    local = start_local_postgres()
    try:
        yield local.sqlalchemy_url("asyncpg")
    finally:
        local.stop()
