"""Expected CLI failures: passwords never printed, a busy port is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poolwatch.exporter.dsn import parse_dsn, redact_dsn


def run_exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolwatch.exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql+asyncpg://app:S3cretPW@db:5432/shop",  # a SQLAlchemy URL from DATABASE_URL
        "mysql://app:S3cretPW@db/shop",
        "postgresql://app@db/shop?sslpassword=S3cretPW",
    ],
)
def test_cli_never_prints_the_password(dsn: str) -> None:
    result = run_exporter("--dsn", dsn, "--query.timeout", "1s")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "S3cretPW" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        # argparse quotes a mistyped flag's argument
        (["--dns=postgresql://mon:hunter2@127.0.0.1:1/postgres"], "mon:***@"),
        (["--ds=postgresql://mon:hunter2@127.0.0.1:1/postgres"], "could match --dsn"),
        (["--dsn", "host=127.0.0.1 password=hunter2"], "password=***')"),
        (["--dsn", "postgresql://mon:hun?ter2@127.0.0.1:1/postgres"], "percent-encode"),
        (["--dsn", "postgresql://mon:hun ter2@127.0.0.1:1/postgres", "--query.timeout", "1s"],
         "postgresql://mon:***@127.0.0.1:1/postgres"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_without_the_password(args: list[str], shown: str) -> None:
    result = run_exporter(*args)
    assert result.returncode != 0
    assert "hunter2" not in result.stdout + result.stderr
    assert "ter2" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert shown in lines[0]


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00x")
    two_lines = tmp_path / "two-lines"
    two_lines.write_text("postgresql://a@h/db\npostgresql://b@h/db\n")
    for args, words in (
        (["--dsn-file", str(binary)], "is not UTF-8 text"),
        (["--dsn-file", str(two_lines)], "must be one line"),
        (["--dsn", "postgresql://a@h/db", "--web.config.file", str(binary)], "not UTF-8 text"),
    ):
        result = run_exporter(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr


def test_boolean_environment_variable_must_be_a_boolean() -> None:
    env = {**os.environ, "POOLWATCH_EXPORTER_STARTUP_CONNECT_CHECK": "maybe"}
    result = run_exporter("--dsn", "postgresql://a@h/db", env=env)
    assert result.returncode == 2
    assert "POOLWATCH_EXPORTER_STARTUP_CONNECT_CHECK must be true or false" in result.stderr


def test_sslpassword_is_a_secret() -> None:
    assert parse_dsn("postgresql://u@h/db?sslpassword=abc123").secrets == ("abc123",)
    assert "abc123" not in redact_dsn("sslpassword=abc123 and ?sslpassword=abc123")


def test_port_in_use_is_one_line_and_exit_1() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_exporter(
            "--dsn",
            "postgresql://monitor@/postgres?host=/nonexistent",
            "--no-startup.connect-check",
            "--web.listen-address",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"poolwatch-exporter: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(pick another --web.listen-address)"
    ]
    assert "listening" not in result.stdout + result.stderr
