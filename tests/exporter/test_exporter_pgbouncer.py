"""The exporter watching a real PgBouncer (Debian's) in front of the test PostgreSQL.

The queue: every server connection of a small pool held in an open transaction, K more
clients queue inside PgBouncer; the exporter's numbers equal SHOW POOLS at the same moment.
Then the failure modes: a restart, PAUSE, a stopped process, wrong passwords and roles.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from conftest import InProcess, Scrape, run_cli
from pgbouncer_support import (
    APP_USER,
    NOBODY_USER,
    PGBOUNCER_BIN,
    STATS_PASSWORD,
    STATS_USER,
    PgBouncer,
)
from poolwatch.metric_names import PGBOUNCER_METRICS
from poolwatch.pgbouncer.console import AdminConsole

POOL = {"database": "postgres", "user": APP_USER}
K = 3


async def client(bouncer: PgBouncer) -> asyncpg.Connection:
    """An application connection through PgBouncer (transaction mode: no statement cache)."""
    return await asyncpg.connect(bouncer.dsn(), statement_cache_size=0)


async def show_pools(bouncer: PgBouncer) -> dict[str, object]:
    async with await AdminConsole.connect(bouncer.stats_dsn()) as console:
        rows = await console.show("POOLS")
    return next(r for r in rows if r["database"] == "postgres" and r["user"] == APP_USER)


async def exporter_clients(bouncer: PgBouncer) -> int:
    """Admin-console connections the exporter holds, as PgBouncer sees them."""
    async with await AdminConsole.connect(bouncer.admin_dsn()) as console:
        rows = await console.show("CLIENTS")
    return sum(1 for r in rows if r.get("application_name") == "poolwatch-exporter")


def database_value(s: Scrape, what: str, name: str = "postgres") -> float:
    """A SHOW DATABASES metric of database ``name`` (the label ``name`` clashes with
    Scrape's own argument, so this filters by hand)."""
    metric = f"pgbouncer_databases_{what}"
    return sum(v for (n, ls), v in s.samples.items() if n == metric and ("name", name) in ls)


def installed_version() -> str:
    """``1.18.0`` from ``pgbouncer --version`` (``PgBouncer 1.18.0`` on its first line)."""
    out = subprocess.run([PGBOUNCER_BIN, "--version"], capture_output=True, text=True).stdout
    return out.split()[1]


def waiting(s: Scrape) -> float | None:
    return s.get("pgbouncer_pools_client_waiting_connections", **POOL)


async def test_clients_queued_in_pgbouncer_match_show_pools(
    pgbouncer_factory, exporter_factory
) -> None:
    bouncer = pgbouncer_factory(default_pool_size=2)
    exp: InProcess = exporter_factory(dsn="", pgbouncer=bouncer.stats_dsn())
    holders = [await client(bouncer) for _ in range(2)]
    queued = [await client(bouncer) for _ in range(K)]
    try:
        for conn in holders:  # transaction mode: an open transaction keeps its server
            await conn.execute("BEGIN; SELECT 1")
        before = await exp.until(lambda s: s.get("pgbouncer_up") == 1.0)
        wait_before = before.total("pgbouncer_stats_client_wait_seconds_total", database="postgres")
        tasks = [asyncio.ensure_future(conn.execute("SELECT 1")) for conn in queued]
        first = await exp.until(lambda s: waiting(s) == K)
        pools = await show_pools(bouncer)
        again = await exp.scrape()
        # the same moment: nothing can leave the queue while both servers are held
        assert pools["cl_waiting"] == K == waiting(again)
        assert (
            again.get("pgbouncer_pools_server_active_connections", **POOL)
            == pools["sv_active"]
            == 2
        )
        assert again.get("pgbouncer_pools_info", **POOL, pool_mode="transaction") == 1.0
        # maxwait counts microseconds: it grows between two scrapes well under a second
        start = first.get("pgbouncer_pools_client_maxwait_seconds", **POOL)
        assert start is not None
        grown = await exp.until(
            lambda s: (s.get("pgbouncer_pools_client_maxwait_seconds", **POOL) or 0) > start
        )
        assert 0 < grown.get("pgbouncer_pools_client_maxwait_seconds", **POOL) < 60
        for conn in holders:
            await conn.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        after = await exp.until(lambda s: waiting(s) == 0)
        # the queued clients' wait is counted once they got a server
        assert (
            after.total("pgbouncer_stats_client_wait_seconds_total", database="postgres")
            > wait_before
        )
        assert (
            after.total("pgbouncer_stats_sql_transactions_pooled_total", database="postgres") >= 5
        )
        assert after.get("pgbouncer_config_default_pool_size") == 2.0
        assert after.get("pgbouncer_config_max_client_connections") == 100.0
        assert after.get("pgbouncer_config_query_wait_timeout_seconds") == 120.0
        assert after.get("pgbouncer_used_clients") >= 2 + K
        assert after.get("pgbouncer_version_info", version=installed_version()) == 1.0
        assert after.get("poolwatch_exporter_collector_success", collector="pgbouncer_pools") == 1
    finally:
        for conn in holders + queued:
            conn.terminate()


async def test_one_admin_connection_however_many_scrapes(pgbouncer, exporter_factory) -> None:
    exp: InProcess = exporter_factory(dsn="", pgbouncer=pgbouncer.stats_dsn())
    scrapes = await asyncio.gather(*(exp.scrape() for _ in range(20)))
    assert all(s.get("pgbouncer_up") == 1.0 for s in scrapes)
    for _ in range(3):
        await exp.scrape()
    assert await exporter_clients(pgbouncer) == 1
    assert exp.app.pgbouncer.target.source.connections_opened == 1
    assert exp.app.pgbouncer.queries < 20 + 3  # concurrent scrapes shared a round trip


async def test_restart_goes_down_and_comes_back_without_restarting_the_exporter(
    pgbouncer, exporter_factory
) -> None:
    exp: InProcess = exporter_factory(
        "--query.timeout", "1s", dsn="", pgbouncer=pgbouncer.stats_dsn()
    )
    assert (await exp.scrape()).get("pgbouncer_up") == 1.0
    pgbouncer.stop()
    down = await asyncio.wait_for(exp.scrape(), 10)
    assert down.get("pgbouncer_up") == 0.0
    assert down.get("pgbouncer_pools_client_active_connections", **POOL) is None
    pgbouncer.start()
    await exp.until(lambda s: s.get("pgbouncer_up") == 1.0, timeout=30)
    assert exp.app.pgbouncer.target.source.connections_opened == 2
    assert await exporter_clients(pgbouncer) == 1


async def test_paused_pgbouncer_keeps_the_scrape_prompt(pgbouncer, exporter_factory) -> None:
    exp: InProcess = exporter_factory(
        "--query.timeout", "1s", dsn="", pgbouncer=pgbouncer.stats_dsn()
    )
    await exp.scrape()
    app = await client(pgbouncer)
    pgbouncer.pause("postgres")  # (a global PAUSE leaves SHOW DATABASES' paused at 0)
    stuck = asyncio.ensure_future(app.execute("SELECT 1"))  # waits until RESUME
    try:
        paused = await exp.until(lambda s: database_value(s, "paused") == 1, timeout=10)
        assert paused.get("pgbouncer_up") == 1.0
        scrape = await asyncio.wait_for(exp.scrape(), 5)  # bounded, never hung
        assert scrape.get("pgbouncer_up") == 1.0
        assert not stuck.done()
    finally:
        pgbouncer.resume("postgres")
        await asyncio.wait_for(stuck, 30)
        app.terminate()


async def test_stopped_pgbouncer_is_down_within_the_timeout(pgbouncer, exporter_factory) -> None:
    """A PgBouncer that accepts but never answers (SIGSTOP): up 0 after --query.timeout."""
    exp: InProcess = exporter_factory(
        "--query.timeout", "1s", dsn="", pgbouncer=pgbouncer.stats_dsn()
    )
    assert (await exp.scrape()).get("pgbouncer_up") == 1.0
    assert pgbouncer.process is not None
    os.kill(pgbouncer.process.pid, signal.SIGSTOP)
    try:
        down = await asyncio.wait_for(exp.scrape(), 5)
        assert down.get("pgbouncer_up") == 0.0
        again = await asyncio.wait_for(exp.scrape(), 5)  # backing off: answers at once
        assert again.get("pgbouncer_up") == 0.0
    finally:
        os.kill(pgbouncer.process.pid, signal.SIGCONT)
    await exp.until(lambda s: s.get("pgbouncer_up") == 1.0, timeout=30)


async def test_postgres_and_pgbouncer_in_one_process(pgbouncer, exporter_factory) -> None:
    exp: InProcess = exporter_factory(pgbouncer=pgbouncer.stats_dsn())
    scrape = await exp.scrape()
    assert scrape.get("pg_up") == 1.0 and scrape.get("pgbouncer_up") == 1.0
    assert scrape.text.count("# TYPE poolwatch_exporter_collector_success ") == 1
    assert scrape.get("poolwatch_exporter_collector_success", collector="sessions") == 1.0
    assert scrape.get("poolwatch_exporter_collector_success", collector="pgbouncer_stats") == 1.0
    assert (scrape.get("pg_max_connections") or 0) > 0
    pgbouncer.stop()
    half = await asyncio.wait_for(exp.scrape(), 15)
    assert half.get("pg_up") == 1.0 and half.get("pgbouncer_up") == 0.0


def test_wrong_admin_password_is_one_line_without_it(pgbouncer) -> None:
    secret = "Wr0ng-pass-Zq"
    url = pgbouncer.dsn("pgbouncer", STATS_USER, secret)
    done = run_cli("--pgbouncer.dsn", url, "--web.listen-address", "127.0.0.1:0")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refused the password" in lines[0] and STATS_USER in lines[0]
    assert secret not in done.stderr and STATS_PASSWORD not in done.stderr


def test_role_that_is_neither_stats_nor_admin_user_gets_a_clear_error(pgbouncer) -> None:
    done = run_cli(
        "--pgbouncer.dsn", pgbouncer.dsn("pgbouncer", NOBODY_USER), "--web.listen-address", ":0"
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "stats_users" in lines[0] and NOBODY_USER in lines[0]


def test_pgbouncer_dsn_from_file_and_env(pgbouncer, tmp_path, spawn) -> None:
    import httpx

    dsn_file = tmp_path / "pgbouncer.dsn"
    dsn_file.write_text(pgbouncer.stats_dsn() + "\n")
    sub = spawn("--pgbouncer.dsn-file", str(dsn_file))
    body = httpx.get(sub.base_url + "/metrics", timeout=10).text
    assert "pgbouncer_up 1.0" in body and "\npg_up" not in body
    sub = spawn(env={"POOLWATCH_EXPORTER_PGBOUNCER_DSN": pgbouncer.stats_dsn()})
    assert "pgbouncer_up 1.0" in httpx.get(sub.base_url + "/metrics", timeout=10).text
    both = run_cli("--pgbouncer.dsn", "x", "--pgbouncer.dsn-file", str(dsn_file))
    assert both.returncode == 2 and "--pgbouncer.dsn-file" in both.stderr


def pgbouncer_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    start = text.index("## PgBouncer metrics")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_pgbouncer_metric_is_documented_in_its_section() -> None:
    section = pgbouncer_section()
    for spec in PGBOUNCER_METRICS:
        assert f"`{spec.name}`" in section, spec.name
        for label in spec.labels:
            assert label in section


async def test_served_pgbouncer_metrics_match_the_contract(pgbouncer, exporter_factory) -> None:
    """On Debian's PgBouncer every metric of the contract is served, with its type, HELP
    and labels (1.18 has every column the contract names)."""
    exp: InProcess = exporter_factory(dsn="", pgbouncer=pgbouncer.stats_dsn())
    scrape = await exp.scrape()
    specs = {spec.name.removesuffix("_total"): spec for spec in PGBOUNCER_METRICS}
    served = {
        fam.name: fam
        for fam in text_string_to_metric_families(scrape.text)
        if fam.name.startswith("pgbouncer_")
    }
    for name, fam in served.items():
        assert name in specs, f"{name} is served but not in PGBOUNCER_METRICS"
        spec = specs[name]
        assert (fam.type, fam.documentation) == (spec.type, spec.help), name
        for sample in fam.samples:
            assert set(sample.labels) == set(spec.labels), (name, sample.labels)
    assert set(specs) == set(served)
