"""``poolwatch.thresholds``: the one table alerts, dashboards and the demo read."""

from __future__ import annotations

import re

import pytest

from poolwatch import thresholds
from poolwatch.thresholds import Threshold


def test_number_is_written_as_promql_and_the_dashboards_write_it() -> None:
    assert thresholds.POOL_NEAR_CAPACITY.number == "0.85"
    assert thresholds.POSTGRES_LOCK_WAITS.number == "3"
    assert Threshold("A", "info", "1m", 300.0).number == "300"


def test_a_threshold_without_a_value_says_which_alert_when_asked_for_its_number() -> None:
    with pytest.raises(ValueError, match="PoolwatchConnectionBudgetExceeded has no threshold"):
        _ = thresholds.CONNECTION_BUDGET_EXCEEDED.number


def test_every_entry_is_a_well_formed_alert() -> None:
    duration = re.compile(r"\d+[smh]")
    for th in thresholds.ALL:
        assert th.alert.startswith("Poolwatch"), th
        assert th.severity in {"critical", "warning", "info"}, th
        assert duration.fullmatch(th.for_), th
        assert th.window is None or duration.fullmatch(th.window), th
    assert len({(th.alert, th.severity) for th in thresholds.ALL}) == len(thresholds.ALL)
    named = {v for v in vars(thresholds).values() if isinstance(v, Threshold)}
    assert named == set(thresholds.ALL), "a Threshold missing from ALL is never generated"
