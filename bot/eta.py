"""How long a generation usually takes, from the recent ones of the same model and quality (pure).

`GenerationTimes` keeps the last `KEEP` durations (seconds, measured by the caller's clock) per
model and quality and answers the median, which one slow outlier does not move. The status text
rounds what it shows (`rounded_seconds`), so a refresh changes it only when the user would see a
difference.
"""

from __future__ import annotations

import statistics
from collections import deque

KEEP = 20
MIN_SAMPLES = 1


class GenerationTimes:
    """Recent generation durations by (model, quality), and their median."""

    def __init__(self, *, keep: int = KEEP) -> None:
        self._keep = keep
        self._times: dict[tuple[str, str], deque[float]] = {}

    def record(self, *, model: str, quality: str | None, seconds: float) -> None:
        """Remember one successful generation's duration."""
        if seconds < 0:
            return
        key = (model, quality or "")
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self._keep)
        times.append(seconds)

    def estimate(self, *, model: str, quality: str | None) -> float | None:
        """Return the median of the recent durations, or None before the first one."""
        times = self._times.get((model, quality or ""))
        if not times or len(times) < MIN_SAMPLES:
            return None
        return statistics.median(times)


def rounded_seconds(seconds: float) -> int:
    """Round a duration for people: whole seconds under 10, then steps of 5 (never below 1)."""
    if seconds < 10:
        return max(1, round(seconds))
    return int(5 * round(seconds / 5))
