"""Grafana panel builders shared by the two dashboards (classic JSON model, schema 42).

Each builder returns one panel dict with a private ``_size`` (width, height) that
:func:`layout` turns into ids and grid positions; :func:`section` puts a row header over its
panels. Standard library only (and ``promql`` / ``metric_names`` for metric tables).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from promql import sel

from poolwatch.metric_names import MetricSpec

SCHEMA_VERSION = 42  # the classic JSON model as Grafana 12 exports it
DS = {"type": "prometheus", "uid": "${datasource}"}
RUNBOOK = "https://github.com/poolwatch/poolwatch/blob/main/docs/runbook.md"


def steps(*pairs: tuple[float, str], base: str = "green") -> dict[str, Any]:
    """Absolute thresholds: ``base`` below the first value, then each (value, color)."""
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}]
        + [{"color": color, "value": value} for value, color in pairs],
    }


def value_text(*texts: str) -> list[dict[str, Any]]:
    """Value mappings that show 0, 1, ... as ``texts`` (such as DOWN / UP)."""
    options = {str(i): {"text": text, "index": i} for i, text in enumerate(texts)}
    return [{"type": "value", "options": options}]


def up_down() -> dict[str, Any]:
    """The look of a 0/1 reachability stat (``stat(..., **up_down())``): 0 red DOWN, 1 green
    UP."""
    return {"thresholds": steps((1, "green"), base="red"), "mappings": value_text("DOWN", "UP")}


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


Panel = dict[str, Any]
Queries = list[dict[str, Any]]


def _panel(
    kind: str, title: str, description: str, queries: Queries, size: tuple[int, int], **body: Any
) -> Panel:
    """The keys every panel has, in the order Grafana exports them; ``body``: fieldConfig on."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": queries,
        **body,
        "_size": size,
    }


def _instant(queries: Queries, **extra: Any) -> Queries:
    for q in queries:
        q["instant"] = True
        q["range"] = False
        q.update(extra)
    return queries


def timeseries(
    title: str,
    description: str,
    queries: Queries,
    unit: str,
    *,
    stack: bool = False,
    minimum: float | None = 0,
    thresholds: dict[str, Any] | None = None,
    width: int = 12,
    height: int = 8,
) -> Panel:
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
    legend = {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}
    return _panel(
        "timeseries",
        title,
        description,
        queries,
        (width, height),
        fieldConfig={"defaults": defaults, "overrides": []},
        options={"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}},
    )


def breakdown(
    title: str, description: str, expr: str, by: str, legend: str = "", **look: Any
) -> Panel:
    """A stacked time series of ``expr`` summed by the labels ``by`` (such as ``"state"``);
    ``legend`` defaults to those labels' values."""
    legend = legend or " ".join(f"{{{{{label}}}}}" for label in by.split(", "))
    query = [target(f"sum by ({by}) ({expr})", legend)]
    return timeseries(title, description, query, "short", stack=True, **look)


def stat(
    title: str, description: str, queries: Queries, unit: str, *, kind: str = "stat", **look: Any
) -> Panel:
    """A stat (or gauge) panel showing the last value, coloured by thresholds.

    ``look``: ``thresholds``, ``mappings``, ``width`` (6), ``height`` (4).
    """
    options: dict[str, Any] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "auto",
    }
    if kind == "stat":
        options.update({"colorMode": "background", "graphMode": "none", "textMode": "auto"})
    else:
        options.update({"showThresholdLabels": False, "showThresholdMarkers": True})
    defaults = {
        "unit": unit,
        "thresholds": look.get("thresholds") or steps(),
        "mappings": look.get("mappings") or [],
        "color": {"mode": "thresholds"},
    }
    return _panel(
        kind,
        title,
        description,
        _instant(queries),
        (look.get("width", 6), look.get("height", 4)),
        fieldConfig={"defaults": defaults, "overrides": []},
        options=options,
    )


def count_stat(title: str, description: str, expr: str, color: str, legend: str = "") -> Panel:
    """A stat of a count that should be 0 (callers waiting, lock waits): ``color`` from 1 up."""
    return stat(title, description, [target(expr, legend)], "short", thresholds=steps((1, color)))


def heatmap(
    title: str, description: str, expr: str, unit: str, width: int = 12, height: int = 8
) -> Panel:
    """A heatmap of pre-bucketed histogram counts (one row per `le`)."""
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
        "yAxis": {"axisPlacement": "left", "unit": unit},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": True},
        "legend": {"show": True},
    }
    return _panel(
        "heatmap",
        title,
        description,
        [target(expr, "{{le}}", format="heatmap")],
        (width, height),
        fieldConfig={"defaults": {"unit": unit}, "overrides": []},
        options=options,
    )


def table(
    title: str, description: str, queries: Queries, width: int = 24, height: int = 6
) -> Panel:
    """A table joining instant queries on their labels (one column per query)."""
    return _panel(
        "table",
        title,
        description,
        _instant(queries, format="table"),
        (width, height),
        fieldConfig={"defaults": {"unit": "short"}, "overrides": []},
        options={"showHeader": True, "cellHeight": "sm"},
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ],
    )


def settings_table(
    title: str, description: str, selector: str, columns: Mapping[str, MetricSpec], **size: int
) -> Panel:
    """A :func:`table` with one column per metric (column name -> metric), all filtered by
    ``selector``: a pool's or a database's settings side by side."""
    queries = targets(*[(sel(spec, selector), name) for name, spec in columns.items()])
    return table(title, description, queries, **size)


def row(title: str) -> dict[str, Any]:
    """A (non-collapsed) row header."""
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def section(title: str, *panels: Panel, across: int = 0) -> list[Panel]:
    """A row header and its panels; ``across``: that many panels share each line of the row
    (their widths set to 24 / ``across``), for rows of equal panels."""
    if across:
        for panel in panels:
            panel["_size"] = (24 // across, panel["_size"][1])
    return [row(title), *panels]


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


def chained_variables(first: str, name: str, label: str, metric: str) -> list[dict[str, Any]]:
    """Job and Instance from ``first``'s labels, then ``name`` from ``metric`` filtered by both."""
    return [
        query_variable("job", "Job", f"label_values({first}, job)"),
        query_variable("instance", "Instance", f'label_values({first}{{job=~"$job"}}, instance)'),
        query_variable(
            name, label, f'label_values({metric}{{job=~"$job", instance=~"$instance"}}, {name})'
        ),
    ]


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[dict[str, Any]],
    panels: list,
    tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The dashboard envelope: datasource variable first, then ``variables``; ``tags`` are
    added to the shared ones."""
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
        "tags": ["poolwatch", "postgresql", "sqlalchemy", *tags],
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
