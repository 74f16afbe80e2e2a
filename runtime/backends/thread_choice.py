"""Which thread count runs the next inference: all of a backend's threads, or one, whichever
is faster on the CPU as it is loaded now.

Why (benchmarks/results/inference_under_load.md, run 5): OpenVINO's CPU plugin cuts each
layer into one fixed share per thread (oneDNN on oneTBB), and its threads wait for each other
between layers by spinning and sched_yield rather than sleeping. On a quiet 2-core CPU its
2 threads are 1.3-1.7x faster than 1. When other processes take turns on the cores, the
thread whose share was preempted holds the others up at every layer, and 1 thread can be
faster (1.35x under processes that work and sleep in bursts of milliseconds; about equal
under busy loops). The backend keeps a model compiled for each count and lets the measured
latency of recent calls choose: no load figure says which count is faster.

The rule, per call: run `current`. Every `period` calls of it, probe: run the two counts in
turn, `probe_calls` calls each (in turn, so both see the same load: a load that comes in
bursts makes consecutive windows differ more than the two counts do), and switch when the
median of the other count's calls is below `margin` times the current's. While `current` is
the many-thread count, probe only when the median of its last `window` calls has risen
above `slower` times its best (something else now uses the CPU; on a quiet machine, after
the first probe, nothing is spent on probing). A probe that does not switch doubles the
period, up to `max_period`; a switch resets it. The first call of each count (the compiled
model's own warm-up) is not counted.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from ssd_edge.common.errors import UsageError


class ThreadChoice:
    """The thread count for each call: `many` (the backend's own count, at least 2) or 1.

    Call `next()` for the count to run with and `record(threads, seconds_per_image)` after
    the call. `calls` counts the calls run with each count (what a benchmark reports).
    `single_ready`: whether 1 thread can run yet (the backend compiles for it in the
    background and sets it); until then there is no probe."""

    def __init__(self, many: int, *, period: int = 32, max_period: int = 256, probe_calls: int = 6,
                 window: int = 8, margin: float = 0.9, slower: float = 1.25, single_ready: bool = True) -> None:
        if isinstance(many, bool) or not isinstance(many, int) or many < 2:
            raise UsageError(f"ThreadChoice chooses between several threads and one, got many={many!r}")
        if not 1 <= probe_calls <= window <= period <= max_period:
            raise UsageError(f"need 1 <= probe_calls <= window <= period <= max_period, got {probe_calls}, "
                             f"{window}, {period}, {max_period}")
        self.many = many
        self.current = many
        self.single_ready = single_ready
        self.calls = {many: 0, 1: 0}
        self._min_period, self._period, self._max_period = period, period, max_period
        self._probe_calls, self._margin, self._slower = probe_calls, margin, slower
        self._recent = {many: deque(maxlen=window), 1: deque(maxlen=window)}
        self._probe: dict[int, list[float]] | None = None  # while probing: each count's latencies
        self._since_probe = 0
        self._best_many = math.inf
        self._probed = False

    @property
    def other(self) -> int:
        return 1 if self.current == self.many else self.many

    def next(self) -> int:
        """The thread count the next call runs with."""
        if self._probe is None:
            return self.current
        other, current = self._probe[self.other], self._probe[self.current]
        return self.other if len(other) <= len(current) else self.current  # in turn, the other first

    def record(self, threads: int, seconds_per_image: float) -> None:
        """The latency of a call just run with `threads`, per image."""
        self.calls[threads] += 1
        if self.calls[threads] == 1:  # the compiled model's first call: its own warm-up
            return
        if self._probe is not None:
            self._probe[threads].append(seconds_per_image)
            if min(len(samples) for samples in self._probe.values()) >= self._probe_calls:
                self._decide()
            return
        recent = self._recent[threads]
        recent.append(seconds_per_image)
        if len(recent) < recent.maxlen:
            return
        median = statistics.median(recent)
        if threads == self.many:
            self._best_many = min(self._best_many, median)
        self._since_probe += 1
        if self._since_probe >= self._period and self._worth_probing(median):
            self._probe = {self.many: [], 1: []}

    def _worth_probing(self, median: float) -> bool:
        if not self.single_ready:
            return False
        return self.current == 1 or not self._probed or median > self._slower * self._best_many

    def _decide(self) -> None:
        probe, self._probe = self._probe, None
        self._probed, self._since_probe = True, 0
        if statistics.median(probe[self.other]) < self._margin * statistics.median(probe[self.current]):
            self.current = self.other
            self._recent[self.current].clear()
            self._period = self._min_period
        else:
            self._period = min(2 * self._period, self._max_period)
        self._recent[self.current].extend(probe[self.current])
