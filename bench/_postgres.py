"""The PostgreSQL a benchmark runs against: ``--dsn`` when given, else an embedded one."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType

from poolwatch.urls import sqlalchemy_url


@contextlib.contextmanager
def asyncpg_url(dsn: str | None) -> Iterator[str]:
    """A ``postgresql+asyncpg://`` URL for ``dsn``, or for an embedded server started here
    (and stopped on exit)."""
    if dsn:
        yield sqlalchemy_url(dsn, "asyncpg")
        return
    from poolwatch.embedded import start_local_postgres

    exit_on_sigterm()
    local = start_local_postgres()
    try:
        yield local.sqlalchemy_url("asyncpg")
    finally:
        local.stop()


def exit_on_sigterm() -> None:
    """Make ``kill`` (SIGTERM) end this benchmark through its ``finally`` blocks.

    By default SIGTERM ends the process on the spot, leaving the embedded PostgreSQL (and
    any exporter or PgBouncer it started) running with no parent.
    """
    signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)
