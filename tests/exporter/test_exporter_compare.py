"""Side by side with Debian's prometheus-postgres-exporter on the same server, same moment."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from conftest import Scrape, Sessions
from support import PgTarget, free_port, require_tool, until_async

STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)")


def lib_pq_dsn(dsn: str) -> str:
    """The test DSN for lib/pq (Go): no TLS over the local socket."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query.setdefault("sslmode", "disable")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


async def test_session_counts_agree_with_postgres_exporter(
    pg: PgTarget, exporter_factory, sessions: Sessions, database: str
) -> None:
    binary = require_tool("prometheus-postgres-exporter", "/usr/bin")
    await sessions.open(3, app="idle-app")
    in_tx = await sessions.open(2, app="tx-app")
    for conn in in_tx:
        await conn.execute("BEGIN; SELECT 1")
    busy = await sessions.open(2, app="busy-app")
    for conn in busy:
        sessions.background(conn.execute("SELECT pg_sleep(120)"))
    ours = exporter_factory()
    db = {"datname": database}
    await ours.until(lambda s: s.total("pg_sessions", **db, state="active") == 2)

    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME": lib_pq_dsn(pg.dsn)}
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def listening() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True

        await until_async(
            listening, interval=0.1, catch=(OSError,), what="postgres_exporter to listen"
        )
        async with httpx.AsyncClient() as client:
            theirs_text, our_scrape = await asyncio.gather(
                client.get(f"http://127.0.0.1:{port}/metrics"), ours.scrape()
            )
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    theirs = Scrape.parse(theirs_text.text)
    assert theirs.get("pg_up") == 1
    compared = 0
    for state in STATES:
        their_count = theirs.get(
            "pg_stat_activity_count", datname=database, state=state, server=theirs_server(theirs)
        )
        our_count = our_scrape.total("pg_sessions", **db, state=state)
        assert their_count == our_count, (state, their_count, our_count)
        compared += their_count
    assert compared == 7


def theirs_server(scrape: Scrape) -> str:
    """postgres_exporter labels each series with the server it scraped."""
    for name, labels in scrape.samples:
        if name == "pg_stat_activity_count":
            return dict(labels)["server"]
    raise AssertionError("postgres_exporter exported no pg_stat_activity_count")
