"""The command line: every expected error is one readable line and a non-zero exit."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import Scrape, run_cli, with_database
from poolwatch.exporter import DEFAULT_PORT
from poolwatch.exporter.__main__ import main
from poolwatch.exporter.settings import parse_settings
from support import PgTarget


@dataclass
class Result:
    returncode: int
    stderr: str
    stdout: str = ""


def run_main(*args: str, env: dict[str, str] | None = None) -> Result:
    """``main()`` in-process (same code path as the console script, minus the start-up)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("POOLWATCH_EXPORTER_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env or {})
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        for key in env or {}:
            os.environ.pop(key, None)
        os.environ.update(saved)
    return Result(code, err.getvalue())


def one_line_error(result: Any, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("poolwatch-exporter: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_help_documents_every_flag_with_its_environment_variable() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in (
        "--dsn",
        "--dsn-file",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.config.file",
        "--log.level",
        "--log.format",
        "--labels.top-n",
        "--idle-in-transaction.stale-threshold",
        "--scrape.min-interval",
        "--query.timeout",
        "--startup.connect-check",
        "--healthcheck",
        "--version",
    ):
        assert flag in text
    for env in ("POOLWATCH_EXPORTER_DSN", "POOLWATCH_EXPORTER_WEB_LISTEN_ADDRESS"):
        assert env in text.replace(" ", "")
    assert f":{DEFAULT_PORT}" in text
    assert run_cli("--version").stdout.startswith("poolwatch-exporter ")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--dsn", "x", "--labels.top-n", "0"], "--labels.top-n"),
        (["--dsn", "x", "--query.timeout", "soon"], "--query.timeout"),
        (["--dsn", "x", "--log.level", "loud"], "--log.level"),
        (["--dsn", "x", "--web.listen-address", "nowhere"], "--web.listen-address"),
        (["--dsn", "x", "--web.telemetry-path", "metrics"], "--web.telemetry-path"),
        ([], "no DSN"),
        (["--dsn", "mysql://u:pw@h/db"], "must be a URL like postgresql://"),
        (["--dsn-file", "/nonexistent/dsn"], "cannot read --dsn-file"),
        (
            ["--dsn", "postgresql://u@h/d", "--web.config.file", "/nonexistent.yml"],
            "cannot read --web.config.file",
        ),
    ],
)
def test_configuration_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    assert needle in one_line_error(run_main(*args), 2)


def test_configuration_error_from_the_console_script() -> None:
    assert "--labels.top-n" in one_line_error(run_cli("--dsn", "x", "--labels.top-n", "-1"), 2)


def test_bad_values_in_environment_variables_are_reported_by_flag() -> None:
    line = one_line_error(
        run_main(
            env={
                "POOLWATCH_EXPORTER_DSN": "postgresql://u@h/d",
                "POOLWATCH_EXPORTER_LABELS_TOP_N": "many",
            }
        ),
        2,
    )
    assert "--labels.top-n" in line


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("tls_server_config: [unclosed", "not valid YAML"),
        ("basic_auth_users:\n  prometheus: plaintext\n", "not a bcrypt hash"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "does not exist"),
        ("http_server_config:\n  http2: true\n", "unsupported key(s): http_server_config"),
    ],
)
def test_bad_web_config_files(tmp_path: Path, content: str, needle: str) -> None:
    web = tmp_path / "web.yml"
    web.write_text(content)
    line = one_line_error(run_main("--dsn", "postgresql://u@h/d", "--web.config.file", str(web)), 2)
    assert needle in line


def test_unreachable_server_exits_1_with_redacted_target(tmp_path: Path) -> None:
    dsn = f"postgresql://monitor:hunter2-secret@/postgres?host={tmp_path}/no-server-here"
    line = one_line_error(run_cli("--dsn", dsn, "--query.timeout", "2s"), 1)
    assert "cannot use PostgreSQL" in line and "monitor:***@" in line
    assert "hunter2-secret" not in line


async def test_missing_database_and_missing_permission_exit_1(pg: PgTarget, tmp_path: Path) -> None:
    line = one_line_error(run_cli("--dsn", with_database(pg.dsn, "pw_no_such_db")), 1)
    assert "pw_no_such_db" in line and "does not exist" in line
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS pw_locked")
        await admin.execute("DROP ROLE IF EXISTS pw_outsider")
        await admin.execute("CREATE DATABASE pw_locked")
        await admin.execute("REVOKE CONNECT ON DATABASE pw_locked FROM PUBLIC")
        await admin.execute("CREATE ROLE pw_outsider LOGIN")
        dsn_file = tmp_path / "dsn"
        dsn_file.write_text(with_database(pg.dsn, "pw_locked", "pw_outsider") + "\n")
        line = one_line_error(run_cli("--dsn-file", str(dsn_file)), 1)
        assert "permission denied" in line
    finally:
        await admin.execute("DROP DATABASE IF EXISTS pw_locked")
        await admin.execute("DROP ROLE IF EXISTS pw_outsider")
        await admin.close()


def test_dsn_from_environment_and_the_http_endpoints(pg: PgTarget, spawn) -> None:
    sub = spawn(
        "--web.telemetry-path",
        "/probe",
        env={"POOLWATCH_EXPORTER_DSN": pg.dsn, "POOLWATCH_EXPORTER_LOG_FORMAT": "json"},
    )
    with httpx.Client(base_url=sub.base_url) as client:
        assert client.get("/healthz").text == "ok\n"
        landing = client.get("/")
        assert "poolwatch-exporter" in landing.text and 'href="/probe"' in landing.text
        assert client.get("/metrics").status_code == 404
        assert client.post("/probe").status_code == 405
        scrape = client.get("/probe", headers={"Accept-Encoding": "gzip"})
        assert scrape.headers["content-encoding"] == "gzip"
        assert Scrape.parse(scrape.text).get("pg_up") == 1
        om = client.get("/probe", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
    stderr = sub.stop()
    assert '"msg": "poolwatch-exporter listening"' in stderr


def test_settings_defaults_and_durations() -> None:
    s = parse_settings(["--dsn", "postgresql://u@h/d"], environ={})
    assert (s.listen_host, s.listen_port, s.telemetry_path) == ("0.0.0.0", DEFAULT_PORT, "/metrics")
    assert (s.stale_threshold, s.min_interval, s.query_timeout, s.top_n) == (5.0, 1.0, 3.0, 10)
    s = parse_settings(
        [
            "--query.timeout",
            "500ms",
            "--idle-in-transaction.stale-threshold",
            "1m",
            "--web.listen-address",
            "[::1]:9999",
        ],
        environ={"POOLWATCH_EXPORTER_SCRAPE_MIN_INTERVAL": "2.5"},
    )
    assert (s.query_timeout, s.lock_timeout, s.stale_threshold, s.min_interval) == (
        0.5,
        0.5,
        60.0,
        2.5,
    )
    assert (s.listen_host, s.listen_port) == ("::1", 9999)
