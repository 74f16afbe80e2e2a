"""The progress monitor TensorRT calls back during a build (the logger is the runtime's:
`ssd_edge.runtime.backends.tensorrt_logging`).

tensorrt is never imported here: `build_progress(trt)` makes the monitor class from the
module the caller imported, and only where that TensorRT has `IProgressMonitor` (10.0 on),
so this module imports on any TensorRT, or none.
"""

from __future__ import annotations

from types import ModuleType

from tqdm import tqdm


def build_progress(trt: ModuleType):
    """A new `trt.IProgressMonitor` drawing the build's phases as tqdm bars, or None where
    this TensorRT has no progress monitor."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class BuildProgress(base):
        """One tqdm bar per build phase, nested phases indented below their parent; only the
        outermost bars stay on screen. TensorRT calls this from its build thread."""

        def __init__(self) -> None:
            base.__init__(self)
            self._bars: dict[str, tqdm] = {}
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = 0 if parent_phase is None else self._depth.get(parent_phase, 0) + 1
            self._depth[phase_name] = depth
            self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0,
                                          unit="step")

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

    return BuildProgress()
