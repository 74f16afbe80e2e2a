"""Which thread count runs the next inference: all of a backend's threads, or one, whichever
is faster on the CPU as it is loaded now.

Why (benchmarks/results/inference_under_load.md, run 5): OpenVINO's CPU plugin cuts each
layer into one fixed share per thread (oneDNN on oneTBB), and its threads wait for each other
between layers by spinning and sched_yield rather than sleeping. On a quiet 2-core CPU its
2 threads are 1.6-1.8x faster than 1. When other processes take turns on the cores, the
thread whose share was preempted holds the other up at every layer, and 1 thread is as fast
or faster (1.0-1.5x). The backend keeps a model compiled for each count and lets the
measured latency of recent calls choose; no load figure predicts it as well.

The rule, per call: run `current`. Every `period` calls of it, run the other count for
`probe_calls` calls (a probe); switch when the median of the probe is below `margin` times
the median of current's last `probe_calls` calls. While `current` is the many-thread count, probe
only when its recent median has risen above `slower` times its best (something else now
uses the CPU; on a quiet machine, after the first probe, nothing is spent on probing). A
probe that does not switch doubles the period, up to `max_period`; a switch resets it. The
first call of each count (the compiled model's own warm-up) is not counted.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from ssd_edge.common.errors import UsageError


class ThreadChoice:
    """The thread count for each call: `many` (the backend's own count, at least 2) or 1.

    Call `next()` for the count to run with and `record(threads, seconds_per_image)` after
    the call. `calls` counts the calls run with each count (what a benchmark reports)."""

    def __init__(self, many: int, *, period: int = 32, max_period: int = 256, probe_calls: int = 4,
                 window: int = 8, margin: float = 0.85, slower: float = 1.25) -> None:
        if isinstance(many, bool) or not isinstance(many, int) or many < 2:
            raise UsageError(f"ThreadChoice chooses between several threads and one, got many={many!r}")
        if not 1 <= probe_calls <= window <= period <= max_period:
            raise UsageError(f"need 1 <= probe_calls <= window <= period <= max_period, got {probe_calls}, "
                             f"{window}, {period}, {max_period}")
        self.many = many
        self.current = many
        self.calls = {many: 0, 1: 0}
        self._min_period, self._period, self._max_period = period, period, max_period
        self._probe_calls, self._margin, self._slower = probe_calls, margin, slower
        self._recent = {many: deque(maxlen=window), 1: deque(maxlen=window)}
        self._probe: list[float] | None = None
        self._since_probe = 0
        self._best_many = math.inf
        self._probed = False

    @property
    def other(self) -> int:
        return 1 if self.current == self.many else self.many

    def next(self) -> int:
        """The thread count the next call runs with."""
        return self.other if self._probe is not None else self.current

    def record(self, threads: int, seconds: float) -> None:
        """The latency (per image) of a call just run with `threads`."""
        self.calls[threads] += 1
        if self.calls[threads] == 1:  # the compiled model's first call: its own warm-up
            return
        if self._probe is not None:
            self._probe.append(seconds)
            if len(self._probe) >= self._probe_calls:
                self._decide()
            return
        recent = self._recent[threads]
        recent.append(seconds)
        if len(recent) < recent.maxlen:
            return
        median = statistics.median(recent)
        if threads == self.many:
            self._best_many = min(self._best_many, median)
        self._since_probe += 1
        if self._since_probe >= self._period and self._worth_probing(median):
            self._probe = []

    def _worth_probing(self, median: float) -> bool:
        return self.current == 1 or not self._probed or median > self._slower * self._best_many

    def _decide(self) -> None:
        probe, self._probe = self._probe, None
        self._probed, self._since_probe = True, 0
        latest = list(self._recent[self.current])[-len(probe):]  # as many, just before the probe
        if statistics.median(probe) < self._margin * statistics.median(latest):
            self.current = self.other
            self._recent[self.current].clear()
            self._recent[self.current].extend(probe)
            self._period = self._min_period
        else:
            self._period = min(2 * self._period, self._max_period)
