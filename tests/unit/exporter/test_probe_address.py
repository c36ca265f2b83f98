"""Target addresses, allow-list patterns and the URLs built for them (no database)."""

from __future__ import annotations

import pytest

from poolwatch.exporter.dsn import scrub
from poolwatch.exporter.probe_address import (
    TargetError,
    address_dsn,
    named_dsn,
    parse_address,
    parse_pattern,
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("db1:5432/app", "db1:5432/app"),
        ("DB1.Internal", "db1.internal:5432/postgres"),
        ("db1/app", "db1:5432/app"),
        ("postgresql://db1:6432/app", "db1:6432/app"),
        ("[::1]:5433/app", "[::1]:5433/app"),
        ("10.0.0.7:5432/x_y.z$1", "10.0.0.7:5432/x_y.z$1"),
    ],
)
def test_addresses_are_normalised(text: str, shown: str) -> None:
    assert str(parse_address(text)) == shown


@pytest.mark.parametrize(
    "text",
    [
        "user:pw@db1:5432/app",
        "db1:5432/app?host=/tmp",
        "db1:5432/app#x",
        "db1:99999/app",
        "db1:5432/a/b",
        "-db1:5432/app",
        "db 1:5432/app",
        "",
    ],
)
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(TargetError):
        parse_address(text)


def test_a_glob_stays_in_its_part() -> None:
    pattern = parse_pattern("db*:5432/app*")
    assert pattern.matches(parse_address("db7:5432/app_1"))
    assert not pattern.matches(parse_address("db7:5433/app_1"))  # port is not "5432/app*"
    assert not pattern.matches(parse_address("db7:5432/other"))
    assert not pattern.matches(parse_address("evil.example:5432/app"))
    # no port and no database in the pattern: port 5432, any database
    bare = parse_pattern("*.db.internal")
    assert bare.matches(parse_address("a.db.internal/x"))
    assert not bare.matches(parse_address("a.db.internal:6432/x"))
    assert not bare.matches(parse_address("db.internal.evil.example/x"))


def test_bad_patterns_are_refused() -> None:
    for text in ("db/x y", "user@db", "db:port/x", "db:5432/x?y=1"):
        with pytest.raises(TargetError):
            parse_pattern(text)


def test_built_urls_carry_the_module_and_mask_its_password() -> None:
    dsn = address_dsn(
        parse_address("db1:5432/app"), "mon itor", "p@ss/w:rd", {"sslmode": "require"}
    )
    assert dsn.url == "postgresql://mon%20itor:p%40ss%2Fw%3Ard@db1:5432/app?sslmode=require"
    assert "p@ss/w:rd" in dsn.secrets
    assert "p@ss/w:rd" not in scrub(f"failed for {dsn.url} with p@ss/w:rd", dsn.secrets)
    named = named_dsn("postgresql:///app?host=/run/pg", "mon", None, {"sslmode": "disable"})
    assert named.url == "postgresql://mon@/app?host=%2Frun%2Fpg&sslmode=disable"
