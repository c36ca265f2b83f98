"""Grafana dashboards, checked as far as possible without Grafana.

Structure (fixed uid, tags, current schemaVersion, variables datasource -> job -> instance ->
pool/datname/database, or datasource -> pg_server -> job -> pool for the chain view), unique
panel ids, grid positions inside 24 columns without overlaps, the
datasource variable on every panel and query, units and descriptions everywhere, thresholds
that match the alert rules, the JSON in step with dashboards/generate.py, and every query
accepted by a real Prometheus (variables substituted).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from poolwatch import thresholds as t
from prom_support import (
    DASHBOARDS_DIR,
    Process,
    alert_rules,
    dashboard_exprs,
    dashboard_panels,
    load_dashboards,
    load_generator,
    prom_api,
    promql_selectors,
    start_prometheus,
    substitute_variables,
)
from support import require_tool

DASHBOARDS = load_dashboards()
# filename -> (uid, title, template variables after "datasource", extra tags)
EXPECTED = {
    "sqlalchemy-pool.json": (
        "poolwatch-sqlalchemy-pool",
        "SQLAlchemy pool",
        ("job", "instance", "pool"),
        (),
    ),
    "postgresql-sessions.json": (
        "poolwatch-postgresql-sessions",
        "PostgreSQL sessions",
        ("job", "instance", "datname"),
        (),
    ),
    "pgbouncer.json": (
        "poolwatch-pgbouncer",
        "PgBouncer",
        ("job", "instance", "database"),
        ("pgbouncer",),
    ),
    "connection-chain.json": (
        "poolwatch-connection-chain",
        "Connection chain",
        ("pg_server", "job", "pool"),
        ("pgbouncer",),
    ),
}
# The variables every query of a dashboard must filter by (name=~"$name"); the chain view
# selects every tier by pg_server, the app tier also by job and pool.
FILTERS = {
    "sqlalchemy-pool.json": ("job", "instance", "pool"),
    "postgresql-sessions.json": ("job", "instance"),
    "pgbouncer.json": ("job", "instance"),
    "connection-chain.json": ("pg_server",),
}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
# Panels the issue asks for, by title.
REQUIRED_PANELS = {
    "sqlalchemy-pool.json": [
        "Checked out vs capacity",
        "Utilization",
        "Idle connections",
        "Overflow connections",
        "Waiting callers",
        "Checkout wait p50 / p95 / p99",
        "Checkout wait distribution",
        "Hold time p50 / p95 / p99",
        "Checkouts vs checkins",
        "Timeouts and connect errors",
        "Invalidations by reason",
        "Leaks",
        "Oldest checkout",
        "Connection budget per server",
        "Budget used",
    ],
    "postgresql-sessions.json": [
        "Sessions by state",
        "Sessions by database",
        "Sessions by application",
        "Headroom to max_connections",
        "Idle in transaction sessions",
        "Longest idle in transaction",
        "Stale idle in transaction",
        "Lock waits",
        "Longest lock wait",
        "Blocked vs blocking",
        "Longest transaction",
        "Longest query",
        "PostgreSQL reachable",
        "Exporter scrape duration",
    ],
    "pgbouncer.json": [
        "PgBouncer reachable",
        "Clients active",
        "Clients waiting",
        "Longest wait (maxwait)",
        "Server connections",
        "Clients vs max_client_conn",
        "Mean queue wait per transaction",
        "Databases: pool_size vs current connections",
    ],
    "connection-chain.json": [
        "App: callers waiting",
        "PgBouncer: clients waiting",
        "PostgreSQL: connections used",
        "App: checked out vs capacity",
        "App: callers waiting",
        "PgBouncer: clients active / waiting",
        "PgBouncer: longest wait",
        "PgBouncer: server connections vs pool_size",
        "PostgreSQL: sessions by state",
        "Budget per tier",
    ],
}
# Panels of the chain view that show one tier of it (app, PgBouncer, PostgreSQL).
CHAIN_TIERS = {
    "App: checked out vs capacity": "sqlalchemy_pool_checked_out",
    "PgBouncer: clients active / waiting": "pgbouncer_pools_client_waiting_connections",
    "PgBouncer: longest wait": "pgbouncer_pools_client_maxwait_seconds",
    "PgBouncer: server connections vs pool_size": "pgbouncer_pools_server_active_connections",
    "PostgreSQL: sessions by state": "pg_sessions",
}
# Panels that deliberately span every job/instance (the budget is per server).
# The pool's server sessions come from the exporter's job, matched by application_name.
UNFILTERED_PANELS = {
    "Connection budget per server",
    "Budget used",
    "Checked out vs server sessions",
    "Idle in transaction, by pool",
}
# (dashboard, panel title) -> the threshold (poolwatch.thresholds) the panel must draw
THRESHOLDS = {
    ("sqlalchemy-pool.json", "Utilization"): t.POOL_NEAR_CAPACITY,
    ("sqlalchemy-pool.json", "Highest pool utilization"): t.POOL_NEAR_CAPACITY,
    ("sqlalchemy-pool.json", "Checkout wait p50 / p95 / p99"): t.POOL_CHECKOUT_SLOW,
    ("sqlalchemy-pool.json", "Invalidations by reason"): t.POOL_INVALIDATION_BURST,
    ("sqlalchemy-pool.json", "Oldest checkout"): t.POOL_CHECKINS_LAGGING,
    ("postgresql-sessions.json", "Lock waits"): t.POSTGRES_LOCK_WAITS,
    ("postgresql-sessions.json", "Connections used"): t.POSTGRES_CONNECTIONS_WARNING,
    ("postgresql-sessions.json", "Connections used (ratio)"): t.POSTGRES_CONNECTIONS_CRITICAL,
    ("pgbouncer.json", "Longest wait now"): t.PGBOUNCER_WAIT_SLOW,
    ("pgbouncer.json", "Longest wait (maxwait)"): t.PGBOUNCER_WAIT_SLOW,
    ("pgbouncer.json", "Client connections used"): t.PGBOUNCER_CLIENT_CONNECTIONS,
    ("connection-chain.json", "App: checkout wait p95"): t.POOL_CHECKOUT_SLOW,
    ("connection-chain.json", "PgBouncer: longest wait now"): t.PGBOUNCER_WAIT_SLOW,
    ("connection-chain.json", "PgBouncer: longest wait"): t.PGBOUNCER_WAIT_SLOW,
    ("connection-chain.json", "PostgreSQL: connections used"): t.POSTGRES_CONNECTIONS_WARNING,
}
# Panels whose families have no series on a quiet server: they read 0 there instead of
# "No data", but only for an exporter that reached its server.
QUIET_AS_ZERO_PANELS = {
    "Stale idle in transaction",
    "Idle in transaction sessions",
    "Longest idle in transaction",
    "Lock waits",
    "Longest lock wait",
    "Blocked vs blocking",
    "Longest transaction",
    "Longest query",
}

params = pytest.mark.parametrize("filename", sorted(EXPECTED))


def panel(filename: str, title: str) -> dict[str, Any]:
    matches = [p for p in dashboard_panels(DASHBOARDS[filename]) if p["title"] == title]
    assert len(matches) == 1, f"{filename}: {len(matches)} panels titled {title!r}"
    return matches[0]


def test_every_dashboard_exists() -> None:
    assert set(DASHBOARDS) == set(EXPECTED)


def test_json_matches_generator() -> None:
    module = load_generator()
    for filename, builder in module.DASHBOARDS.items():
        committed = (DASHBOARDS_DIR / filename).read_text()
        assert committed == module.render(builder), (
            f"dashboards/{filename} differs from dashboards/generate.py: run it and commit"
        )


@params
def test_dashboard_envelope(filename: str) -> None:
    dash = DASHBOARDS[filename]
    uid, title, _, tags = EXPECTED[filename]
    assert dash["uid"] == uid
    assert dash["title"] == title
    assert dash["tags"] == ["poolwatch", "postgresql", "sqlalchemy", *tags]
    assert dash["schemaVersion"] >= 39
    assert dash.get("id") is None, "an exported id would clash on import"
    assert dash["description"]


@params
def test_variables(filename: str) -> None:
    variables = DASHBOARDS[filename]["templating"]["list"]
    names = [v["name"] for v in variables]
    assert names == ["datasource", *EXPECTED[filename][2]]
    assert variables[0]["type"] == "datasource"
    assert variables[0]["query"] == "prometheus"
    for var in variables[1:]:
        assert var["type"] == "query"
        assert var["datasource"] == DS_REF
        assert var["query"]["query"].startswith("label_values(")
        assert var["definition"] == var["query"]["query"]
    # Each variable is filtered by the ones before it.
    for before, var in zip(names[1:], variables[2:], strict=False):
        assert f'{before}=~"${before}"' in var["query"]["query"], var["name"]


@params
def test_panel_ids_unique(filename: str) -> None:
    ids = [p["id"] for p in dashboard_panels(DASHBOARDS[filename])]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)


@params
def test_grid_positions_fit_and_do_not_overlap(filename: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in DASHBOARDS[filename]["panels"]:
        pos = p["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            assert (pos["w"], pos["h"], pos["x"]) == (24, 1, 0)
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


@params
def test_panels_are_complete(filename: str) -> None:
    panels = [p for p in dashboard_panels(DASHBOARDS[filename]) if p["type"] != "row"]
    assert len(panels) >= 12
    for p in panels:
        where = f"{filename}: {p['title']!r}"
        assert p["datasource"] == DS_REF, where
        assert p["description"].strip(), where
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert p["targets"], where
        for tgt in p["targets"]:
            assert tgt["datasource"] == DS_REF, where
            assert tgt["expr"].strip(), where
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), where


@params
def test_queries_use_the_variables(filename: str) -> None:
    for p in dashboard_panels(DASHBOARDS[filename]):
        if p["type"] == "row" or p["title"] in UNFILTERED_PANELS:
            continue
        for tgt in p["targets"]:
            for name in FILTERS[filename]:
                assert f'{name}=~"${name}"' in tgt["expr"], f"{p['title']!r}: {tgt['expr']}"


@params
def test_required_panels_present(filename: str) -> None:
    titles = {p["title"] for p in dashboard_panels(DASHBOARDS[filename])}
    missing = [t for t in REQUIRED_PANELS[filename] if t not in titles]
    assert not missing


def _threshold_values(p: dict[str, Any]) -> list[float]:
    steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in steps if s["value"] is not None]


@pytest.mark.parametrize(("where", "threshold"), sorted(THRESHOLDS.items()))
def test_thresholds_match_alerts(where: tuple[str, str], threshold: t.Threshold) -> None:
    filename, title = where
    p = panel(filename, title)
    assert threshold.value in _threshold_values(p), f"{title}: {threshold.value} not drawn"
    rules = [
        r
        for r in alert_rules()
        if r["alert"] == threshold.alert and r["labels"]["severity"] == threshold.severity
    ]
    assert len(rules) == 1, f"{threshold.alert} ({threshold.severity}): {len(rules)} rules"
    number = re.compile(rf"(?<![\w.]){re.escape(threshold.number)}(?![\w.])")
    assert number.search(rules[0]["expr"]), f"{threshold.alert} does not use {threshold.value}"
    assert rules[0]["for"] == threshold.for_
    assert threshold.alert in p["description"], f"{title}: description does not name the alert"


@params
def test_quiet_panels_read_zero_only_for_a_reachable_server(filename: str) -> None:
    """A family with no series on a quiet server reads 0, not "No data"; a server the
    exporter cannot reach (pg_up 0) still shows no data."""
    quiet = [
        p for p in dashboard_panels(DASHBOARDS[filename]) if p["title"] in QUIET_AS_ZERO_PANELS
    ]
    if filename == "postgresql-sessions.json":
        assert {p["title"] for p in quiet} == QUIET_AS_ZERO_PANELS
    for p in quiet:
        for tgt in p["targets"]:
            assert re.search(r" or on \((job, instance)?\) 0 \* ", tgt["expr"]), p["title"]
            assert "(pg_up{" in tgt["expr"] and "} == 1)" in tgt["expr"], p["title"]


def _quiet_cases(expr: str) -> list[dict[str, Any]]:
    """promtool cases for one quiet-as-zero query: quiet server, server down, busy server."""
    query = substitute_variables(expr)
    (family,) = promql_selectors(query) - {"pg_up"}
    target = 'job="pe", instance="db:19187"'
    aggregated = " or on () " in query
    if query.startswith("sum("):
        busy = "{}"
    elif query.startswith("max by (datname)"):
        busy = '{datname="app"}'
    else:
        busy = f'{family}{{datname="app", {target}}}'

    def case(up: int, extra: list[dict[str, str]], samples: list[dict[str, Any]]) -> dict[str, Any]:
        series = [{"series": f"pg_up{{{target}}}", "values": f"{up}x5"}, *extra]
        check = {"expr": query, "eval_time": "2m", "exp_samples": samples}
        return {"interval": "1m", "input_series": series, "promql_expr_test": [check]}

    quiet_labels = "{}" if aggregated else f"{{{target}}}"
    busy_series = [{"series": f'{family}{{datname="app", {target}}}', "values": "4x5"}]
    return [
        case(1, [], [{"labels": quiet_labels, "value": 0}]),
        case(0, [], []),
        case(1, busy_series, [{"labels": busy, "value": 4}]),
    ]


def test_quiet_panels_evaluate_on_prometheus(tmp_path: Path) -> None:
    """Evaluated by promtool (Prometheus' engine): 0 for a quiet reachable server, nothing for
    an unreachable one, and only the real series when there are some."""
    promtool = require_tool("promtool")
    dash = DASHBOARDS["postgresql-sessions.json"]
    exprs = [
        tgt["expr"]
        for p in dashboard_panels(dash)
        if p["title"] in QUIET_AS_ZERO_PANELS
        for tgt in p["targets"]
    ]
    found = {p["title"] for p in dashboard_panels(dash) if p["title"] in QUIET_AS_ZERO_PANELS}
    assert found == set(QUIET_AS_ZERO_PANELS), set(QUIET_AS_ZERO_PANELS) - found  # none renamed
    assert len(exprs) >= len(QUIET_AS_ZERO_PANELS)  # each with a query
    tests = [case for expr in exprs for case in _quiet_cases(expr)]
    test_file = tmp_path / "quiet.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_budget_panel_joins_pools_with_the_server() -> None:
    p = panel("sqlalchemy-pool.json", "Connection budget per server")
    exprs = " ".join(t["expr"] for t in p["targets"])
    assert "sum by (pg_server)" in exprs
    assert "sqlalchemy_pool_size" in exprs and "sqlalchemy_pool_max_overflow" in exprs
    assert "pg_max_connections - pg_reserved_connections" in exprs


def test_chain_view_shows_every_tier_of_one_server() -> None:
    """App pools -> PgBouncer pools -> PostgreSQL sessions, each selected by pg_server; the
    app tier also by job and pool; the first row has one queue stat per tier."""
    for title, family in CHAIN_TIERS.items():
        p = panel("connection-chain.json", title)
        exprs = [tgt["expr"] for tgt in p["targets"]]
        assert any(family in promql_selectors(e) for e in exprs), (title, exprs)
        if title.startswith("App:"):
            assert all('job=~"$job"' in e and 'pool=~"$pool"' in e for e in exprs), title
    first_row = []
    for p in DASHBOARDS["connection-chain.json"]["panels"][1:]:
        if p["type"] == "row":
            break
        first_row.append(p)
    tiers = [p["title"].split(":")[0] for p in first_row]
    assert tiers[:1] == ["App"] and "PgBouncer" in tiers and tiers[-1] == "PostgreSQL", tiers
    assert sum(p["gridPos"]["w"] for p in first_row) == 24, "one row, side by side"


def test_pgbouncer_panels_leave_out_the_admin_console() -> None:
    """PgBouncer's admin console is a pool (database "pgbouncer") with no server behind it."""
    for filename in ("pgbouncer.json", "connection-chain.json"):
        for where, expr in dashboard_exprs(DASHBOARDS[filename]):
            pools = {n for n in promql_selectors(expr) if n.startswith("pgbouncer_pools_")}
            dbs = {n for n in promql_selectors(expr) if n.startswith("pgbouncer_databases_")}
            if pools:
                assert 'database!="pgbouncer"' in expr, f"{filename} {where}"
            if dbs:
                assert 'name!="pgbouncer"' in expr, f"{filename} {where}"


def test_direct_budget_panel_leaves_out_pools_through_pgbouncer() -> None:
    p = panel("sqlalchemy-pool.json", "Connection budget per server")
    assert "unless (sqlalchemy_pool_through_pgbouncer == 1)" in p["targets"][0]["expr"]


# --- every query parses on a real Prometheus --------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real, empty Prometheus on loopback (nothing scraped): it only parses queries."""
    config = {"global": {"scrape_interval": "15s"}, "scrape_configs": []}
    server = start_prometheus(config, Path(tmp_path_factory.mktemp("prom-parse")))
    try:
        yield server
    finally:
        server.stop()


def all_exprs() -> list[tuple[str, str]]:
    return [
        (f"{filename} {where}", expr)
        for filename, dash in sorted(DASHBOARDS.items())
        for where, expr in dashboard_exprs(dash)
    ]


def test_substitution_leaves_no_variables() -> None:
    for where, expr in all_exprs():
        assert "$" not in substitute_variables(expr), where


@pytest.mark.parametrize(("where", "expr"), all_exprs(), ids=[w for w, _ in all_exprs()])
def test_query_accepted_by_prometheus(prometheus: Process, where: str, expr: str) -> None:
    query = substitute_variables(expr)
    result = prom_api(prometheus.url, "query", query=query)
    assert result["status"] == "success", f"{where}: {result.get('error')}\n{query}"
    # Range queries too: what Grafana sends for time series panels.
    result = prom_api(prometheus.url, "query_range", query=query, start="0", end="600", step="60")
    assert result["status"] == "success", f"{where}: {result.get('error')}\n{query}"


def test_a_bad_query_is_rejected(prometheus: Process) -> None:
    """The check above can fail: a broken expression is refused."""
    result = prom_api(prometheus.url, "query", query="sum by (pool (sqlalchemy_pool_idle)")
    assert result["status"] == "error"
