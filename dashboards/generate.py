"""Generate poolwatch's Grafana dashboards (the JSON files beside this script).

The JSON files are what users import; this script is where they are edited, so that panel
ids, grid positions, datasource references and alert thresholds stay consistent. After a
change run::

    python dashboards/generate.py

and commit both the script and the JSON (``tests/test_dashboards.py`` checks they agree).
Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 42  # the classic JSON model as Grafana 12 exports it
DS = {"type": "prometheus", "uid": "${datasource}"}
RUNBOOK = "https://github.com/poolwatch/poolwatch/blob/main/docs/runbook.md"

# Alert thresholds (alerts/*.rules.yml) the panels draw; tests/test_dashboards.py checks that
# each one appears both in its panel and in its alert rule.
NEAR_CAPACITY = 0.85
CHECKOUT_P95_SECONDS = 0.5
LOCK_WAITS = 3
CONNECTIONS_WARNING = 0.8
CONNECTIONS_CRITICAL = 0.9
OLDEST_CHECKOUT_SECONDS = 60

POOL_SEL = 'job=~"$job", instance=~"$instance", pool=~"$pool"'
PG_SEL = 'job=~"$job", instance=~"$instance"'
PG_DB_SEL = 'job=~"$job", instance=~"$instance", datname=~"$datname"'


def steps(*pairs: tuple[float, str]) -> dict[str, Any]:
    """Absolute thresholds: green below the first value, then each (value, color)."""
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": color, "value": value} for value, color in pairs],
    }


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    out: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": True,
        "refId": ref,
    }
    out.update(extra)
    return out


def targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    """Several (expr, legend) queries with refIds A, B, C, ..."""
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def timeseries(
    title: str,
    description: str,
    queries: list[dict[str, Any]],
    unit: str,
    *,
    thresholds: dict[str, Any] | None = None,
    stack: bool = False,
    minimum: float | None = 0,
    width: int = 12,
    height: int = 8,
) -> dict[str, Any]:
    """A time series panel; thresholds, when given, are drawn as dashed lines."""
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "fillOpacity": 20 if stack else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    defaults: dict[str, Any] = {
        "custom": custom,
        "unit": unit,
        "thresholds": thresholds or steps(),
        "color": {"mode": "palette-classic"},
    }
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": queries,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (width, height),
    }


def stat(
    title: str,
    description: str,
    queries: list[dict[str, Any]],
    unit: str,
    *,
    thresholds: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    kind: str = "stat",
    width: int = 6,
    height: int = 4,
) -> dict[str, Any]:
    """A stat (or gauge) panel showing the last value, coloured by thresholds."""
    for q in queries:
        q["instant"] = True
        q["range"] = False
    options: dict[str, Any] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "auto",
    }
    if kind == "stat":
        options.update({"colorMode": "background", "graphMode": "none", "textMode": "auto"})
    else:
        options.update({"showThresholdLabels": False, "showThresholdMarkers": True})
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": queries,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": thresholds or steps(),
                "mappings": mappings or [],
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": options,
        "_size": (width, height),
    }


def heatmap(
    title: str, description: str, expr: str, unit: str, width: int = 12, height: int = 8
) -> dict[str, Any]:
    """A heatmap of pre-bucketed histogram counts (one row per `le`)."""
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, "{{le}}", format="heatmap")],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "yAxis": {"axisPlacement": "left", "unit": unit},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        },
        "_size": (width, height),
    }


def table(
    title: str, description: str, queries: list[dict[str, Any]], width: int = 24, height: int = 6
) -> dict[str, Any]:
    """A table joining instant queries on their labels (one column per query)."""
    for q in queries:
        q["instant"] = True
        q["range"] = False
        q["format"] = "table"
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": queries,
        "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ],
        "_size": (width, height),
    }


def row(title: str) -> dict[str, Any]:
    """A (non-collapsed) row header."""
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give panels ids and grid positions, left to right, wrapping at 24 columns."""
    x = y = line_height = 0
    out = []
    for panel_id, panel in enumerate(panels, start=1):
        width, height = panel.pop("_size")
        if panel["type"] == "row" or x + width > 24:
            x, y, line_height = 0, y + line_height, 0
        panel["id"] = panel_id
        panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        out.append(panel)
        x += width
        line_height = max(line_height, height)
        if panel["type"] == "row":
            x, y, line_height = 0, y + height, 0
    return out


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value template variable filled by label_values(), with All = '.*'."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "regex": "",
        "hide": 0,
        "options": [],
    }


