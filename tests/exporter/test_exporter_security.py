"""Security: wrong passwords, secret redaction, least-privilege roles, TLS + basic auth."""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import asyncpg
import bcrypt
import httpx
import pytest

from conftest import Scrape, Sessions, run_cli, with_database
from support import PgTarget, require_tool

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exporter.md"
SECRET = "Sup3r-Secret_pw"


async def _admin(pg: PgTarget) -> asyncpg.Connection:
    return await asyncpg.connect(pg.dsn)


@pytest.fixture
async def scram_role(pg: PgTarget):
    """A role that must log in with a scram-sha-256 password over the local socket."""
    local = pg.need_local()
    admin = await _admin(pg)
    hba = local.pgdata / "pg_hba.conf"
    original = hba.read_text()
    try:
        await admin.execute("DROP ROLE IF EXISTS pw_scram")
        await admin.execute(
            f"SET password_encryption = 'scram-sha-256'; "
            f"CREATE ROLE pw_scram LOGIN PASSWORD '{SECRET}'; GRANT pg_monitor TO pw_scram"
        )
        hba.write_text("local all pw_scram scram-sha-256\n" + original)
        local.reload()
        yield "pw_scram"
    finally:
        hba.write_text(original)
        local.reload()
        await admin.execute("DROP ROLE IF EXISTS pw_scram")
        await admin.close()


