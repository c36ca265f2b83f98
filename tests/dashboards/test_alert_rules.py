"""Alert and recording rules: checked and unit-tested by the real promtool and amtool.

- ``promtool check rules`` on every alerts/*.rules.yml; ``promtool test rules`` on every
  alerts/tests/*.test.yml (each alert quiet one evaluation before its ``for:`` elapses and
  firing at the next, with exact labels and annotations);
- ``amtool check-config`` on the example Alertmanager config, and its routing by severity;
- conventions: a shared CamelCase prefix, ``for:`` on every alert, ``severity``, ``summary``,
  a templated ``description`` and a ``runbook_url`` whose anchor exists in docs/runbook.md;
- no ``rate()``/``irate()``/``increase()`` over a gauge (types from metric_names);
- the committed files are dashboards/generate.py's output, from poolwatch.thresholds.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from poolwatch import metric_names, thresholds
from poolwatch.demo.metrics import Samples, Snapshot, load_rules
from prom_support import (
    ALERTS_DIR,
    REPO,
    RULE_FILES,
    RULE_TESTS,
    alert_rules,
    dashboard_exprs,
    histogram_base,
    load_dashboards,
    load_generator,
    load_rule_groups,
    rate_arguments,
    recording_rule_names,
)
from support import require_tool

PREFIX = "Poolwatch"
RUNBOOK_BASE = "https://github.com/poolwatch/poolwatch/blob/main/docs/runbook.md#"
AM_EXAMPLE = ALERTS_DIR / "alertmanager.example.yml"
SEVERITIES = {"critical", "warning", "info"}


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)


def duration_seconds(text: str) -> int:
    """Seconds in a Prometheus duration such as ``1m`` or ``1h30m``."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return int(sum(int(n) * units[u] for n, u in parts))


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown document (plus explicit ids)."""
    anchors = set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', markdown))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_rule_files_exist() -> None:
    names = {p.name for p in RULE_FILES}
    assert {
        "pool.rules.yml",
        "postgres.rules.yml",
        "pgbouncer.rules.yml",
        "budget.rules.yml",
    } <= names
    assert RULE_TESTS, "no promtool unit tests in alerts/tests/"


def test_rule_files_match_generator() -> None:
    module = load_generator()
    generated = {path.name: text for path, text in module.generated_files().items()}
    assert {p.name for p in RULE_FILES} <= set(generated)
    for path in RULE_FILES:
        assert path.read_text() == generated[path.name], (
            f"alerts/{path.name} differs from dashboards/generate.py: run it and commit"
        )


def test_every_alert_comes_from_the_thresholds_table() -> None:
    table = {(th.alert, th.severity): th for th in thresholds.ALL}
    assert len(table) == len(thresholds.ALL), "two entries for one alert and severity"
    rules = {(r["alert"], r["labels"]["severity"]): r for r in alert_rules()}
    assert len(rules) == len(alert_rules()), "two rules for one alert and severity"
    assert set(rules) == set(table)
    for key, rule in rules.items():
        threshold = table[key]
        assert rule["for"] == threshold.for_, key
        if threshold.window is not None:
            assert f"[{threshold.window}])" in rule["expr"], key
        if threshold.value is not None:
            number = re.compile(rf"(?<![\w.]){re.escape(threshold.number)}(?![\w.])")
            assert number.search(rule["expr"]), f"{key}: {threshold.number} not in the expr"


def _snapshot(app: str = "", pg: str = "") -> Snapshot:
    return Snapshot(0.0, Samples.parse(app), Samples.parse(pg))


def test_demo_evaluates_the_table() -> None:
    """The demo's rules are alerts of the rule files, and fire at the table's values."""
    rules = {r.name: r for r in load_rules()[0]}
    declared = {(r["alert"], r["labels"]["severity"], r["for"]) for r in alert_rules()}
    assert {(r.name, r.severity, r.for_) for r in rules.values()} <= declared
    lock = rules[thresholds.POSTGRES_LOCK_WAITS.alert]
    at = int(thresholds.POSTGRES_LOCK_WAITS.value or 0)

    def waiting(n: int) -> Snapshot:
        return _snapshot(pg=f'pg_lock_waiting_sessions{{datname="app"}} {n}\n')

    assert lock.check(waiting(at), waiting(0), "app")
    assert not lock.check(waiting(at - 1), waiting(0), "app")
    near = rules[thresholds.POOL_NEAR_CAPACITY.alert]

    def used(n: int) -> Snapshot:
        lines = [
            f'sqlalchemy_pool_{k}{{pool="demo"}} {v}'
            for k, v in (("size", 20), ("max_overflow", 0), ("checked_out", n))
        ]
        return _snapshot(app="\n".join(lines) + "\n")

    limit = round(20 * (thresholds.POOL_NEAR_CAPACITY.value or 0))
    assert near.check(used(limit), used(0), "app")
    assert not near.check(used(limit - 1), used(0), "app")


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES), result.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file: Path) -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_amtool_check_config() -> None:
    amtool = require_tool("amtool")
    result = run([amtool, "check-config", str(AM_EXAMPLE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("severity", "receivers"),
    [("critical", "pager,team-chat"), ("warning", "team-chat"), ("info", "low-priority")],
)
def test_example_alertmanager_routes_by_severity(severity: str, receivers: str) -> None:
    amtool = require_tool("amtool")
    result = run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={AM_EXAMPLE}",
            f"severity={severity}",
            "alertname=PoolwatchPoolExhausted",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_alert_conventions() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    anchors = github_anchors(runbook)
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) >= 15
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(rf"{PREFIX}(?:[A-Z][a-z0-9]+)+", name), f"{name}: not {PREFIX}CamelCase"
        assert duration_seconds(rule.get("for", "")) > 0, f"{name}: no for:"
        assert rule["labels"]["severity"] in SEVERITIES, f"{name}: severity"
        notes = rule["annotations"]
        assert notes["summary"].strip(), f"{name}: summary"
        assert "{{" not in notes["summary"], f"{name}: keep the summary static"
        assert "$labels." in notes["description"], f"{name}: description is not templated"
        url = notes["runbook_url"]
        assert url == RUNBOOK_BASE + name.lower(), f"{name}: runbook_url {url}"
        assert name.lower() in anchors, f"{name}: no section #{name.lower()} in docs/runbook.md"


def test_every_runbook_section_has_an_alert() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    sections = set(re.findall(r"^## (Poolwatch\w+)\s*$", runbook, flags=re.MULTILINE))
    assert sections == {r["alert"] for r in alert_rules()}


def test_recording_rule_names_follow_convention() -> None:
    for name in recording_rule_names():
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+(:[a-z0-9_]+)?", name), name


def _gauges() -> set[str]:
    specs = [v for v in vars(metric_names).values() if isinstance(v, metric_names.MetricSpec)]
    return {s.name for s in specs if s.type in {"gauge", "info"}}


def _cumulative() -> set[str]:
    specs = [v for v in vars(metric_names).values() if isinstance(v, metric_names.MetricSpec)]
    return {s.name for s in specs if s.type in {"counter", "histogram"}}


def test_no_rate_over_gauges() -> None:
    """rate()/irate()/increase() only over counters and histogram series (postgres_exporter's
    mixin shipped rate() over a gauge: its issue #1277)."""
    gauges, cumulative = _gauges(), _cumulative()
    exprs: list[tuple[str, str]] = []
    for path, group in load_rule_groups():
        for rule in group["rules"]:
            exprs.append((f"{path.name} {rule.get('alert') or rule.get('record')}", rule["expr"]))
    for filename, dashboard in load_dashboards().items():
        exprs.extend((f"{filename} {where}", expr) for where, expr in dashboard_exprs(dashboard))
    checked = 0
    for where, expr in exprs:
        for name in rate_arguments(expr):
            checked += 1
            assert name not in gauges, f"{where}: rate over gauge {name}"
            assert histogram_base(name) in cumulative or name in cumulative, (
                f"{where}: rate over {name}, which is not a counter or histogram series"
            )
    assert checked >= 10


def _test_cases() -> list[tuple[str, dict[str, Any], int]]:
    """(test file, test group, evaluation interval in seconds) for every promtool test."""
    out = []
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        interval = duration_seconds(doc.get("evaluation_interval", "1m"))
        out.extend((path.name, case, interval) for case in doc["tests"])
    return out


def test_every_alert_is_unit_tested_at_its_for_boundary() -> None:
    """Each alert (and each severity of it) has a promtool test where it is quiet at one
    evaluation and firing, with its labels and annotations, at the next."""
    covered: set[tuple[str, str]] = set()
    for _, case, interval in _test_cases():
        by_time: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for check in case.get("alert_rule_test", []):
            when = duration_seconds(check["eval_time"])
            by_time.setdefault(check["alertname"], {})[when] = check.get("exp_alerts") or []
        for name, checks in by_time.items():
            for when, alerts in checks.items():
                before = checks.get(when - interval)
                for alert in alerts:
                    severity = alert["exp_labels"]["severity"]
                    was_quiet = before is not None and not any(
                        a["exp_labels"]["severity"] == severity for a in before
                    )
                    if was_quiet:
                        assert set(alert["exp_annotations"]) == {
                            "summary",
                            "description",
                            "runbook_url",
                        }, name
                        covered.add((name, severity))
    expected = {(r["alert"], r["labels"]["severity"]) for r in alert_rules()}
    assert expected <= covered, f"not tested at the for: boundary: {sorted(expected - covered)}"
