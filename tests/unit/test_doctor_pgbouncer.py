"""The PgBouncer checks of ``poolwatch doctor`` on settings a real PgBouncer would report.

The paths tests/cli/test_cli_pgbouncer.py cannot reach with one PgBouncer configuration: session
mode, a disabled query_wait_timeout, a newer PgBouncer's SHOW CONFIG with extra keys.
"""

from __future__ import annotations

from poolwatch.doctor import DoctorOptions
from poolwatch.doctor_facts import PoolSettings
from poolwatch.doctor_pgbouncer import (
    check_client_capacity,
    check_queue_wait,
    check_recycle_vs_pgbouncer,
    facts_from_config,
)

CONFIG_1_18 = {
    "pool_mode": "session",
    "max_client_conn": "100",
    "default_pool_size": "20",
    "reserve_pool_size": "0",
    "max_db_connections": "0",
    "max_user_connections": "0",
    "server_lifetime": "3600",
    "server_idle_timeout": "600",
    "query_wait_timeout": "120",
    "client_idle_timeout": "0",
}


def test_session_mode_recycle_must_let_server_lifetime_work() -> None:
    facts = facts_from_config(CONFIG_1_18, "PgBouncer 1.18.0")
    long = check_recycle_vs_pgbouncer(PoolSettings(pool_recycle=None), facts, DoctorOptions())
    assert (long.status, long.fix) == ("warn", "pool_recycle=3600 or less (server_lifetime)")
    short = check_recycle_vs_pgbouncer(PoolSettings(pool_recycle=1800), facts, DoctorOptions())
    assert short.status == "ok"
    assert "server_lifetime 3600 s" in short.summary


def test_disabled_query_wait_timeout_is_flagged() -> None:
    facts = facts_from_config({**CONFIG_1_18, "query_wait_timeout": "0"}, "PgBouncer 1.18.0")
    check = check_queue_wait(PoolSettings(pool_timeout=10), facts, DoctorOptions())
    assert check.status == "warn"
    assert "query_wait_timeout is off (0)" in check.summary
    assert "query_wait_timeout = 10" in check.fix


def test_newer_config_keys_and_missing_ones() -> None:
    newer = {**CONFIG_1_18, "max_prepared_statements": "200", "server_lifetime": "3600.5"}
    facts = facts_from_config(newer, "PgBouncer 1.23.1")
    assert facts.server_lifetime == 3600.5
    del newer["max_client_conn"]
    missing = facts_from_config(newer, "PgBouncer 1.23.1")
    assert missing.max_client_conn is None
    check = check_client_capacity(PoolSettings(pool_size=5, max_overflow=0), missing)
    assert check.status == "warn" and "no max_client_conn" in check.summary


def test_client_capacity_warns_above_85_percent() -> None:
    facts = facts_from_config(CONFIG_1_18, "PgBouncer 1.18.0")
    assert check_client_capacity(PoolSettings(pool_size=85, max_overflow=0), facts).status == "ok"
    near = check_client_capacity(PoolSettings(pool_size=86, max_overflow=0), facts)
    assert near.status == "warn" and "max_client_conn = 102" in near.fix
