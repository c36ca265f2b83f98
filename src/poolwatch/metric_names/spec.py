"""The type every entry of the metric contract has."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """Name, Prometheus type and HELP text of one exported metric."""

    name: str
    type: str  # "gauge" | "counter" | "histogram" | "info"
    help: str
    labels: tuple[str, ...] = ()
