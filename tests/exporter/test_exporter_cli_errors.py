"""Expected CLI failures: passwords never printed, a busy port is one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from poolwatch.exporter.dsn import parse_dsn, redact_dsn


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql+asyncpg://app:S3cretPW@db:5432/shop",  # a SQLAlchemy URL from DATABASE_URL
        "mysql://app:S3cretPW@db/shop",
        "postgresql://app@db/shop?sslpassword=S3cretPW",
    ],
)
def test_cli_never_prints_the_password(dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "poolwatch.exporter", "--dsn", dsn, "--query.timeout", "1s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "S3cretPW" not in output
    assert "Traceback" not in output


def test_sslpassword_is_a_secret() -> None:
    assert parse_dsn("postgresql://u@h/db?sslpassword=abc123").secrets == ("abc123",)
    assert "abc123" not in redact_dsn("sslpassword=abc123 and ?sslpassword=abc123")


def test_port_in_use_is_one_line_and_exit_1() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "poolwatch.exporter",
                "--dsn",
                "postgresql://monitor@/postgres?host=/nonexistent",
                "--no-startup.connect-check",
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"poolwatch-exporter: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(pick another --web.listen-address)"
    ]
    assert "listening" not in result.stdout + result.stderr
