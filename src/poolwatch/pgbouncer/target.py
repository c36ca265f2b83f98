"""Where and how to reach PgBouncer's admin console, read from a ``postgresql://`` URL,
and :class:`ConsoleError`, the one error every console failure raises."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from poolwatch.pgbouncer import tls
from poolwatch.redaction import dsn_secrets, redact_dsn, scrub

__all__ = ["ConsoleError", "Target", "parse_target"]


class ConsoleError(RuntimeError):
    """Connecting to or querying the admin console failed; ``str()`` is one redacted line.

    ``timed_out`` is True when PgBouncer did not answer in time (a hung or stopped process:
    retrying at once would only wait again).
    """

    timed_out = False


@dataclass(frozen=True)
class Target:
    """Where and how to connect, parsed from a ``postgresql://`` URL."""

    host: str
    port: int
    user: str
    password: str
    database: str
    secrets: tuple[str, ...]
    sslmode: str = "prefer"
    sslrootcert: str | None = None

    @property
    def where(self) -> str:
        """``host:port`` (or the socket path) for messages."""
        return f"{self.host}:{self.port}" if not self.host.startswith("/") else self.socket

    @property
    def socket(self) -> str:
        """The Unix socket path when ``host`` is a directory."""
        return f"{self.host.rstrip('/')}/.s.PGSQL.{self.port}"


def parse_target(dsn: str, password: str | None = None) -> Target:
    """Read host, port, user, password and database from a libpq URL.

    ``password`` (or else ``$PGPASSWORD``) is used when the URL has none. ``?host=/dir``
    selects a Unix socket; ``sslmode`` and ``sslrootcert`` work as in libpq (:mod:`.tls`).
    """
    secrets = dsn_secrets(dsn)
    try:
        parts = urlsplit(dsn.strip())
        url_port = parts.port
    except ValueError as exc:
        message = f"the PgBouncer DSN is not a valid URL: {scrub(str(exc), secrets)}"
        raise ConsoleError(message) from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConsoleError(
            "the PgBouncer DSN must look like postgresql://user@host:6432/pgbouncer, got "
            f"{scrub(redact_dsn(dsn), secrets)[:60]!r}"
        )
    query = dict(parse_qsl(parts.query))
    sslmode = query.get("sslmode", "prefer")
    if sslmode not in tls.SSLMODES:
        raise ConsoleError(f"sslmode={sslmode} is not one of {', '.join(tls.SSLMODES)}")
    user = unquote(parts.username or "") or query.get("user", "")
    if not user:
        raise ConsoleError(
            "the PgBouncer DSN names no user (postgresql://USER@host:6432/pgbouncer)"
        )
    found = unquote(parts.password or "") or query.get("password") or password
    if found is None:
        found = os.environ.get("PGPASSWORD", "")
    if found:
        secrets = (*secrets, found)
    return Target(
        host=query.get("host") or parts.hostname or "127.0.0.1",
        port=int(query.get("port") or url_port or 6432),
        user=user,
        password=found,
        database=unquote(parts.path.lstrip("/")) or "pgbouncer",
        secrets=secrets,
        sslmode=sslmode,
        sslrootcert=query.get("sslrootcert"),
    )
