"""Per-stage timing of a Detector call, for benchmarks:

    timer = StageTimer()
    found = det(images, timer=timer)
    timer.seconds    # {"preprocess": ..., "host_to_device": ..., "network": ..., ...}

The stages, in pipeline order: `preprocess` (resize, BGR->RGB, scale into the input
buffer), `host_to_device` (the input copy to the GPU), `network` (the model itself),
`device_to_host` (copying the results back) and `decode_nms` (decode + NMS to final
Detections). A backend times only the stages it has as separate steps: on onnxruntime's
CPU provider there is no copy, and with its CUDA provider the input copy happens inside
the network call, so those stages are never entered (`timer.entered` says which were).

On the GPU, a stage ends with a synchronisation of the stream (`sync`), so each stage's
time is the work it queued, not how long queuing took. Without a timer nothing is
synchronised and nothing is measured (`NO_TIMER` does nothing).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

STAGES = ("preprocess", "host_to_device", "network", "device_to_host", "decode_nms")


class StageTimer:
    """Wall-clock seconds per stage, summed over every call it is handed to."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.entered: set[str] = set()

    @contextlib.contextmanager
    def stage(self, name: str, sync: Callable[[], None] | None = None) -> Iterator[None]:
        """Time the block as stage `name`; `sync` (a stream synchronisation) runs at its end,
        inside the timed span."""
        if name not in self.seconds:
            raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")
        start = time.perf_counter()
        try:
            yield
            if sync is not None:
                sync()
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.entered.add(name)

    def add(self, name: str, seconds: float) -> None:
        """Count `seconds` measured elsewhere (e.g. by module hooks) as stage `name`."""
        if name not in self.seconds:
            raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")
        self.seconds[name] += seconds
        self.entered.add(name)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.entered = set()


class _NoTimer(StageTimer):
    """The timer of an untimed call: every stage is a no-op and nothing is synchronised."""

    _nothing = contextlib.nullcontext()

    def stage(self, name: str, sync: Callable[[], None] | None = None) -> contextlib.nullcontext:
        return self._nothing

    def add(self, name: str, seconds: float) -> None:
        pass


NO_TIMER = _NoTimer()
