"""Keeping database passwords out of every line poolwatch prints or logs.

Two layers, used together wherever a DSN is known:

- :func:`redact_dsn` masks anything in a text that looks like a password: the
  ``user:password@`` part of any ``scheme://`` URL, ``?password=`` / ``&sslpassword=`` query
  values and libpq ``password=...`` pairs. It never raises, whatever the text.
- :func:`dsn_secrets` lists every form in which one DSN's password may show up (as typed,
  as ``urllib`` splits it, percent-decoded), so that :func:`scrub` can mask it even where
  the text is not URL-shaped: a driver's error message, or a URL whose password holds an
  unencoded space, ``/``, ``?``, ``#`` or ``@``.

Example::

    >>> redact_dsn("postgresql://monitor:s3cret@db:5432/postgres")
    'postgresql://monitor:***@db:5432/postgres'
    >>> url = "postgresql://monitor:s3 cr/et@db/postgres"
    >>> scrub(f"cannot use {url}", dsn_secrets(url))
    'cannot use postgresql://monitor:***@db/postgres'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
PASSWORD_ENCODING_HINT = (
    "the password in the DSN holds / ? # or @: percent-encode them "
    "(/ is %2F, ? is %3F, # is %23, @ is %40)"
)
# Any scheme: users paste SQLAlchemy URLs (postgresql+asyncpg://) and worse. The password
# runs to the last "@" of the URL (an unencoded "@" or "#" may be part of it); an already
# masked one is left alone, so that masking twice changes nothing.
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/?#\s]*):(?!\*\*\*@)\S*@"
)
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:ssl)?password=)(?!\*\*\*)[^&\s]*", re.IGNORECASE)
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:ssl)?password\s*=\s*)(?!\*\*\*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)
# As typed: from "user:" after the scheme to the last "@" of the line.
_TYPED_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#\s]*:(?P<password>.*)@[^@]*$")


def redact_dsn(text: str) -> str:
    """Replace every password in URLs or ``password=`` pairs inside ``text`` with ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", text)


def _typed_password(dsn: str) -> re.Match[str] | None:
    """The password of ``dsn``'s first line as typed (group ``password``), if it has one."""
    return _TYPED_PASSWORD.match(dsn.splitlines()[0] if dsn else "")


def dsn_secrets(dsn: str) -> tuple[str, ...]:
    """Every form of ``dsn``'s passwords that could be printed, longest first."""
    dsn = dsn.strip()
    found: list[str] = []
    typed = _typed_password(dsn)
    if typed:
        found.append(typed["password"])
    try:
        parts = urlsplit(dsn)
        if parts.password:
            found.append(parts.password)
        query = parts.query
    except ValueError:  # e.g. an unbalanced "[" in the host: the typed form still counts
        query = ""
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.lower() in ("password", "sslpassword"):
            found.append(value)
    for match in _KV_PASSWORD.finditer(dsn):  # a libpq key=value string
        found.append(match.group(2).strip("'"))
    return longest_first(form for secret in found for form in (secret, unquote(secret)))


def longest_first(secrets: Iterable[str]) -> tuple[str, ...]:
    """``secrets`` without empties or repeats, longest first: a secret that contains
    another is masked whole before the shorter one could cut it in two."""
    return tuple(sorted({s for s in secrets if s}, key=len, reverse=True))


def unencoded_password(dsn: str) -> bool:
    """Whether ``dsn``'s password, as typed, holds ``/ ? # @`` without percent-encoding.

    URL parsers then cut the URL inside the password (and drivers may quote the piece they
    could not parse); the check looks for a host part followed by ``/`` after the last
    ``@``, so that an ``@`` in a query value is not taken for one.
    """
    dsn = dsn.strip()
    typed = _typed_password(dsn)
    if typed is None or not any(c in typed["password"] for c in "/?#@"):
        return False
    return re.match(r"[^/?#@\s]+/", dsn[typed.end("password") + 1 :]) is not None


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with DSN passwords and every known secret replaced by ``***``."""
    text = redact_dsn(text)
    for secret in secrets:
        if secret != MASK:
            text = text.replace(secret, MASK)
    return text


def redact_known_dsn(dsn: str) -> str:
    """``dsn`` itself, fit to print: its password masked in every form it may take."""
    return scrub(dsn, dsn_secrets(dsn))
