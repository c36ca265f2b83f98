"""Generate poolwatch's Grafana dashboards and Prometheus rule files from one source.

The JSON beside this script and ``alerts/*.rules.yml`` are what users import; these modules
are where they are edited, so that panel ids, grid positions, datasource references, metric
names (``poolwatch.metric_names``) and alert thresholds (``poolwatch.thresholds``) stay
consistent. After a change run::

    python dashboards/generate.py

and commit the modules and every generated file (``tests/test_dashboards.py`` and
``tests/test_alert_rules.py`` check they agree byte for byte).

- ``panels.py``: panel builders and the dashboard envelope;
- ``promql.py``: PromQL pieces shared by dashboards and rules;
- ``pool_dashboard.py``, ``postgres_dashboard.py``, ``pgbouncer_dashboard.py``,
  ``chain_dashboard.py``: the dashboards, one function per row;
- ``rules.py``: the pool and PostgreSQL rules (its docstring: how to add an alert);
- ``pgbouncer_rules.py``, ``budget_rules.py``, ``server_rules.py``: PgBouncer's rules, the
  chain budget, the server's own alerts;
- ``rule_yaml.py``: rule files as data and their YAML text;
- ``prometheusrule.py``: the Kubernetes ``PrometheusRule`` wrapping the rule files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "alerts"
PROMETHEUS_RULE = HERE.parent / "deploy" / "kubernetes" / "rules" / "prometheusrule.yaml"
# Runs from a checkout without installing poolwatch: its sources and these siblings.
for _path in (HERE, HERE.parent / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from budget_rules import BUDGET_RULES  # noqa: E402
from chain_dashboard import chain_dashboard  # noqa: E402
from pgbouncer_dashboard import pgbouncer_dashboard  # noqa: E402
from pgbouncer_rules import PGBOUNCER_RULES  # noqa: E402
from pool_dashboard import pool_dashboard  # noqa: E402
from postgres_dashboard import postgres_dashboard  # noqa: E402
from prometheusrule import prometheus_rule  # noqa: E402
from rule_yaml import RuleFile, render_rules  # noqa: E402
from rules import POOL_RULES, POSTGRES_RULES  # noqa: E402
from server_rules import SERVER_RULES  # noqa: E402

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "sqlalchemy-pool.json": pool_dashboard,
    "postgresql-sessions.json": postgres_dashboard,
    "pgbouncer.json": pgbouncer_dashboard,
    "connection-chain.json": chain_dashboard,
}
RULE_FILES: tuple[RuleFile, ...] = (
    BUDGET_RULES,
    PGBOUNCER_RULES,
    POOL_RULES,
    POSTGRES_RULES,
    SERVER_RULES,
)


def render(builder: Callable[[], dict[str, Any]]) -> str:
    """The JSON text of one dashboard, as committed."""
    return json.dumps(builder(), indent=2, ensure_ascii=False) + "\n"


def generated_files() -> dict[Path, str]:
    """Every generated file and its text: dashboards here, rule files in ``alerts/``, and
    the PrometheusRule holding those rule files in ``deploy/kubernetes/rules/``."""
    out = {HERE / name: render(builder) for name, builder in DASHBOARDS.items()}
    rules = {rf.filename: render_rules(rf) for rf in RULE_FILES}
    out.update({ALERTS / name: text for name, text in rules.items()})
    out[PROMETHEUS_RULE] = prometheus_rule(sorted(rules.items()))
    return out


def main() -> int:
    """Write every dashboard and rule file."""
    for path, text in generated_files().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
