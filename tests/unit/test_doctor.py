"""``poolwatch doctor``'s checks (``poolwatch.doctor``) fed plain settings and server facts.

tests/cli/test_cli_doctor.py runs the command against a real server; here every branch of
the checks is reached with facts written down, and the facts reader with rows written down.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest

from poolwatch.doctor import (
    Check,
    DoctorOptions,
    check_capacity,
    check_idle_in_transaction,
    check_pool_timeout,
    check_pre_ping,
    check_prepared_statements,
    check_recycle,
    check_server_timeout,
    report_dict,
    run_checks,
    summary_counts,
)
from poolwatch.doctor_facts import (
    IDLE_IN_TRANSACTION_SQL,
    SERVER_FACTS_SQL,
    IdleInTransaction,
    PoolSettings,
    ServerFacts,
    collect_facts,
)

FACTS = ServerFacts(
    server_version="16.4",
    max_connections=100,
    superuser_reserved=3,
    reserved_connections=0,
    idle_in_transaction_timeout_ms=5000,
    statement_timeout_ms=30000,
    client_connections=4,
    database="shop",
    role="app",
    sees_all_sessions=True,
)
GOOD = PoolSettings(pool_size=5, max_overflow=2, pool_timeout=5, pool_recycle=1800,
                    pool_pre_ping=True, workers=2)  # fmt: skip
NO_OPTIONS = DoctorOptions()


def idle(pid: int, seconds: float) -> IdleInTransaction:
    return IdleInTransaction(pid, "app", "shop", "api", "idle in transaction", seconds, seconds + 1)


def test_good_settings_pass_every_check() -> None:
    checks = run_checks(GOOD, FACTS, NO_OPTIONS)
    assert [c.status for c in checks] == ["ok"] * 8, [(c.id, c.summary) for c in checks]
    assert summary_counts(checks) == (0, 0)


def test_capacity_fails_past_the_usable_connections_and_suggests_the_formula() -> None:
    check = check_capacity(
        replace(GOOD, pool_size=40, max_overflow=10, workers=2), FACTS, NO_OPTIONS
    )
    assert check.status == "fail"
    assert "(40 + 10) x 2 workers = 100 at peak; the server allows 97" in check.summary
    # floor((100 - 10 admin slots) / 2) - 10 = 35
    assert check.fix.startswith("pool_size=35 (floor((100 - 10) / 2) - 10")


def test_capacity_warns_when_it_fits_but_leaves_no_admin_slots() -> None:
    check = check_capacity(
        replace(GOOD, pool_size=42, max_overflow=5, workers=2), FACTS, NO_OPTIONS
    )
    assert check.status == "warn"  # 94 at peak: under the 97 usable, over 100 - 10 admin
    assert "fewer than 10 slots for admin" in check.summary


def test_capacity_without_room_for_a_pool_suggests_fewer_workers_or_pgbouncer() -> None:
    check = check_capacity(replace(GOOD, max_overflow=10, workers=20), FACTS, NO_OPTIONS)
    assert check.status == "fail"
    assert "fewer workers or a smaller max_overflow" in check.fix and "PgBouncer" in check.fix


def test_capacity_behind_pgbouncer_transaction_mode_is_pgbouncers_to_fit() -> None:
    many = replace(GOOD, pool_size=100, workers=8)
    assert check_capacity(many, FACTS, DoctorOptions(pgbouncer="transaction")).status == "ok"
    assert check_capacity(many, FACTS, NO_OPTIONS).status == "fail"


def test_pre_ping_off_fails_except_behind_pgbouncer_transaction_mode() -> None:
    off = replace(GOOD, pool_pre_ping=False)
    assert check_pre_ping(off, NO_OPTIONS).status == "fail"
    assert check_pre_ping(off, DoctorOptions(pgbouncer="transaction")).status == "ok"


@pytest.mark.parametrize(
    ("recycle", "proxy", "status", "words"),
    [
        (None, None, "warn", "pool_recycle is off"),
        (1800, None, "ok", "pass --proxy-idle-timeout"),
        (1800, 600, "fail", "pool_recycle=450 (75 % of the proxy idle timeout)"),
        (None, 600, "fail", "pool_recycle=450"),
        (450, 600, "ok", "<= 450 s"),
    ],
)
def test_recycle_against_the_proxy_idle_timeout(
    recycle: float | None, proxy: float | None, status: str, words: str
) -> None:
    check = check_recycle(
        replace(GOOD, pool_recycle=recycle), DoctorOptions(proxy_idle_timeout=proxy)
    )
    assert check.status == status
    assert words in check.summary + check.fix


@pytest.mark.parametrize(
    ("timeout", "sla", "status"),
    [(5, None, "ok"), (30, None, "warn"), (5, 2, "fail"), (1, 2, "ok")],
)
def test_pool_timeout_against_the_baseline_and_the_sla(
    timeout: float, sla: float | None, status: str
) -> None:
    assert (
        check_pool_timeout(replace(GOOD, pool_timeout=timeout), DoctorOptions(sla=sla)).status
        == status
    )


def test_a_pool_timeout_over_the_sla_suggests_half_of_it() -> None:
    check = check_pool_timeout(replace(GOOD, pool_timeout=5), DoctorOptions(sla=1.5))
    assert check.fix.startswith("pool_timeout=0.75 ")


def test_prepared_statements_matter_only_for_asyncpg_behind_pgbouncer_transaction_mode() -> None:
    behind = DoctorOptions(pgbouncer="transaction")
    assert check_prepared_statements(GOOD, NO_OPTIONS).status == "ok"
    assert check_prepared_statements(GOOD, behind).status == "fail"
    assert check_prepared_statements(replace(GOOD, driver="psycopg"), behind).status == "ok"
    off = replace(GOOD, prepared_statements=False)
    assert check_prepared_statements(off, behind).status == "ok"
    unique = replace(off, unique_statement_names=True)
    assert check_prepared_statements(unique, behind).status == "warn"


def test_an_unset_server_timeout_fails_with_the_sql_that_sets_it() -> None:
    check = check_server_timeout("statement_timeout", 0, FACTS, "30s")
    assert check.status == "fail"
    assert "for role app on database shop" in check.summary
    assert "ALTER DATABASE shop SET statement_timeout = '30s'" in check.fix
    assert "'statement_timeout': '30000'" in check.fix
    assert check_server_timeout("statement_timeout", 30000, FACTS, "30s").summary == (
        "statement_timeout = 30 s"
    )


def test_sessions_idle_in_transaction_past_the_threshold_fail_and_are_listed() -> None:
    facts = replace(
        FACTS, idle_in_transaction=[idle(11, 2.0), *(idle(20 + i, 9.0) for i in range(12))]
    )
    check = check_idle_in_transaction(facts, NO_OPTIONS)
    assert check.status == "fail"
    assert check.summary.startswith("12 sessions idle in transaction for 5 s or more")
    assert len(check.details) == 11 and check.details[-1] == "... and 2 more"
    assert check.details[0].startswith("pid 20 app@shop app=api idle in transaction for 9.0 s")
    brief = check_idle_in_transaction(
        replace(FACTS, idle_in_transaction=[idle(11, 2.0)]), NO_OPTIONS
    )
    assert brief.status == "ok" and "1 briefly (< 5 s)" in brief.summary


def test_a_role_that_sees_only_its_sessions_is_told_so() -> None:
    check = check_idle_in_transaction(replace(FACTS, sees_all_sessions=False), NO_OPTIONS)
    assert "grant pg_monitor to see all" in check.summary


def test_summary_counts_failures_then_warnings() -> None:
    checks = [Check("a", "ok", ""), Check("b", "warn", ""), Check("c", "fail", ""),
              Check("d", "fail", "")]  # fmt: skip
    assert summary_counts(checks) == (2, 1)


def test_report_dict_is_json_ready_and_counts_what_it_lists() -> None:
    checks = [*run_checks(GOOD, FACTS, NO_OPTIONS), Check("extra", "warn", "a warning")]
    report = json.loads(
        json.dumps(report_dict("postgresql://app@db/shop", GOOD, FACTS, NO_OPTIONS, checks))
    )
    assert [c["id"] for c in report["checks"]] == [c.id for c in checks]
    assert (report["problems"], report["warnings"]) == (0, 1)
    assert (report["server"]["reserved"], report["server"]["usable"]) == (3, 97)
    assert report["settings"]["pool_size"] == 5 and report["options"]["pgbouncer"] == "none"


def test_facts_are_read_from_the_two_queries_rows() -> None:
    rows = {
        SERVER_FACTS_SQL: [
            {
                "server_version": "17.0", "max_connections": 50, "superuser_reserved": 3,
                "reserved_connections": 2, "idle_in_transaction_timeout_ms": 0,
                "statement_timeout_ms": 0, "client_connections": 7, "database": "d",
                "role": "r", "sees_all_sessions": None,
            }
        ],
        IDLE_IN_TRANSACTION_SQL: [
            {
                "pid": 42, "usename": "r", "datname": "d", "application_name": "",
                "state": "idle in transaction (aborted)", "idle_seconds": 7.5,
                "transaction_seconds": 8.0,
            }
        ],
    }  # fmt: skip
    asked: list[str] = []

    async def fetch(sql: str) -> list[dict[str, Any]]:
        asked.append(sql)
        return rows[sql]

    facts = asyncio.run(collect_facts(fetch))
    assert asked == [SERVER_FACTS_SQL, IDLE_IN_TRANSACTION_SQL]
    assert (facts.reserved, facts.usable) == (5, 45)  # superuser + reserved_connections (16+)
    assert facts.sees_all_sessions is False  # NULL from the server reads as "no"
    assert facts.idle_in_transaction == [
        IdleInTransaction(42, "r", "d", "", "idle in transaction (aborted)", 7.5, 8.0)
    ]
