"""pg_up means "the server answered": a locked catalog degrades the scrape, it does not
make the server look down; a failing collector costs only its own families."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import asyncpg
import pytest

from conftest import Scrape, Sessions
from poolwatch.exporter.collectors.locks import LocksCollector
from poolwatch.exporter.exposition import Family
from support import PgTarget


def apps_sessions(scrape: Scrape, database: str, app: str) -> float | None:
    return scrape.get(
        "pg_sessions", datname=database, usename="postgres", application_name=app, state="idle"
    )


@pytest.mark.parametrize("catalog", ["pg_database", "pg_authid"])
async def test_a_locked_catalog_degrades_the_scrape_and_keeps_pg_up(
    exporter_factory, sessions: Sessions, database: str, pg: PgTarget, catalog: str
) -> None:
    exp = exporter_factory()
    await sessions.open(3, app="pw-degraded")
    before = await exp.until(lambda s: apps_sessions(s, database, "pw-degraded") == 3)
    assert before.get("poolwatch_exporter_degraded") == 0
    assert before.get("poolwatch_exporter_sees_all_sessions") == 1

    locker = await asyncpg.connect(pg.dsn, server_settings={"application_name": "pw-locker"})
    try:
        await locker.execute("BEGIN")
        await locker.execute(f"LOCK TABLE pg_catalog.{catalog} IN ACCESS EXCLUSIVE MODE")
        for _ in range(2):  # the first scrape meets the lock, the second knows about it
            during = await exp.scrape()
            assert during.get("pg_up") == 1
            assert during.get("poolwatch_exporter_degraded") == 1
            assert apps_sessions(during, database, "pw-degraded") == 3  # names from the cache
            assert during.get("pg_max_connections") > 0
            assert during.get("poolwatch_exporter_sees_all_sessions") == 1  # the last answer
            assert during.get("poolwatch_exporter_scrape_errors_total") == 0
            for name in ("connections", "sessions", "locks", "transactions"):
                assert during.get("poolwatch_exporter_collector_success", collector=name) == 1
    finally:
        await locker.execute("ROLLBACK")
        await locker.close()

    after = await exp.scrape()
    assert after.get("pg_up") == 1
    assert after.get("poolwatch_exporter_degraded") == 0
    assert apps_sessions(after, database, "pw-degraded") == 3


class HalfBrokenLocks:
    """The real locks collector with a bug after its first family."""

    name = "locks"

    def __init__(self) -> None:
        self.real = LocksCollector()

    def collect(self, snapshot: Any, fold: Any) -> Iterable[Family]:
        families = iter(self.real.collect(snapshot, fold))
        yield next(families)
        raise ValueError("a bug in the locks collector")


async def test_a_failing_collector_costs_only_its_own_families(
    exporter_factory, sessions: Sessions, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    exp = exporter_factory()
    await sessions.open(2, app="pw-isolated")
    runner = exp.app.scraper.runner
    working = runner.collectors
    runner.collectors = tuple(HalfBrokenLocks() if c.name == "locks" else c for c in working)
    caplog.set_level(logging.INFO, logger="poolwatch.exporter.collectors")

    for _ in range(2):
        scrape = await exp.until(lambda s: apps_sessions(s, database, "pw-isolated") == 2)
        assert scrape.get("pg_up") == 1
        assert scrape.get("poolwatch_exporter_scrape_errors_total") == 0
        assert scrape.get("pg_max_connections") > 0
        assert scrape.get("poolwatch_exporter_collector_success", collector="locks") == 0
        for name in ("connections", "sessions", "transactions"):
            assert scrape.get("poolwatch_exporter_collector_success", collector=name) == 1
        assert scrape.get("poolwatch_exporter_collector_duration_seconds", collector="locks") >= 0
        # none of the locks families, not even the one it yielded before failing
        assert "# TYPE pg_lock_waiting_sessions" not in scrape.text
        assert "# TYPE pg_idle_in_transaction_sessions" in scrape.text
    assert sum("collector failed" in r.getMessage() for r in caplog.records) == 1

    runner.collectors = working
    fixed = await exp.scrape()
    assert fixed.get("poolwatch_exporter_collector_success", collector="locks") == 1
    assert "# TYPE pg_lock_waiting_sessions" in fixed.text
    assert any("works again" in r.getMessage() for r in caplog.records)