async def test_wrong_password_is_one_clear_line_without_the_password(
    pg: PgTarget, scram_role: str, exporter_factory
) -> None:
    wrong = "Wr0ng-" + SECRET
    bad_dsn = with_database(pg.dsn, "postgres", user=scram_role, password=wrong)
    result = run_cli("--dsn", bad_dsn, "--web.listen-address", "127.0.0.1:0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "password authentication failed" in lines[0]
    assert "Traceback" not in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert f"{scram_role}:***@" in lines[0]
    # The right password works (the role is a least-privilege monitor).
    good = exporter_factory(dsn=with_database(pg.dsn, "postgres", scram_role, SECRET))
    assert (await good.scrape()).get("pg_up") == 1


async def test_password_never_reaches_logs_metrics_or_landing_page(
    pg: PgTarget, scram_role: str, spawn
) -> None:
    wrong = "Wr0ng-" + SECRET
    bad_dsn = with_database(pg.dsn, "postgres", user=scram_role, password=wrong)
    sub = spawn(
        "--no-startup.connect-check",
        "--log.format",
        "json",
        "--log.level",
        "debug",
        env={"POOLWATCH_EXPORTER_DSN": bad_dsn},
    )
    with httpx.Client(base_url=sub.base_url) as client:
        metrics = client.get("/metrics").text
        landing = client.get("/").text
        missing = client.get("/nope").text
    stderr = sub.stop()
    assert Scrape.parse(metrics).get("pg_up") == 0
    assert f"{scram_role}:***@" in landing
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any("password authentication failed" in str(rec) for rec in logs), stderr
    for text in (metrics, landing, missing, stderr):
        assert wrong not in text and SECRET not in text


def _role_sql_from_docs() -> str:
    match = re.search(r"```sql\n(.*?CREATE ROLE.*?)```", DOCS.read_text(), re.S)
    assert match, "docs/exporter.md must show the least-privilege role as a ```sql block"
    return match.group(1)


async def test_documented_least_privilege_role_sees_everything(
    pg: PgTarget, exporter_factory, sessions: Sessions, database: str
) -> None:
    sql = _role_sql_from_docs().replace("poolwatch_exporter", "pw_docs_role")
    admin = await _admin(pg)
    try:
        await admin.execute("DROP ROLE IF EXISTS pw_docs_role")
        await admin.execute(sql)
        (other,) = await sessions.open(1, app="someone-else")
        await other.execute("BEGIN; SELECT 1")
        password = re.search(r"PASSWORD '([^']*)'", sql)
        dsn = with_database(
            pg.dsn, "postgres", "pw_docs_role", password.group(1) if password else ""
        )
        exp = exporter_factory(dsn=dsn)
        scrape = await exp.scrape()
        await exp.app.database.close()
    finally:
        await admin.execute("DROP ROLE IF EXISTS pw_docs_role")
        await admin.close()
    assert scrape.get("pg_up") == 1
    assert scrape.get("poolwatch_exporter_sees_all_sessions") == 1
    assert scrape.get("poolwatch_exporter_hidden_sessions") == 0
    assert (
        scrape.get(
            "pg_idle_in_transaction_sessions", datname=database, application_name="someone-else"
        )
        == 1
    )


async def test_role_without_pg_monitor_says_so_once(
    pg: PgTarget, exporter_factory, sessions: Sessions, database: str, caplog
) -> None:
    admin = await _admin(pg)
    await admin.execute("DROP ROLE IF EXISTS pw_nomon; CREATE ROLE pw_nomon LOGIN")
    try:
        idle = await sessions.open(2, app="app-a")
        await idle[0].execute("BEGIN; SELECT 1")
        exp = exporter_factory(dsn=with_database(pg.dsn, "postgres", "pw_nomon"))
        with caplog.at_level(logging.WARNING, logger="poolwatch.exporter"):
            scrapes = [await exp.scrape() for _ in range(3)]
        await exp.app.database.close()
    finally:
        await admin.execute("DROP ROLE IF EXISTS pw_nomon")
        await admin.close()
    scrape = scrapes[-1]
    assert scrape.get("pg_up") == 1
    assert scrape.get("poolwatch_exporter_sees_all_sessions") == 0
    assert scrape.get("poolwatch_exporter_hidden_sessions") >= 2
    # Not silently undercounted: the sessions are there, with state "unknown".
    assert (
        scrape.get(
            "pg_sessions",
            datname=database,
            usename="postgres",
            application_name="app-a",
            state="unknown",
        )
        == 2
    )
    warnings = [r for r in caplog.records if "cannot see other roles' sessions" in r.getMessage()]
    assert len(warnings) == 1


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_and_basic_auth_with_real_https_requests(pg: PgTarget, spawn, tmp_path: Path) -> None:
    cert, _key = _self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    sub = spawn(
        "--dsn",
        pg.dsn,
        "--web.config.file",
        str(web),
        "--web.read-header-timeout",
        "1s",
        scheme="https",
    )
    port = int(sub.base_url.rsplit(":", 1)[1])
    # a client that never starts its TLS handshake is closed by the handshake timeout
    with socket.create_connection(("127.0.0.1", port)) as stalled:
        stalled.settimeout(10)
        start = time.monotonic()
        assert stalled.recv(1) == b""
        assert time.monotonic() - start < 4.0
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=sub.base_url, verify=trust) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", auth=("prometheus", "wrong")).status_code == 401
        assert client.get("/metrics", auth=("nobody", "scrape-pass")).status_code == 401
        assert client.get("/").status_code == 401
        ok = client.get("/metrics", auth=("prometheus", "scrape-pass"))
        assert ok.status_code == 200
        assert Scrape.parse(ok.text).get("pg_up") == 1
        assert client.get("/healthz").text == "ok\n"  # liveness needs no credentials
    with httpx.Client() as plain, pytest.raises(httpx.HTTPError):
        plain.get(sub.base_url.replace("https://", "http://") + "/metrics")
    with httpx.Client(base_url=sub.base_url, verify=trust) as client:  # still serving
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
    check = run_cli(
        "--healthcheck",
        env={
            "POOLWATCH_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "POOLWATCH_EXPORTER_WEB_CONFIG_FILE": str(web),
        },
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "healthy: https://" in check.stdout
    stderr = sub.stop()
    assert "Traceback" not in stderr
    assert "level=warn" not in stderr and "level=error" not in stderr, stderr
