"""Frame rates over a sliding window: how fast frames arrive, how fast the model runs."""

from __future__ import annotations

import time
from collections import deque


class RateMeter:
    """Events per second over the last `window` events (0.0 until two have happened)."""

    def __init__(self, window: int = 30) -> None:
        if window < 2:
            raise ValueError(f"a rate needs a window of at least 2 events, got {window}")
        self._times: deque[float] = deque(maxlen=window)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    @property
    def rate(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class DurationMeter:
    """Mean duration of the last `window` timed calls, and the calls per second it allows."""

    def __init__(self, window: int = 30) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._durations: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self._durations.append(seconds)

    @property
    def mean_s(self) -> float:
        return sum(self._durations) / len(self._durations) if self._durations else 0.0

    @property
    def per_second(self) -> float:
        mean = self.mean_s
        return 1.0 / mean if mean > 0 else 0.0
