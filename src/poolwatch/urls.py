"""Every rewrite of a PostgreSQL URL outside the exporter and the instrumentation, on one parser:
SQLAlchemy's :func:`~sqlalchemy.engine.make_url`.

A bad URL is a :class:`DsnError`: one readable line with the fix, the password masked.

Example::

    >>> libpq_dsn("postgresql+asyncpg://app:s3cret@db:5432/shop")
    'postgresql://app:s3cret@db:5432/shop'
    >>> sqlalchemy_url("postgresql://app@db/shop", "psycopg")
    'postgresql+psycopg://app@db/shop'
    >>> with_database("postgresql://app@db/shop", "other")
    'postgresql://app@db/other'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from poolwatch.redaction import MASK, PASSWORD_ENCODING_HINT, redact_known_dsn, unencoded_password

EXAMPLE = "postgresql://user@host:5432/dbname"


class DsnError(ValueError):
    """A URL poolwatch cannot use; the message is one line, without the password."""


def parse(dsn: str, what: str = "--dsn") -> URL:
    """``dsn`` (libpq ``postgresql://`` or SQLAlchemy ``postgresql+driver://``) as a URL.

    ``what`` names the URL in the error (the flag it came from).
    """
    if unencoded_password(dsn):
        raise DsnError(PASSWORD_ENCODING_HINT)
    shown = redact_known_dsn(dsn)
    if "://" not in dsn and "@" in dsn:  # no scheme: whatever precedes "@" may be a password
        shown = f"{MASK}@{dsn.rpartition('@')[2]}"
    not_postgres = f"{what} must be a postgresql:// URL, got {shown!r} (e.g. {EXAMPLE})"
    try:
        url = make_url(dsn.strip())
    except ArgumentError:
        raise DsnError(not_postgres) from None
    except ValueError:  # make_url's int(port), also on an unclosed "[" (IPv6) host
        raise DsnError(_netloc_problem(dsn, what, shown)) from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise DsnError(not_postgres)
    return url


def _netloc_problem(dsn: str, what: str, shown: str) -> str:
    try:
        urlsplit(dsn.strip()).port  # noqa: B018 - urllib names the problem
    except ValueError as exc:
        if "IPv6" in str(exc):
            return f"{what}: {exc} in {shown!r} (close the [ of the address: [::1]:5432)"
    if "," in dsn.partition("://")[2].partition("/")[0]:
        return f"{what} lists several hosts in {shown!r}: give one host:port (e.g. {EXAMPLE})"
    return f"{what} has a port that is not a number in {shown!r} (e.g. {EXAMPLE})"


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def libpq_dsn(dsn: str, what: str = "--dsn") -> str:
    """``dsn`` as a plain ``postgresql://`` URL for libpq / asyncpg (a ``+driver`` dropped)."""
    return _render(parse(dsn, what).set(drivername="postgresql"))


def sqlalchemy_url(dsn: str, driver: str = "asyncpg", what: str = "--dsn") -> str:
    """``dsn`` as a SQLAlchemy URL for ``driver`` (``postgresql+asyncpg://`` by default)."""
    return _render(parse(dsn, what).set(drivername=f"postgresql+{driver}"))


def with_database(
    dsn: str,
    database: str,
    user: str | None = None,
    password: str | None = None,
    query: Mapping[str, str] | None = None,
) -> str:
    """``dsn`` pointing at ``database``; when given, as ``user`` with ``password``, and with
    ``query`` keys set (``{"sslmode": "disable"}``)."""
    url = parse(dsn).set(database=database)
    if user is not None:
        url = url._replace(username=user, password=password or None)  # set() keeps None
    if query:
        url = url.update_query_dict(dict(query))
    return _render(url)


def connect_timeout(dsn: str, default: float) -> tuple[str, float]:
    """(``dsn`` without libpq's ``connect_timeout``, that timeout in seconds or ``default``).

    asyncpg would pass an unknown query key to the server as a setting, which fails.
    """
    url = parse(dsn)
    raw = url.query.get("connect_timeout")
    if raw is None:
        return dsn, default
    text = raw if isinstance(raw, str) else raw[-1]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise DsnError(f"connect_timeout must be a number of seconds above 0, got {text!r}")
    return _render(url.difference_update_query(["connect_timeout"])), value
