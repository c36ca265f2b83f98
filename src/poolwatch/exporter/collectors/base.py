"""What every collector shares: the label folder and metric-family helpers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...metric_names import OTHER_LABEL_VALUE, MetricSpec
from ..exposition import Family


def gauge(spec: MetricSpec) -> Family:
    """An empty gauge family for ``spec`` (name, HELP and label names from the contract)."""
    return Family(spec.name, spec.help, "gauge", spec.labels)


def counter(spec: MetricSpec) -> Family:
    """An empty counter family for ``spec``."""
    return Family(spec.name, spec.help, "counter", spec.labels)


def text(value: Any) -> str:
    """A label value: NULL becomes the empty string."""
    return "" if value is None else str(value)


@dataclass(frozen=True)
class LabelFolder:
    """Keeps the ``top_n`` most frequent values per label and maps the rest to ``other``.

    Built once per snapshot from the session counts, then applied to every metric that
    carries the same label, so a value is kept or folded consistently across metrics.
    """

    kept: Mapping[str, frozenset[str]]

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, Iterable[tuple[str, int]]], top_n: int
    ) -> LabelFolder:
        """``counts`` maps a label name to (value, sessions) pairs."""
        kept: dict[str, frozenset[str]] = {}
        for label, pairs in counts.items():
            totals: dict[str, int] = {}
            for value, n in pairs:
                totals[value] = totals.get(value, 0) + n
            ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
            kept[label] = frozenset(value for value, _ in ranked[:top_n])
        return cls(kept)

    def __call__(self, label: str, value: Any) -> str:
        """``value`` as it should appear in ``label``: itself, or ``other``."""
        shown = text(value)
        kept = self.kept.get(label)
        if kept is None or shown in kept:
            return shown
        return OTHER_LABEL_VALUE


def add_sum(into: dict[tuple[str, ...], float], key: tuple[str, ...], value: float) -> None:
    """Accumulate a count under a (possibly folded) label key."""
    into[key] = into.get(key, 0.0) + value


def add_max(into: dict[tuple[str, ...], float], key: tuple[str, ...], value: Any) -> None:
    """Keep the maximum under a (possibly folded) label key; NULL values are ignored."""
    if value is None:
        return
    into[key] = max(into.get(key, 0.0), float(value))


def family(spec: MetricSpec, values: Mapping[tuple[str, ...], float]) -> Family:
    """A gauge family for ``spec`` with one sample per label key, in sorted order."""
    points = [(key, values[key]) for key in sorted(values)]
    return Family(spec.name, spec.help, "gauge", spec.labels, points)
