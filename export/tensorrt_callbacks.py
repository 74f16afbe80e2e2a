"""Objects TensorRT calls back during a build: a logger and a progress monitor.

Imports tensorrt at module level: import this module only once tensorrt is known to be
installed (`ssd_edge.export.engine.build_environment`).
"""

from __future__ import annotations

import logging

import tensorrt as trt
from tqdm import tqdm

log = logging.getLogger("ssd_edge.export.tensorrt")


class KeepErrorsLogger(trt.ILogger):
    """Passes TensorRT's warnings and errors to `logging` and keeps the errors, so a failed
    build can say why in its exception."""

    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: list[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
            self.errors.append(msg)
            log.error(msg)
        elif severity == trt.ILogger.Severity.WARNING:
            log.warning(msg)


class BuildProgress(trt.IProgressMonitor):
    """One tqdm bar per build phase, nested phases indented below their parent; only the
    outermost bars stay on screen. TensorRT calls this from its build thread."""

    def __init__(self) -> None:
        trt.IProgressMonitor.__init__(self)
        self._bars: dict[str, tqdm] = {}
        self._depth: dict[str, int] = {}

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        depth = 0 if parent_phase is None else self._depth.get(parent_phase, 0) + 1
        self._depth[phase_name] = depth
        self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0, unit="step")

    def step_complete(self, phase_name: str, step: int) -> bool:
        bar = self._bars.get(phase_name)
        if bar is not None:
            bar.update(step + 1 - bar.n)  # `step` is the index of the step just completed
        return True  # False would cancel the build

    def phase_finish(self, phase_name: str) -> None:
        bar = self._bars.pop(phase_name, None)
        self._depth.pop(phase_name, None)
        if bar is not None:
            bar.close()
