"""A fixed-bucket histogram, the shape every duration poolwatch records has."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from poolwatch.metric_names import DURATION_BUCKETS


class Histogram:
    """A fixed-bucket histogram: per-bucket counts (not cumulative), sum and count.

    Not thread-safe on its own: :class:`PoolStats` calls it under its lock.
    """

    __slots__ = ("bounds", "counts", "exemplars", "first", "sum")

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        # Most observations land in the first bucket (sub-100-us checkouts): the hot path
        # compares against it before paying for a bisect call.
        self.first = self.bounds[0]
        self.counts: list[int] = [0] * (len(self.bounds) + 1)  # last one is +Inf
        self.sum = 0.0
        # Latest exemplar per bucket: (labels, value, unix timestamp) or None.
        self.exemplars: list[tuple[dict[str, str], float, float] | None] = [None] * len(self.counts)

    def observe(self, value: float) -> int:
        """Add one observation; returns the index of the bucket it landed in."""
        index = 0 if value <= self.first else bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.sum += value
        return index

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count), ...]`` ending with ``("+Inf", count)``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else _fmt(bound), running))
        return out

    def copy(self) -> Histogram:
        """A snapshot (taken under the owner's lock)."""
        other = Histogram.__new__(Histogram)
        other.bounds = self.bounds
        other.first = self.first
        other.counts = list(self.counts)
        other.sum = self.sum
        other.exemplars = list(self.exemplars)
        return other


def _fmt(bound: float) -> str:
    return repr(float(bound))
