"""The metric contract: every metric name poolwatch exports, with its type and HELP text.

Metric names are public API (dashboards, alerts, docs and users' queries depend on
them), so they live here and nowhere else: ``pool`` (the in-process instrumentation),
``postgres`` (the exporter's PostgreSQL side and its own metrics) and ``pgbouncer``,
all importable from this package. ``tests/test_metric_contract.py`` checks that every
name here is documented in ``docs/metrics.md`` and that every metric a dashboard or alert
rule references is defined here.
"""

from poolwatch.metric_names.pgbouncer import *  # noqa: F403
from poolwatch.metric_names.pool import *  # noqa: F403
from poolwatch.metric_names.postgres import *  # noqa: F403
from poolwatch.metric_names.spec import MetricSpec

__all__ = ["MetricSpec"]
