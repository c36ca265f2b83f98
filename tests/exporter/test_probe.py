"""/probe against real servers: the embedded PostgreSQL (a named target over its Unix
socket) and a throw-away Debian PostgreSQL 15 (address targets over TCP, password auth)
side by side in one exporter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from conftest import Scrape, socket_url, with_database
from fleet_support import SUPERUSER_PASSWORD, ConnectRecorder, DebianPostgres, debian_postgres
from poolwatch.exporter.auth_modules import ProbeConfig, parse_probe_config
from poolwatch.exporter.probe import Prober
from poolwatch.exporter.settings import parse_settings
from support import PgTarget, until_async

EXPORTER_APP = "poolwatch-exporter"
WRONG_PASSWORD = "definitely-not-it-7f3a"


@pytest.fixture(scope="module")
def pg15() -> Iterator[DebianPostgres]:
    with debian_postgres(max_connections=37) as server:
        yield server


def config(
    pg: PgTarget,
    pg15: DebianPostgres,
    tmp: Path,
    *,
    named: dict[str, str] | None = None,
    allow: tuple[str, ...] = (),
    **probe: Any,
) -> ProbeConfig:
    """auth modules for both servers (and a wrong one), pg15's pw_* databases allowed."""
    data = {
        "auth_modules": {
            "local": {"type": "userpass", "userpass": {"username": "postgres"}},
            "pg15": {
                "type": "userpass",
                "userpass": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                "options": {"sslmode": "disable"},
            },
            "wrong": {"userpass": {"username": "postgres", "password": WRONG_PASSWORD}},
        },
        "probe": {
            "allowed_targets": [
                f"127.0.0.1:{pg15.port}/pw_*",
                f"127.0.0.1:{pg15.port}/postgres",
                *allow,
            ],
            "targets": {
                name: {"url": socket_url(pg.dsn, db), "auth_module": "local"}
                for name, db in (named or {}).items()
            },
            **probe,
        },
    }
    return parse_probe_config(data, tmp)


def prober(cfg: ProbeConfig, *flags: str) -> Prober:
    settings = parse_settings(["--scrape.min-interval", "0", *flags], environ={})
    return Prober(cfg, settings)


async def probe(p: Prober, **params: str) -> tuple[int, Scrape | str]:
    status, body, _ = await p.probe(urlencode(params))
    text = body.decode()
    return status, (Scrape.parse(text) if status == 200 else text)


