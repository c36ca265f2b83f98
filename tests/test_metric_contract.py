"""The metric contract: names in metric_names, docs/metrics.md, dashboards and rules agree.

Every metric a dashboard panel, a dashboard variable or an alert/recording rule selects must
be one poolwatch registers (``poolwatch.metric_names``; histogram ``_bucket``/``_sum``/
``_count`` series count as their histogram), a recording rule of ours, or one Prometheus
provides itself (``up``). Every metric poolwatch registers must be documented.
"""

from __future__ import annotations

import re

import pytest

from poolwatch import metric_names
from prom_support import (
    PROMETHEUS_BUILTIN_METRICS,
    REPO,
    dashboard_exprs,
    histogram_base,
    load_dashboards,
    load_rule_groups,
    promql_selectors,
    recording_rule_names,
)


def registered() -> dict[str, metric_names.MetricSpec]:
    """Every MetricSpec defined in metric_names, by name."""
    specs = [v for v in vars(metric_names).values() if isinstance(v, metric_names.MetricSpec)]
    return {spec.name: spec for spec in specs}


def referenced() -> dict[str, set[str]]:
    """Selected series name -> where (dashboards and rule files)."""
    where: dict[str, set[str]] = {}
    for filename, dashboard in load_dashboards().items():
        for place, expr in dashboard_exprs(dashboard):
            for name in promql_selectors(expr):
                where.setdefault(name, set()).add(f"dashboards/{filename} {place}")
    for path, group in load_rule_groups():
        for rule in group["rules"]:
            label = rule.get("alert") or rule.get("record")
            for name in promql_selectors(rule["expr"]):
                where.setdefault(name, set()).add(f"alerts/{path.name} {label}")
    return where


def spec_tables() -> dict[str, tuple[metric_names.MetricSpec, ...]]:
    """The tables of metric_names that collectors register from (INSTRUMENTATION_METRICS...)."""
    return {
        name: value
        for name, value in vars(metric_names).items()
        if isinstance(value, tuple)
        and value
        and all(isinstance(v, metric_names.MetricSpec) for v in value)
    }


def test_the_contract_lists_metrics() -> None:
    specs = registered()
    every = {
        id(v): v for v in vars(metric_names).values() if isinstance(v, metric_names.MetricSpec)
    }
    names = [spec.name for spec in every.values()]
    assert not {n for n in names if names.count(n) > 1}, "two MetricSpecs share a name"
    tables = spec_tables()
    assert "INSTRUMENTATION_METRICS" in tables and "EXPORTER_METRICS" in tables, sorted(tables)
    for table, listed in tables.items():
        in_table = [spec.name for spec in listed]
        assert len(in_table) == len(set(in_table)), f"{table} lists a metric twice"
        unnamed = [spec.name for spec in listed if specs.get(spec.name) is not spec]
        assert not unnamed, f"{table}: not a named MetricSpec of metric_names: {unnamed}"
    for spec in specs.values():
        assert spec.type in {"gauge", "counter", "histogram", "info"}, spec
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", spec.name), spec.name
        assert spec.help.strip(), f"{spec.name} has no HELP text"
        if spec.type == "counter":
            assert spec.name.endswith("_total"), spec.name


def test_every_referenced_metric_is_registered() -> None:
    specs = registered()
    records = recording_rule_names()
    unknown = {}
    for name, places in referenced().items():
        if name in records or name in PROMETHEUS_BUILTIN_METRICS:
            continue
        base = histogram_base(name)
        if name in specs or (base in specs and specs[base].type == "histogram"):
            continue
        unknown[name] = sorted(places)
    assert not unknown, f"referenced but not in metric_names: {unknown}"


def test_referenced_histogram_series_exist() -> None:
    """A bare histogram name selects nothing: only its _bucket/_sum/_count series exist."""
    specs = registered()
    bare = {
        name: sorted(places)
        for name, places in referenced().items()
        if name in specs and specs[name].type == "histogram"
    }
    assert not bare, f"histograms selected without _bucket/_sum/_count: {bare}"


@pytest.mark.parametrize("name", sorted(registered()))
def test_every_registered_metric_is_documented(name: str) -> None:
    text = (REPO / "docs" / "metrics.md").read_text()
    assert re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text), (
        f"{name} is registered (metric_names) but not documented in docs/metrics.md"
    )
