"""``poolwatch.redaction``: passwords out of every DSN form that may be printed."""

from __future__ import annotations

import pytest

from poolwatch.redaction import (
    MASK,
    dsn_secrets,
    longest_first,
    redact_dsn,
    redact_known_dsn,
    scrub,
    unencoded_password,
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "postgresql://monitor:s3cret@db:5432/postgres",
            "postgresql://monitor:***@db:5432/postgres",
        ),
        (
            "cannot use postgresql+asyncpg://a:b@h/d now",
            "cannot use postgresql+asyncpg://a:***@h/d now",
        ),
        (
            "postgresql://h/d?sslmode=require&password=s3cret",
            "postgresql://h/d?sslmode=require&password=***",
        ),
        ("host=db password=s3cret dbname=x", "host=db password=*** dbname=x"),
        ("postgresql://nobody@h/d", "postgresql://nobody@h/d"),
    ],
)
def test_redact_dsn_masks_passwords_in_urls_queries_and_key_values(text: str, shown: str) -> None:
    assert redact_dsn(text) == shown
    assert redact_dsn(shown) == shown  # idempotent: a masked DSN stays as it is


def test_every_printed_form_of_the_password_is_a_secret_longest_first() -> None:
    secrets = dsn_secrets("postgresql://app:p%40ss%2Fw@db/shop?sslpassword=k3y")
    assert set(secrets) == {"p%40ss%2Fw", "p@ss/w", "k3y"}
    assert list(secrets) == sorted(secrets, key=len, reverse=True)
    assert dsn_secrets("postgresql://app@db/shop") == ()


def test_an_unparsable_url_still_yields_the_typed_password() -> None:
    assert "s3cret" in dsn_secrets("postgresql://app:s3cret@[::1/shop")


def test_scrub_masks_a_password_wherever_a_driver_repeats_it() -> None:
    dsn = "postgresql://app:p%40ss@db/shop"
    message = f"connection to {dsn} failed: password authentication failed (tried 'p@ss')"
    scrubbed = scrub(message, dsn_secrets(dsn))
    assert "p@ss" not in scrubbed and "p%40ss" not in scrubbed
    assert scrubbed.count(MASK) == 2
    assert redact_known_dsn(dsn) == "postgresql://app:***@db/shop"


def test_longest_first_drops_empties_and_repeats() -> None:
    assert longest_first(["ab", "", "abc", "ab"]) == ("abc", "ab")


@pytest.mark.parametrize(
    ("dsn", "unencoded"),
    [
        ("postgresql://app:pa/ss@db/shop", True),
        ("postgresql://app:p@ss@db/shop", True),
        ("postgresql://app:pa%2Fss@db/shop", False),
        ("postgresql://app:plain@db/shop?application_name=a@b", False),
        ("postgresql://app@db/shop", False),
    ],
)
def test_unencoded_password_spots_characters_that_cut_the_url(dsn: str, unencoded: bool) -> None:
    assert unencoded_password(dsn) is unencoded
