"""Grafana panel builders shared by the two dashboards (classic JSON model, schema 42).

Each builder returns one panel dict with a private ``_size`` (width, height) that
:func:`layout` turns into ids and grid positions. Standard library only.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 42  # the classic JSON model as Grafana 12 exports it
DS = {"type": "prometheus", "uid": "${datasource}"}
RUNBOOK = "https://github.com/poolwatch/poolwatch/blob/main/docs/runbook.md"


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
