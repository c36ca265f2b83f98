"""The one URL helper (``poolwatch.urls``): rewrites keep every part, errors hide passwords."""

from __future__ import annotations

import pytest

from poolwatch import urls

SOCKET_DSN = "postgresql://postgres@/postgres?host=/tmp/pw-x/pg"


def test_libpq_dsn_drops_the_driver_and_keeps_everything_else() -> None:
    url = "postgresql+asyncpg://app:s%40cr%2Fet@db.example:6432/shop?sslmode=require"
    assert (
        urls.libpq_dsn(url) == "postgresql://app:s%40cr%2Fet@db.example:6432/shop?sslmode=require"
    )
    assert urls.libpq_dsn("postgres://app@db/shop") == "postgresql://app@db/shop"


def test_sqlalchemy_url_of_a_socket_dsn_keeps_the_socket_directory() -> None:
    url = urls.sqlalchemy_url(SOCKET_DSN, "psycopg")
    assert url.startswith("postgresql+psycopg://postgres@/postgres?host=")
    parsed = urls.parse(url)
    assert parsed.query["host"] == "/tmp/pw-x/pg"
    assert parsed.host is None and parsed.database == "postgres"


def test_with_database_changes_database_user_and_query_only() -> None:
    dsn = "postgresql://app:pw@db:5432/shop?sslmode=require"
    assert urls.with_database(dsn, "other") == "postgresql://app:pw@db:5432/other?sslmode=require"
    moved = urls.parse(urls.with_database(dsn, "x", user="ro", query={"sslmode": "disable"}))
    assert (moved.username, moved.password, moved.database) == ("ro", None, "x")
    assert dict(moved.query) == {"sslmode": "disable"}


def test_connect_timeout_is_taken_out_of_the_url() -> None:
    dsn, timeout = urls.connect_timeout("postgresql://a@db/x?connect_timeout=2&sslmode=off", 10)
    assert (dsn, timeout) == ("postgresql://a@db/x?sslmode=off", 2.0)
    assert urls.connect_timeout("postgresql://a@db/x", 10) == ("postgresql://a@db/x", 10)


@pytest.mark.parametrize(
    ("dsn", "words"),
    [
        ("mysql://u:hunter2@db/x", ["must be a postgresql:// URL", "u:***@"]),
        ("u:hunter2@db:5432", ["must be a postgresql:// URL", "***@db:5432"]),
        ("postgresql://u:hunter2@db:notaport/x", ["port that is not a number", "u:***@"]),
        ("postgresql://u:hunter2@a:1,b:2/x", ["several hosts", "u:***@"]),
        ("postgresql://u:hunter2@[::1/x", ["Invalid IPv6 URL", "u:***@"]),
        ("postgresql://u:hun/ter2@db/x", ["percent-encode"]),
    ],
)
def test_bad_urls_are_one_line_without_the_password(dsn: str, words: list[str]) -> None:
    with pytest.raises(urls.DsnError) as caught:
        urls.libpq_dsn(dsn)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    assert "hunter2" not in message and "ter2" not in message


def test_a_bad_connect_timeout_is_refused() -> None:
    with pytest.raises(urls.DsnError, match="connect_timeout must be a number of seconds"):
        urls.connect_timeout("postgresql://a@db/x?connect_timeout=0", 10)
