"""Reading the DSN (flag, environment or file); its password is masked by poolwatch.redaction.

Example::

    >>> redact_dsn("postgresql://monitor:s3cret@db:5432/postgres")
    'postgresql://monitor:***@db:5432/postgres'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..redaction import PASSWORD_ENCODING_HINT, dsn_secrets, redact_dsn, scrub, unencoded_password
from .config_files import read_text_file

SCHEMES = ("postgresql", "postgres")


class DsnError(ValueError):
    """The DSN is missing, unreadable or not a postgresql:// URL (message is redacted)."""


@dataclass(frozen=True)
class Dsn:
    """A validated libpq URL plus the secrets that must never be printed."""

    url: str
    secrets: tuple[str, ...]

    @property
    def redacted(self) -> str:
        """The URL with its password replaced by ``***`` (in every form it may take)."""
        return scrub(self.url, self.secrets)


def parse_dsn(url: str) -> Dsn:
    """Validate ``url`` as a ``postgresql://`` URL and collect its secrets."""
    url = url.strip()
    if not url:
        raise DsnError("the DSN is empty")
    secrets = dsn_secrets(url)
    if "\n" in url:
        raise DsnError("the DSN must be one line (a --dsn-file holds the URL alone)")
    if unencoded_password(url):
        raise DsnError(PASSWORD_ENCODING_HINT)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise DsnError(f"the DSN is not a valid URL: {scrub(str(exc), secrets)}") from None
    if parts.scheme not in SCHEMES:
        raise DsnError(
            "the DSN must be a URL like postgresql://user@host:5432/dbname "
            f"(got {scrub(url, secrets)[:60]!r})"
        )
    return Dsn(url=url, secrets=secrets)


def load_dsn(flag: str | None, file: str | None, option: str = "--dsn") -> Dsn:
    """The DSN from ``--dsn`` (or its env var) or ``--dsn-file``; exactly one must be given.

    ``option`` names the flag pair in messages (``--pgbouncer.dsn`` for the PgBouncer one).
    """
    if flag and file:
        raise DsnError(f"give either {option} or {option}-file, not both")
    if file:
        dsn = parse_dsn(read_text_file(file, f"{option}-file", DsnError))
    elif flag:
        dsn = parse_dsn(flag)
    else:
        raise DsnError(
            "no DSN: pass --dsn postgresql://user@host:5432/db (or set POOLWATCH_EXPORTER_DSN, "
            "or pass --dsn-file), and/or --pgbouncer.dsn postgresql://stats@host:6432/pgbouncer"
        )
    return dsn


def load_dsns(
    settings_dsn: tuple[str | None, str | None], pgbouncer: tuple[str | None, str | None]
) -> tuple[Dsn | None, Dsn | None]:
    """(PostgreSQL DSN or None, PgBouncer DSN or None); at least one must be given."""
    if not any(pgbouncer):
        return load_dsn(*settings_dsn), None
    pg = load_dsn(*settings_dsn) if any(settings_dsn) else None
    return pg, load_dsn(*pgbouncer, option="--pgbouncer.dsn")


def environment_password() -> str | None:
    """PGPASSWORD, which libpq-style clients (asyncpg too) use when the URL has none."""
    return os.environ.get("PGPASSWORD") or None


__all__ = [
    "SCHEMES",
    "Dsn",
    "DsnError",
    "environment_password",
    "load_dsn",
    "load_dsns",
    "parse_dsn",
    "redact_dsn",
    "scrub",
]
