"""``/probe`` target addresses (``host:port/database``), the allow-list patterns they must
match, and the URL built from an address or a named target plus an auth module.

An address is checked before anything connects: no credentials, no query string, a host of
letters, digits, dots and dashes (or a bracketed IPv6 address), a port, a plain database
name. A pattern has the same three parts, each an ``fnmatch`` glob matched on its own, so
``*.db.internal:5432/*`` cannot be satisfied by a ``*`` running from the host into the port.

Example::

    >>> a = parse_address("Orders.DB.internal:5433/app")
    >>> str(a)
    'orders.db.internal:5433/app'
    >>> parse_pattern("*.db.internal:*/app").matches(a)
    True
    >>> parse_pattern("*.db.internal").matches(parse_address("x.db.internal/other"))
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .dsn import Dsn, parse_dsn

DEFAULT_PORT = 5432
DEFAULT_DATABASE = "postgres"
_HOST = r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))"
_ADDRESS = re.compile(rf"^{_HOST}(?::(?P<port>\d{{1,5}}))?(?:/(?P<db>[A-Za-z0-9_.$-]{{1,63}}))?$")
_PATTERN = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.*?]+\]|[A-Za-z0-9_.*?-]+)"
    r"(?::(?P<port>[0-9*?]{1,5}))?(?:/(?P<db>[A-Za-z0-9_.$*?-]{1,63}))?$"
)


class TargetError(ValueError):
    """A target or pattern is malformed; the message is one line saying what to write."""


@dataclass(frozen=True)
class Address:
    """A network target: host (lower case), port, database."""

    host: str
    port: int
    database: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class AddressPattern:
    """One ``probe.allowed_targets`` entry: a glob for each of host, port and database."""

    text: str
    host: str
    port: str
    database: str

    def matches(self, address: Address) -> bool:
        """True when every part of ``address`` matches its glob."""
        return (
            fnmatchcase(address.host, self.host)
            and fnmatchcase(str(address.port), self.port)
            and fnmatchcase(address.database, self.database)
        )


def parse_address(text: str) -> Address:
    """``host[:port][/database]``, optionally after ``postgresql://``; port 5432 and
    database ``postgres`` when left out."""
    raw = text.strip()
    for scheme in ("postgresql://", "postgres://"):
        if raw.lower().startswith(scheme):
            raw = raw[len(scheme) :]
            break
    if "@" in raw:
        raise TargetError(
            "the target must not hold credentials: name an auth module with &module=<name>"
        )
    match = _ADDRESS.match(raw)
    if not match:
        raise TargetError(
            "the target must look like host:port/database (e.g. db1.internal:5432/postgres) "
            "or be a name from probe.targets"
        )
    port = int(match["port"] or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise TargetError(f"the target's port {port} is not between 1 and 65535")
    return Address(match["host"].lower(), port, match["db"] or DEFAULT_DATABASE)


def parse_pattern(text: str) -> AddressPattern:
    """``host-glob[:port-glob][/database-glob]``: port 5432 and any database when left out."""
    match = _PATTERN.match(text.strip())
    if not match:
        raise TargetError(
            f"{text!r} is not a host:port/database pattern (globs * ? [..] in each part)"
        )
    return AddressPattern(
        text=text.strip(),
        host=match["host"].lower(),
        port=match["port"] or str(DEFAULT_PORT),
        database=match["db"] or "*",
    )


def _userinfo(username: str, password: str | None) -> str:
    auth = quote(username, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return auth + "@"


def address_dsn(
    address: Address, username: str, password: str | None, options: dict[str, str]
) -> Dsn:
    """The libpq URL for ``address`` with the auth module's credentials and options."""
    host = address.host
    query = urlencode(sorted(options.items()))
    url = urlunsplit(
        (
            "postgresql",
            f"{_userinfo(username, password)}{host}:{address.port}",
            "/" + quote(address.database, safe=""),
            query,
            "",
        )
    )
    return _with_password(parse_dsn(url), password)


def named_dsn(url: str, username: str, password: str | None, options: dict[str, str]) -> Dsn:
    """A named target's URL (no credentials in it) with the auth module's added."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(options)
    netloc = _userinfo(username, password) + parts.netloc
    full = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))
    return _with_password(parse_dsn(full), password)


def _with_password(dsn: Dsn, password: str | None) -> Dsn:
    """Also mask the password as written in the config file (not only its URL forms)."""
    if not password or password in dsn.secrets:
        return dsn
    secrets = tuple(sorted({*dsn.secrets, password}, key=len, reverse=True))
    return Dsn(url=dsn.url, secrets=secrets)


__all__ = [
    "Address",
    "AddressPattern",
    "TargetError",
    "address_dsn",
    "named_dsn",
    "parse_address",
    "parse_pattern",
]