def dashboard(
    uid: str, title: str, description: str, variables: list[dict[str, Any]], panels: list
) -> dict[str, Any]:
    """The dashboard envelope: datasource variable first, then ``variables``."""
    datasource_var = {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "current": {},
        "regex": "",
        "hide": 0,
        "refresh": 1,
        "includeAll": False,
        "multi": False,
        "options": [],
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["poolwatch", "postgresql", "sqlalchemy"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "id": None,
        "links": [
            {
                "type": "dashboards",
                "title": "poolwatch",
                "tags": ["poolwatch"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            },
            {
                "type": "link",
                "title": "Runbook",
                "url": RUNBOOK,
                "icon": "doc",
                "targetBlank": True,
                "tags": [],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": False,
                "tooltip": "What each poolwatch alert means and how to fix it",
            },
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": [datasource_var, *variables]},
        "panels": layout(panels),
    }


def capacity(sel: str) -> str:
    """pool_size + max_overflow per pool series (+Inf for unlimited overflow)."""
    return (
        f"sqlalchemy_pool_size{{{sel}}} + sqlalchemy_pool_max_overflow{{{sel}}}"
        f" or sqlalchemy_pool_size{{{sel}}} + Inf"
    )


def quantiles(metric: str, what: str) -> list[dict[str, Any]]:
    """p50/p95/p99 of a histogram per pool, over Grafana's rate interval."""
    return targets(
        *[
            (
                f"histogram_quantile({q}, sum by (job, instance, pool, le) "
                f"(rate({metric}_bucket{{{POOL_SEL}}}[$__rate_interval])))",
                f"p{int(q * 100)} {{{{pool}}}} {{{{instance}}}}",
            )
            for q in (0.5, 0.95, 0.99)
        ]
    )


def pool_dashboard() -> dict[str, Any]:
    """The "SQLAlchemy pool" dashboard (metrics of poolwatch.instrument)."""
    util = f"sqlalchemy_pool_checked_out{{{POOL_SEL}}} / ({capacity(POOL_SEL)})"
    per = "{{pool}} {{instance}}"
    panels = [
        row("Overview"),
        stat(
            "Highest pool utilization",
            "Checked out / (pool_size + max_overflow), the fullest selected pool. "
            f"PoolwatchPoolNearCapacity fires at {NEAR_CAPACITY:.0%} for 2m; "
            "PoolwatchPoolExhausted at 100% with callers waiting.",
            [target(f"max({util})", "utilization")],
            "percentunit",
            thresholds=steps((NEAR_CAPACITY, "orange"), (1, "red")),
        ),
        stat(
            "Callers waiting",
            "Callers queued for a connection now, all selected pools. Anything above 0 "
            "means a pool is at capacity (PoolwatchPoolExhausted).",
            [target(f"sum(sqlalchemy_pool_waiting{{{POOL_SEL}}})", "waiting")],
            "short",
            thresholds=steps((1, "red")),
        ),
        stat(
            "Pool timeouts (1h)",
            "Checkouts that raised TimeoutError after pool_timeout in the last hour "
            "(PoolwatchPoolTimeouts fires on any).",
            [target(f"sum(increase(sqlalchemy_pool_timeouts_total{{{POOL_SEL}}}[1h]))", "")],
            "short",
            thresholds=steps((1, "red")),
        ),
        stat(
            "Leaks (1h)",
            "Checkouts held past the leak threshold in the last hour; the application log "
            "names where each was checked out (PoolwatchPoolConnectionLeak).",
            [target(f"sum(increase(sqlalchemy_pool_leaks_total{{{POOL_SEL}}}[1h]))", "")],
            "short",
            thresholds=steps((1, "orange")),
        ),
        row("Connections"),
        timeseries(
            "Checked out vs capacity",
            "Connections lent out now against pool_size and pool_size + max_overflow "
            "(the most the pool will ever open).",
            targets(
                (f"sqlalchemy_pool_checked_out{{{POOL_SEL}}}", f"checked out {per}"),
                (f"sqlalchemy_pool_size{{{POOL_SEL}}}", f"pool_size {per}"),
                (capacity(POOL_SEL), f"size + max_overflow {per}"),
            ),
            "short",
        ),
        timeseries(
            "Utilization",
            "Checked out / (pool_size + max_overflow). Dashed lines: "
            f"PoolwatchPoolNearCapacity ({NEAR_CAPACITY:.0%} for 2m) and exhaustion (100%).",
            [target(util, per)],
            "percentunit",
            thresholds=steps((NEAR_CAPACITY, "orange"), (1, "red")),
        ),
        timeseries(
            "Idle connections",
            "Connections open and idle in the pool, ready to be lent.",
            [target(f"sqlalchemy_pool_idle{{{POOL_SEL}}}", per)],
            "short",
            width=8,
        ),
        timeseries(
            "Overflow connections",
            "Connections open beyond pool_size now (closed again when returned).",
            [target(f"sqlalchemy_pool_overflow{{{POOL_SEL}}}", per)],
            "short",
            width=8,
        ),
        timeseries(
            "Waiting callers",
            "Callers queued for a connection because the pool is at capacity. Above 0 "
            "for 1m with the pool full: PoolwatchPoolExhausted.",
            [target(f"sqlalchemy_pool_waiting{{{POOL_SEL}}}", per)],
            "short",
            thresholds=steps((1, "red")),
            width=8,
        ),
        row("Latency"),
        timeseries(
            "Checkout wait p50 / p95 / p99",
            "Time from asking the pool for a connection to holding one (queue wait + "
            f"connect + pre-ping). PoolwatchPoolCheckoutSlow: p95 > {CHECKOUT_P95_SECONDS} s "
            "for 2m.",
            quantiles("sqlalchemy_pool_checkout_duration_seconds", "checkout"),
            "s",
            thresholds=steps((CHECKOUT_P95_SECONDS, "red")),
        ),
        heatmap(
            "Checkout wait distribution",
            "Checkouts per wait-time bucket, all selected pools. A band near pool_timeout "
            "means callers time out.",
            "sum by (le) (increase(sqlalchemy_pool_checkout_duration_seconds_bucket"
            f"{{{POOL_SEL}}}[$__rate_interval]))",
            "s",
        ),
        timeseries(
            "Hold time p50 / p95 / p99",
            "How long the application keeps a connection, checkout to checkin. Long holds "
            "starve the pool: keep transactions short, never await other I/O inside one.",
            quantiles("sqlalchemy_pool_hold_duration_seconds", "hold"),
            "s",
        ),
        timeseries(
            "New connection time p50 / p95 / p99",
            "Time to open a new DBAPI connection (TCP + TLS + authentication).",
            quantiles("sqlalchemy_pool_connect_duration_seconds", "connect"),
            "s",
        ),
        row("Throughput and errors"),
        timeseries(
            "Checkouts vs checkins",
            "Connections lent and returned per second. Checkins below checkouts for 5m "
            "with an old checkout: PoolwatchPoolCheckinsLagging.",
            targets(
                (
                    f"rate(sqlalchemy_pool_checkouts_total{{{POOL_SEL}}}[$__rate_interval])",
                    f"checkouts {per}",
                ),
                (
                    f"rate(sqlalchemy_pool_checkins_total{{{POOL_SEL}}}[$__rate_interval])",
                    f"checkins {per}",
                ),
            ),
            "ops",
        ),
        timeseries(
            "Timeouts and connect errors",
            "Checkouts that gave up after pool_timeout (PoolwatchPoolTimeouts) and failed "
            "attempts to open a connection (PoolwatchPoolConnectErrors), per second.",
            targets(
                (
                    f"rate(sqlalchemy_pool_timeouts_total{{{POOL_SEL}}}[$__rate_interval])",
                    f"timeouts {per}",
                ),
                (
                    f"rate(sqlalchemy_pool_connect_errors_total{{{POOL_SEL}}}[$__rate_interval])",
                    f"connect errors {per}",
                ),
            ),
            "ops",
        ),
        timeseries(
            "Invalidations by reason",
            "Connections invalidated per 5 minutes (pre_ping, disconnect, soft, explicit). "
            "More than 5 in 5m: PoolwatchPoolInvalidationBurst.",
            [
                target(
                    "sum by (pool, instance, reason) (increase("
                    f"sqlalchemy_pool_invalidations_total{{{POOL_SEL}}}[5m]))",
                    "{{reason}} {{pool}} {{instance}}",
                )
            ],
            "short",
            thresholds=steps((5, "orange")),
            width=8,
        ),
        timeseries(
            "Leaks",
            "Checkouts held past the leak threshold, per 10 minutes "
            "(PoolwatchPoolConnectionLeak fires on any).",
            [target(f"increase(sqlalchemy_pool_leaks_total{{{POOL_SEL}}}[10m])", per)],
            "short",
            thresholds=steps((1, "red")),
            width=8,
        ),
        timeseries(
            "Oldest checkout",
            "Age of the longest-held connection now. A leak grows here without bound; "
            f"PoolwatchPoolCheckinsLagging needs it above {OLDEST_CHECKOUT_SECONDS} s.",
            [target(f"sqlalchemy_pool_oldest_checkout_seconds{{{POOL_SEL}}}", per)],
            "s",
            thresholds=steps((OLDEST_CHECKOUT_SECONDS, "orange")),
            width=8,
        ),
        row("Connection budget (all pools, all workers)"),
        timeseries(
            "Connection budget per server",
            "pool_size + max_overflow summed over every pool of every worker process, "
            "against the server's max_connections minus reserved slots (by the pg_server "
            "label; one server when it is unset). Above the line: "
            "PoolwatchConnectionBudgetExceeded. Not filtered by the variables above.",
            targets(
                (f"sum by (pg_server) ({capacity('')})", "pools may open {{pg_server}}"),
                (
                    "min by (pg_server) (pg_max_connections - pg_reserved_connections)",
                    "usable on server {{pg_server}}",
                ),
            ),
            "short",
            width=16,
        ),
        stat(
            "Budget used",
            "Sum of pool capacities / usable server connections. Above 100% the pools can "
            "open more connections than the server accepts.",
            [
                target(
                    f"sum by (pg_server) ({capacity('')}) / on (pg_server) min by (pg_server)"
                    " (pg_max_connections - pg_reserved_connections)",
                    "{{pg_server}}",
                )
            ],
            "percentunit",
            thresholds=steps((0.9, "orange"), (1.001, "red")),
            kind="gauge",
            width=8,
            height=8,
        ),
        row("Configuration"),
        table(
            "Pool configuration",
            "pool_size, max_overflow and pool_timeout of each selected pool, as configured.",
            targets(
                (f"sqlalchemy_pool_size{{{POOL_SEL}}}", "pool_size"),
                (f"sqlalchemy_pool_max_overflow{{{POOL_SEL}}}", "max_overflow"),
                (f"sqlalchemy_pool_timeout_seconds{{{POOL_SEL}}}", "pool_timeout"),
            ),
        ),
    ]
    return dashboard(
        "poolwatch-sqlalchemy-pool",
        "SQLAlchemy pool",
        "poolwatch: SQLAlchemy connection pools (poolwatch.instrument) — capacity, waits, "
        "leaks, errors and the connection budget.",
        [
            query_variable("job", "Job", "label_values(sqlalchemy_pool_checked_out, job)"),
            query_variable(
                "instance",
                "Instance",
                'label_values(sqlalchemy_pool_checked_out{job=~"$job"}, instance)',
            ),
            query_variable(
                "pool",
                "Pool",
                'label_values(sqlalchemy_pool_checked_out{job=~"$job", instance=~"$instance"},'
                " pool)",
            ),
        ],
        panels,
    )


def postgres_dashboard() -> dict[str, Any]:
    """The "PostgreSQL sessions" dashboard (metrics of poolwatch-exporter)."""
    usable = f"(pg_max_connections{{{PG_SEL}}} - pg_reserved_connections{{{PG_SEL}}})"
    sessions = f"sum without (datname, usename, application_name, state) (pg_sessions{{{PG_SEL}}})"
    per_db = "{{datname}} {{instance}}"
    panels = [
        row("Overview"),
        stat(
            "PostgreSQL reachable",
            "pg_up: 1 when the exporter's last query reached the server "
            "(PoolwatchPostgresDown after 1m at 0).",
            [target(f"min(pg_up{{{PG_SEL}}})", "")],
            "none",
            thresholds={
                "mode": "absolute",
                "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
            },
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "DOWN", "index": 0},
                        "1": {"text": "UP", "index": 1},
                    },
                }
            ],
        ),
        stat(
            "Connections used",
            "Client sessions / (max_connections - reserved). "
            f"PoolwatchPostgresTooManyConnections: warning at {CONNECTIONS_WARNING:.0%} "
            f"for 5m, critical at {CONNECTIONS_CRITICAL:.0%} for 2m.",
            [target(f"max({sessions} / {usable})", "")],
            "percentunit",
            thresholds=steps((CONNECTIONS_WARNING, "orange"), (CONNECTIONS_CRITICAL, "red")),
            kind="gauge",
        ),
        stat(
            "Headroom",
            "Connections ordinary roles can still open: max_connections - reserved - "
            "client sessions now.",
            [target(f"min({usable} - {sessions})", "")],
            "short",
            thresholds={
                "mode": "absolute",
                "steps": [
                    {"color": "red", "value": None},
                    {"color": "orange", "value": 5},
                    {"color": "green", "value": 20},
                ],
            },
        ),
        stat(
            "Stale idle in transaction",
            "Sessions idle in transaction longer than the exporter's stale threshold "
            "(5 s by default). PoolwatchPostgresIdleInTransaction: above 0 for 2m.",
            [target(f"sum(pg_idle_in_transaction_stale_sessions{{{PG_DB_SEL}}})", "")],
            "short",
            thresholds=steps((1, "red")),
        ),
        row("Sessions"),
        timeseries(
            "Sessions by state",
            "Client sessions by state (active, idle, idle in transaction, ...; 'unknown' when "
            "the exporter's role may not see them).",
            [
                target(
                    f"sum by (state) (pg_sessions{{{PG_DB_SEL}}})",
                    "{{state}}",
                )
            ],
            "short",
            stack=True,
            width=8,
        ),
        timeseries(
            "Sessions by database",
            "Client sessions by database.",
            [target(f"sum by (datname) (pg_sessions{{{PG_DB_SEL}}})", "{{datname}}")],
            "short",
            stack=True,
            width=8,
        ),
        timeseries(
            "Sessions by application",
            "Client sessions by application_name (top N, the rest as 'other').",
            [
                target(
                    f"sum by (application_name) (pg_sessions{{{PG_DB_SEL}}})",
                    "{{application_name}}",
                )
            ],
            "short",
            stack=True,
            width=8,
        ),
        timeseries(
            "Headroom to max_connections",
            "Client sessions against max_connections and max_connections - reserved "
            "(what ordinary roles may use). Dashed: the 80% / 90% alert thresholds of "
            "the usable connections.",
            targets(
                (sessions, "sessions {{instance}}"),
                (usable, "usable {{instance}}"),
                (f"pg_max_connections{{{PG_SEL}}}", "max_connections {{instance}}"),
            ),
            "short",
            width=8,
        ),
        timeseries(
            "Connections used (ratio)",
            "Client sessions / (max_connections - reserved). "
            f"PoolwatchPostgresTooManyConnections: {CONNECTIONS_WARNING:.0%} warning, "
            f"{CONNECTIONS_CRITICAL:.0%} critical.",
            [target(f"{sessions} / {usable}", "{{instance}}")],
            "percentunit",
            thresholds=steps((CONNECTIONS_WARNING, "orange"), (CONNECTIONS_CRITICAL, "red")),
            width=8,
        ),
        timeseries(
            "Server processes by type",
            "Every server process by backend_type: client backends plus autovacuum workers, "
            "WAL senders, background workers (these have their own slots).",
            [target(f"pg_backends{{{PG_SEL}}}", "{{backend_type}} {{instance}}")],
            "short",
            stack=True,
            width=8,
        ),
        row("Idle in transaction"),
        timeseries(
            "Idle in transaction sessions",
            "Sessions holding a transaction open while doing nothing, by database and "
            "application: each pins a pooled connection and its locks.",
            [
                target(
                    f"pg_idle_in_transaction_sessions{{{PG_DB_SEL}}}",
                    "{{datname}} {{application_name}}",
                )
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Longest idle in transaction",
            "The longest idle-in-transaction session: idle for (since its last statement) "
            "and its transaction's age (since BEGIN).",
            targets(
                (
                    f"max by (datname) (pg_idle_in_transaction_max_idle_seconds{{{PG_DB_SEL}}})",
                    "idle for {{datname}}",
                ),
                (
                    f"max by (datname) (pg_idle_in_transaction_max_age_seconds{{{PG_DB_SEL}}})",
                    "transaction age {{datname}}",
                ),
            ),
            "s",
            width=8,
        ),
        timeseries(
            "Stale idle in transaction",
            "Sessions idle in transaction past the exporter's stale threshold. Above 0 for "
            "2m: PoolwatchPostgresIdleInTransaction.",
            [target(f"pg_idle_in_transaction_stale_sessions{{{PG_DB_SEL}}}", per_db)],
            "short",
            thresholds=steps((1, "red")),
            width=8,
        ),
        row("Locks"),
        timeseries(
            "Lock waits",
            f"Sessions waiting for a lock. {LOCK_WAITS} or more for 2m: "
            "PoolwatchPostgresLockWaits.",
            [target(f"pg_lock_waiting_sessions{{{PG_DB_SEL}}}", per_db)],
            "short",
            thresholds=steps((LOCK_WAITS, "orange")),
            width=8,
        ),
        timeseries(
            "Longest lock wait",
            "How long the longest current lock wait has lasted.",
            [target(f"pg_lock_wait_max_seconds{{{PG_DB_SEL}}}", per_db)],
            "s",
            width=8,
        ),
        timeseries(
            "Blocked vs blocking",
            "Sessions blocked by another process, and the distinct processes blocking them. "
            "Blocked sessions for 5m: PoolwatchPostgresBlockedSessions.",
            targets(
                (f"pg_blocked_sessions{{{PG_DB_SEL}}}", "blocked {{datname}} {{instance}}"),
                (f"pg_blocking_sessions{{{PG_DB_SEL}}}", "blocking {{datname}} {{instance}}"),
            ),
            "short",
            thresholds=steps((1, "orange")),
            width=8,
        ),
        row("Long-running work"),
        timeseries(
            "Longest transaction",
            "Age of the oldest open transaction, by the state of its session.",
            [
                target(
                    f"pg_transaction_max_age_seconds{{{PG_DB_SEL}}}",
                    "{{datname}} {{state}}",
                )
            ],
            "s",
        ),
        timeseries(
            "Longest query",
            "How long the longest-running active query has been running.",
            [target(f"pg_query_max_age_seconds{{{PG_DB_SEL}}}", per_db)],
            "s",
        ),
        row("Exporter health"),
        timeseries(
            "Exporter scrape duration",
            "Duration of the exporter's last database scrape (connect if needed + one query).",
            [target(f"poolwatch_exporter_scrape_duration_seconds{{{PG_SEL}}}", "{{instance}}")],
            "s",
            width=8,
        ),
        timeseries(
            "Exporter errors and targets",
            "Failed database scrapes per second, and whether Prometheus reaches the "
            "exporter (up; PoolwatchExporterDown after 2m at 0).",
            targets(
                (
                    f"rate(poolwatch_exporter_scrape_errors_total{{{PG_SEL}}}[$__rate_interval])",
                    "scrape errors/s {{instance}}",
                ),
                (f"up{{{PG_SEL}}}", "up {{instance}}"),
            ),
            "short",
            width=8,
        ),
        timeseries(
            "Exporter visibility",
            "Whether the exporter's role sees every session's state (1), and the sessions "
            "it may not see (counted as state 'unknown'). Grant pg_monitor to fix.",
            targets(
                (f"poolwatch_exporter_sees_all_sessions{{{PG_SEL}}}", "sees all {{instance}}"),
                (f"poolwatch_exporter_hidden_sessions{{{PG_SEL}}}", "hidden {{instance}}"),
            ),
            "short",
            width=8,
        ),
        table(
            "Exporter",
            "Exporter version, queries sent, connections opened, age of the snapshot served.",
            targets(
                (f"poolwatch_exporter_build_info{{{PG_SEL}}}", "build"),
                (f"poolwatch_exporter_queries_total{{{PG_SEL}}}", "queries"),
                (f"poolwatch_exporter_connections_opened_total{{{PG_SEL}}}", "connections"),
                (f"poolwatch_exporter_snapshot_age_seconds{{{PG_SEL}}}", "snapshot age"),
            ),
        ),
    ]
    return dashboard(
        "poolwatch-postgresql-sessions",
        "PostgreSQL sessions",
        "poolwatch: PostgreSQL sessions (poolwatch-exporter) — connections against "
        "max_connections, idle in transaction, lock waits, long transactions.",
        [
            query_variable("job", "Job", "label_values(pg_up, job)"),
            query_variable("instance", "Instance", 'label_values(pg_up{job=~"$job"}, instance)'),
            query_variable(
                "datname",
                "Database",
                'label_values(pg_sessions{job=~"$job", instance=~"$instance"}, datname)',
            ),
        ],
        panels,
    )


DASHBOARDS = {
    "sqlalchemy-pool.json": pool_dashboard,
    "postgresql-sessions.json": postgres_dashboard,
}


def render(builder: Any) -> str:
    """The JSON text of one dashboard, as committed."""
    return json.dumps(builder(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    """Write every dashboard's JSON beside this script."""
    for filename, builder in DASHBOARDS.items():
        (HERE / filename).write_text(render(builder), encoding="utf-8")
        print(f"wrote dashboards/{filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