async def make_db(admin_dsn: str) -> str:
    name = "pw_probe_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def exporter_sessions(admin_dsn: str) -> dict[str, int]:
    """The exporter's own sessions on a server, by database."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname, count(*) AS n FROM pg_stat_activity "
            "WHERE application_name = $1 GROUP BY datname",
            EXPORTER_APP,
        )
    finally:
        await conn.close()
    return {r["datname"]: int(r["n"]) for r in rows}


async def client_sessions(admin_dsn: str, database: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
            "AND backend_type = 'client backend' AND application_name <> $2",
            database,
            EXPORTER_APP,
        )
    finally:
        await conn.close()
    return int(n)


@pytest.fixture
async def open_sessions() -> AsyncIterator[Any]:
    conns: list[asyncpg.Connection] = []

    async def open_(dsn: str, n: int, app: str) -> None:
        for _ in range(n):
            conns.append(await asyncpg.connect(dsn, server_settings={"application_name": app}))

    yield open_
    for conn in conns:
        conn.terminate()


@pytest.fixture
async def probers() -> AsyncIterator[list[Prober]]:
    made: list[Prober] = []
    yield made
    for p in made:
        await p.close()


async def test_two_servers_side_by_side_equal_a_direct_query(
    pg: PgTarget, pg15: DebianPostgres, tmp_path: Path, open_sessions: Any, probers: list[Prober]
) -> None:
    db18 = await make_db(pg.dsn)
    db15 = await make_db(pg15.socket_dsn)
    await open_sessions(with_database(pg.dsn, db18), 3, "web18")
    await open_sessions(with_database(pg15.socket_dsn, db15), 5, "web15")
    p = prober(config(pg, pg15, tmp_path, named={"pg18": db18}))
    probers.append(p)

    status18, s18 = await probe(p, target="pg18")
    status15, s15 = await probe(p, target=f"127.0.0.1:{pg15.port}/{db15}", module="pg15")
    assert status18 == status15 == 200, (s18, s15)
    assert isinstance(s18, Scrape) and isinstance(s15, Scrape)
    assert s18.get("pg_up") == s15.get("pg_up") == 1.0
    # each target's numbers are its own server's
    assert s18.total("pg_sessions", datname=db18) == await client_sessions(pg.dsn, db18) == 3
    assert (
        s15.total("pg_sessions", datname=db15) == await client_sessions(pg15.socket_dsn, db15) == 5
    )
    assert s15.total("pg_sessions", application_name="web18") == 0
    assert s15.get("pg_max_connections") == 37.0
    conn = await asyncpg.connect(pg.dsn)
    try:
        max18 = int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()
    assert s18.get("pg_max_connections") == float(max18) != 37.0
    assert (await exporter_sessions(pg15.socket_dsn)).get(db15) == 1
    assert (await exporter_sessions(pg.dsn)).get(db18) == 1


async def test_unlisted_targets_are_refused_without_a_connection_attempt(
    pg: PgTarget, pg15: DebianPostgres, tmp_path: Path, probers: list[Prober]
) -> None:
    recorder = await ConnectRecorder("close").start()
    try:
        p = prober(config(pg, pg15, tmp_path))
        probers.append(p)
        before = await exporter_sessions(pg15.socket_dsn)
        for params, status, reason in (
            (
                {"target": f"127.0.0.1:{recorder.port}/postgres", "module": "pg15"},
                403,
                "not_allowed",
            ),
            ({"target": f"127.0.0.1:{pg15.port}/template1", "module": "pg15"}, 403, "not_allowed"),
            ({"target": f"localhost:{pg15.port}/postgres", "module": "pg15"}, 403, "not_allowed"),
            (
                {"target": f"127.0.0.1:{pg15.port}/postgres", "module": "nope"},
                400,
                "unknown_module",
            ),
            ({"target": f"127.0.0.1:{pg15.port}/postgres"}, 400, "unknown_module"),
            (
                {"target": f"postgres:{WRONG_PASSWORD}@127.0.0.1:{recorder.port}/postgres"},
                400,
                "bad_request",
            ),
            (
                {"target": f"127.0.0.1:{pg15.port}/postgres?host=/tmp", "module": "pg15"},
                400,
                "bad_request",
            ),
            ({"module": "pg15"}, 400, "bad_request"),
            ({"target": "pg18"}, 403, "not_allowed"),  # no such named target
        ):
            refused = dict(p.refused)
            got, text = await probe(p, **params)
            assert got == status, (params, text)
            assert p.refused[reason] == refused[reason] + 1, (params, text)
            assert isinstance(text, str) and text.startswith("probe refused: "), text
            assert WRONG_PASSWORD not in text and SUPERUSER_PASSWORD not in text
            assert text.count("\n") == 1, text
        assert p.refused["not_allowed"] == 4
        assert p.refused["unknown_module"] == 2
        assert p.refused["bad_request"] == 3
        assert recorder.accepts == 0
        assert p.entries == {}
        assert await exporter_sessions(pg15.socket_dsn) == before
    finally:
        await recorder.stop()


async def test_a_hanging_target_answers_pg_up_0_while_the_others_keep_answering(
    pg: PgTarget, pg15: DebianPostgres, tmp_path: Path, probers: list[Prober]
) -> None:
    hang = await ConnectRecorder("silent").start()
    try:
        cfg = config(pg, pg15, tmp_path, allow=(f"127.0.0.1:{hang.port}/postgres",))
        p = prober(cfg, "--query.timeout", "1500ms")
        probers.append(p)
        done: list[str] = []

        async def dead() -> tuple[int, Any]:
            result = await probe(p, target=f"127.0.0.1:{hang.port}/postgres", module="pg15")
            done.append("dead")
            return result

        dead_task = asyncio.ensure_future(dead())
        await until_async(  # the hanging server has the exporter's connect attempt
            lambda: hang.accepts,
            interval=0.01,
            what="the exporter to connect to the hanging server",
        )
        for _ in range(3):
            status, live = await probe(p, target=f"127.0.0.1:{pg15.port}/postgres", module="pg15")
            assert status == 200 and isinstance(live, Scrape) and live.get("pg_up") == 1.0
            done.append("live")
        status, scrape = await asyncio.wait_for(dead_task, 30)
        assert done == ["live", "live", "live", "dead"]
        assert status == 200 and isinstance(scrape, Scrape)
        assert scrape.get("pg_up") == 0.0
        assert scrape.get("pg_sessions") is None and not scrape.series("pg_sessions")
        # backing off: the next probe answers pg_up 0 without connecting again
        status, again = await probe(p, target=f"127.0.0.1:{hang.port}/postgres", module="pg15")
        assert isinstance(again, Scrape) and again.get("pg_up") == 0.0
        assert hang.accepts == 1
    finally:
        await hang.stop()


async def test_wrong_password_module_is_pg_up_0_and_never_shows_the_password(
    pg: PgTarget, pg15: DebianPostgres, tmp_path: Path, probers: list[Prober], caplog: Any
) -> None:
    p = prober(config(pg, pg15, tmp_path))
    probers.append(p)
    caplog.set_level("DEBUG")
    status, scrape = await probe(p, target=f"127.0.0.1:{pg15.port}/postgres", module="wrong")
    assert status == 200 and isinstance(scrape, Scrape), scrape
    assert scrape.get("pg_up") == 0.0
    assert WRONG_PASSWORD not in scrape.text
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "password authentication failed" in logged, logged
    assert f"127.0.0.1:{pg15.port}/postgres" in logged
    assert WRONG_PASSWORD not in logged
    # the right module on the same address is another target, and works
    status, scrape = await probe(p, target=f"127.0.0.1:{pg15.port}/postgres", module="pg15")
    assert isinstance(scrape, Scrape) and scrape.get("pg_up") == 1.0
    assert len(p.entries) == 2


async def test_ten_targets_ten_concurrent_scrapes_each_one_connection(
    pg: PgTarget, pg15: DebianPostgres, tmp_path: Path, probers: list[Prober]
) -> None:
    dbs18 = [await make_db(pg.dsn) for _ in range(5)]
    dbs15 = [await make_db(pg15.socket_dsn) for _ in range(5)]
    named = {f"n{i}": db for i, db in enumerate(dbs18)}
    p = prober(config(pg, pg15, tmp_path, named=named, max_concurrent_scrapes=3))
    probers.append(p)
    targets = [{"target": name} for name in named] + [
        {"target": f"127.0.0.1:{pg15.port}/{db}", "module": "pg15"} for db in dbs15
    ]
    results = await asyncio.gather(*(probe(p, **t) for t in targets for _ in range(10)))
    assert len(results) == 100
    for status, scrape in results:
        assert status == 200 and isinstance(scrape, Scrape) and scrape.get("pg_up") == 1.0
    assert len(p.entries) == 10
    for entry in p.entries.values():
        assert entry.scraper.target.source.connections_opened == 1
        assert entry.scraper.queries >= 1
    on18, on15 = await exporter_sessions(pg.dsn), await exporter_sessions(pg15.socket_dsn)
    assert {db: on18.get(db) for db in dbs18} == dict.fromkeys(dbs18, 1)
    assert {db: on15.get(db) for db in dbs15} == dict.fromkeys(dbs15, 1)
    # a second round reuses the same connections
    await asyncio.gather(*(probe(p, **t) for t in targets for _ in range(3)))
    assert all(e.scraper.target.source.connections_opened == 1 for e in p.entries.values())


async def test_idle_targets_are_closed_and_targets_are_bounded(
    pg: PgTarget, pg15: DebianPostgres, tmp_path: Path, probers: list[Prober]
) -> None:
    db1, db2, db3 = [await make_db(pg15.socket_dsn) for _ in range(3)]
    p = prober(config(pg, pg15, tmp_path, max_targets=2, idle_timeout="300ms"))
    probers.append(p)
    for db in (db1, db2):
        status, _ = await probe(p, target=f"127.0.0.1:{pg15.port}/{db}", module="pg15")
        assert status == 200
    status, text = await probe(p, target=f"127.0.0.1:{pg15.port}/{db3}", module="pg15")
    assert status == 503 and "probe.max_targets=2" in str(text)
    assert p.refused["too_many_targets"] == 1
    assert db3 not in await exporter_sessions(pg15.socket_dsn)
    # nobody probes: both close (connections too), then a new target fits
    await until_async(lambda: dict(p.entries), equals={}, what="both idle targets to close")
    assert p.idle_closed == 2
    await until_async(
        lambda: exporter_sessions(pg15.socket_dsn),
        holds=lambda on15: db1 not in on15 and db2 not in on15,
        what="the closed targets' sessions to leave the server",
    )
    status, scrape = await probe(p, target=f"127.0.0.1:{pg15.port}/{db3}", module="pg15")
    assert status == 200 and isinstance(scrape, Scrape) and scrape.get("pg_up") == 1.0
    families = {f.name: f for f in p.collect()}
    assert families["poolwatch_exporter_probe_targets"].points == [((), 1.0)]
    assert families["poolwatch_exporter_probe_connections"].points == [((), 1.0)]


async def test_a_pgbouncer_target_beside_a_postgres_one(
    pg: PgTarget, pg15: DebianPostgres, pgbouncer: Any, tmp_path: Path, probers: list[Prober]
) -> None:
    from pgbouncer_support import STATS_PASSWORD, STATS_USER

    data: dict[str, Any] = {
        "auth_modules": {
            "pgb": {"userpass": {"username": STATS_USER, "password": STATS_PASSWORD}},
            "pg15": {"userpass": {"username": "postgres", "password": SUPERUSER_PASSWORD}},
        },
        "probe": {
            "allowed_targets": [
                f"127.0.0.1:{pgbouncer.port}/pgbouncer",
                f"127.0.0.1:{pg15.port}/postgres",
            ]
        },
    }
    p = prober(parse_probe_config(data, tmp_path))
    probers.append(p)
    target = f"127.0.0.1:{pgbouncer.port}/pgbouncer"
    status, bouncer = await probe(p, target=target, module="pgb", kind="pgbouncer")
    status15, s15 = await probe(p, target=f"127.0.0.1:{pg15.port}/postgres", module="pg15")
    assert status == status15 == 200, (bouncer, s15)
    assert isinstance(bouncer, Scrape) and isinstance(s15, Scrape)
    assert bouncer.get("pgbouncer_up") == 1.0 and bouncer.get("pg_up") is None
    assert s15.get("pg_up") == 1.0 and s15.get("pgbouncer_up") is None
    rows = await asyncio.to_thread(pgbouncer.admin, "SHOW DATABASES")
    assert bouncer.total("pgbouncer_databases_pool_size") == sum(
        float(r["pool_size"]) for r in rows
    )
    # the wrong kind for a named target, and an unknown kind, connect to nothing
    status, text = await probe(p, target=target, module="pgb", kind="mysql")
    assert status == 400 and "kind must be one of pgbouncer, postgres" in str(text)
    assert len(p.entries) == 2
    assert all(e.scraper.target.source.connections_opened == 1 for e in p.entries.values())
