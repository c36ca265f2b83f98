"""Reading the DSN (flag, environment or file) and keeping its password out of sight.

Example::

    >>> redact_dsn("postgresql://monitor:s3cret@db:5432/postgres")
    'postgresql://monitor:***@db:5432/postgres'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = ("postgresql", "postgres")
# Any scheme: users paste SQLAlchemy URLs (postgresql+asyncpg://) and worse.
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/?#\s]*):[^@\s]*@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:ssl)?password=)[^&\s]*", re.IGNORECASE)
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)


class DsnError(ValueError):
    """The DSN is missing, unreadable or not a postgresql:// URL (message is redacted)."""


@dataclass(frozen=True)
class Dsn:
    """A validated libpq URL plus the secrets that must never be printed."""

    url: str
    secrets: tuple[str, ...]

    @property
    def redacted(self) -> str:
        """The URL with its password replaced by ``***``."""
        return redact_dsn(self.url)


def redact_dsn(text: str) -> str:
    """Replace every password in URLs or ``password=`` pairs inside ``text`` with ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m['key']}***", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['key']}***", text)


def parse_dsn(url: str) -> Dsn:
    """Validate ``url`` as a ``postgresql://`` URL and collect its secrets."""
    url = url.strip()
    if not url:
        raise DsnError("the DSN is empty")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise DsnError(f"the DSN is not a valid URL: {redact_dsn(str(exc))}") from None
    if parts.scheme not in SCHEMES:
        raise DsnError(
            "the DSN must be a URL like postgresql://user@host:5432/dbname "
            f"(got {redact_dsn(url)[:60]!r})"
        )
    secrets: list[str] = []
    if parts.password:
        secrets += [parts.password, unquote(parts.password)]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in ("password", "sslpassword") and value:
            secrets.append(value)
    return Dsn(url=url, secrets=tuple(sorted({s for s in secrets if s}, key=len, reverse=True)))


def load_dsn(flag: str | None, file: str | None) -> Dsn:
    """The DSN from ``--dsn`` (or its env var) or ``--dsn-file``; exactly one must be given."""
    if flag and file:
        raise DsnError("give either --dsn or --dsn-file, not both")
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise DsnError(f"cannot read --dsn-file {file}: {exc.strerror or exc}") from None
        return parse_dsn(text)
    if flag:
        return parse_dsn(flag)
    raise DsnError(
        "no DSN: pass --dsn postgresql://user@host:5432/db, set POOLWATCH_EXPORTER_DSN, "
        "or pass --dsn-file"
    )


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with DSN passwords and every known secret replaced by ``***``."""
    text = redact_dsn(text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def environment_password() -> str | None:
    """PGPASSWORD, which libpq-style clients (asyncpg too) use when the URL has none."""
    return os.environ.get("PGPASSWORD") or None
