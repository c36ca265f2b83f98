"""Reconnect backoff shared by the exporter's targets: after a failed attempt the next one
waits 0.5 s, doubling to 8 s (with jitter), so a down server costs one attempt per
interval and every scrape in between answers at once with the last reason."""

from __future__ import annotations

import random
import time

BACKOFF_MIN = 0.5
BACKOFF_MAX = 8.0


class Backoff:
    """When the next connection attempt may be made, and why the last one failed."""

    def __init__(self, low: float = BACKOFF_MIN, high: float = BACKOFF_MAX) -> None:
        self.low = low
        self.high = high
        self.last_error = "not connected yet"
        self._delay = 0.0
        self._next = 0.0

    def remaining(self) -> float:
        """Seconds until the next attempt may be made (0 when it may be made now)."""
        return max(0.0, self._next - time.monotonic())

    def failed(self, reason: str) -> None:
        """An attempt failed with ``reason``: push the next one out."""
        self.last_error = reason
        self._delay = min(self.high, max(self.low, self._delay * 2))
        self._next = time.monotonic() + self._delay * random.uniform(0.8, 1.0)

    def succeeded(self) -> None:
        """An attempt worked: the next failure starts from the shortest delay again."""
        self._delay = 0.0
        self._next = 0.0

    def allow_now(self) -> None:
        """Let the next attempt go at once (the start-up check)."""
        self._next = 0.0
