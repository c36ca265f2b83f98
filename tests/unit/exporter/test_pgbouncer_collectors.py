"""Each PgBouncer collector fed plain SHOW rows (no PgBouncer): Debian's 1.18 columns, an
older and a newer column set, folding beyond the top N, one failed command."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from poolwatch.exporter.exposition import Family
from poolwatch.exporter.pgbouncer import COLLECTORS
from poolwatch.exporter.pgbouncer.collectors import config_seconds, version_label
from poolwatch.exporter.pgbouncer.snapshot import PgBouncerSnapshot
from poolwatch.exporter.target import CollectorRunner
from poolwatch.pgbouncer.console import Rows
from poolwatch.pgbouncer.target import ConsoleError

POOLS_1_18 = (
    "database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
    "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle",
    "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
)  # fmt: skip
POOLS_OLD = ("database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
             "sv_tested", "sv_login", "maxwait", "pool_mode")  # fmt: skip
DATABASES_1_18 = ("name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
                  "reserve_pool", "pool_mode", "max_connections", "current_connections",
                  "paused", "disabled")  # fmt: skip


def rows(columns: Sequence[str], *values: Sequence[Any]) -> Rows:
    out = Rows(dict(zip(columns, v, strict=True)) for v in values)
    out.columns = tuple(columns)
    return out


def pool(db: str, user: str, active: int, waiting: int, columns: Sequence[str] = POOLS_1_18):
    full = {"database": db, "user": user, "cl_active": active, "cl_waiting": waiting,
            "sv_active": 2, "sv_idle": 1, "maxwait": 1, "maxwait_us": 250000,
            "pool_mode": "transaction"}  # fmt: skip
    return [full.get(c, 0) for c in columns]


def snapshot(results: Mapping[str, Rows | ConsoleError], top_n: int = 10) -> PgBouncerSnapshot:
    base: dict[str, Rows | ConsoleError] = {
        "POOLS": rows(POOLS_1_18),
        "DATABASES": rows(DATABASES_1_18),
        "STATS": rows(("database", "total_xact_count", "total_wait_time")),
        "LISTS": rows(("list", "items")),
        "CONFIG": rows(("key", "value", "default", "changeable")),
        "VERSION": rows(("version",), ("PgBouncer 1.18.0",)),
    }
    return PgBouncerSnapshot.from_results({**base, **results}, top_n)


def collect(snap: PgBouncerSnapshot) -> dict[str, Family]:
    families: Iterable[Family] = CollectorRunner(COLLECTORS).run(snap)
    return {f.name: f for f in families}


def points(fam: Family) -> dict[tuple[str, ...], float]:
    return dict(fam.points)


def test_debian_1_18_columns_and_maxwait_with_microseconds() -> None:
    snap = snapshot({"POOLS": rows(POOLS_1_18, pool("app", "u", 3, 2))})
    fams = collect(snap)
    key = ("app", "u")
    assert points(fams["pgbouncer_pools_client_waiting_connections"]) == {key: 2.0}
    assert points(fams["pgbouncer_pools_client_active_cancel_connections"]) == {key: 0.0}
    assert points(fams["pgbouncer_pools_client_maxwait_seconds"]) == {key: 1.25}
    assert points(fams["pgbouncer_pools_info"]) == {("app", "u", "transaction"): 1.0}


def test_an_older_column_set_leaves_out_what_it_lacks() -> None:
    fams = collect(snapshot({"POOLS": rows(POOLS_OLD, pool("app", "u", 1, 0, POOLS_OLD))}))
    assert "pgbouncer_pools_client_active_cancel_connections" not in fams
    assert "pgbouncer_pools_server_being_canceled_connections" not in fams
    # no maxwait_us: whole seconds only
    assert points(fams["pgbouncer_pools_client_maxwait_seconds"]) == {("app", "u"): 1.0}


def test_newer_columns_are_ignored_and_renamed_ones_found() -> None:
    newer = (*DATABASES_1_18[:9], "max_db_connections", "current_connections",
             "max_client_connections", "paused", "disabled", "reserve_pool_size")  # fmt: skip
    databases = rows(newer, ["app", "db", 5432, "app", None, 20, 0, 5, "transaction", 40, 7,
                             100, 1, 0, 5])  # fmt: skip
    fams = collect(snapshot({"DATABASES": databases}))
    labels = ("app", "db", "5432", "app", "", "transaction")
    assert points(fams["pgbouncer_databases_max_connections"]) == {labels: 40.0}
    assert points(fams["pgbouncer_databases_reserve_pool"]) == {labels: 5.0}
    assert points(fams["pgbouncer_databases_paused"]) == {labels: 1.0}


def test_pools_beyond_the_top_n_fold_into_other() -> None:
    pools = rows(POOLS_1_18, pool("a", "u", 9, 0), pool("b", "u", 5, 1), pool("c", "u", 1, 2),
                 pool("d", "u", 0, 1))  # fmt: skip
    stats = rows(("database", "total_xact_count", "total_wait_time"),
                 ("a", 10, 1_000_000), ("b", 5, 0), ("c", 1, 500_000), ("d", 2, 500_000))  # fmt: skip
    fams = collect(snapshot({"POOLS": pools, "STATS": stats}, top_n=2))
    waiting = points(fams["pgbouncer_pools_client_waiting_connections"])
    assert waiting == {("a", "u"): 0.0, ("b", "u"): 1.0, ("other", "other"): 3.0}
    maxwait = points(fams["pgbouncer_pools_client_maxwait_seconds"])
    assert maxwait[("other", "other")] == 1.25  # the longest wait, not a sum
    wait = points(fams["pgbouncer_stats_client_wait_seconds"])
    assert wait == {("a",): 1.0, ("b",): 0.0, ("other",): 1.0}  # microseconds -> seconds


def test_a_failed_command_costs_only_its_collector() -> None:
    broken = ConsoleError("SHOW STATS failed on PgBouncer at 127.0.0.1:6432: boom")
    fams = collect(snapshot({"STATS": broken, "POOLS": rows(POOLS_1_18, pool("a", "u", 1, 0))}))
    success = points(fams["poolwatch_exporter_collector_success"])
    assert success[("pgbouncer_stats",)] == 0.0
    assert success[("pgbouncer_pools",)] == 1.0
    assert "pgbouncer_stats_sql_transactions_pooled" not in fams
    assert "pgbouncer_pools_client_active_connections" in fams


def test_config_lists_and_version() -> None:
    config = rows(("key", "value", "default", "changeable"),
                  ("max_client_conn", "100", "100", "yes"),
                  ("query_wait_timeout", "120", "120", "yes"),
                  ("server_lifetime", "3600", "3600", "yes"),
                  ("unix_socket_dir", "/tmp", "/tmp", "no"))  # fmt: skip
    lists = rows(("list", "items"), ("used_clients", 7), ("pools", 3), ("dns_names", 0))
    fams = collect(snapshot({"CONFIG": config, "LISTS": lists}))
    assert points(fams["pgbouncer_config_max_client_connections"]) == {(): 100.0}
    assert points(fams["pgbouncer_config_query_wait_timeout_seconds"]) == {(): 120.0}
    assert "pgbouncer_config_client_idle_timeout_seconds" not in fams  # not shown: left out
    assert points(fams["pgbouncer_used_clients"]) == {(): 7.0}
    assert points(fams["pgbouncer_version_info"]) == {("1.18.0",): 1.0}
    assert config_seconds("1.5 min") == 90.0 and config_seconds("/tmp") is None
    assert version_label("PgBouncer 1.24.1") == "1.24.1"
