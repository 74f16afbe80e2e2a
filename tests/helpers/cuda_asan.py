"""runtime/cuda/decode_nms.cu under AddressSanitizer + UndefinedBehaviorSanitizer: the threaded
emulation's run_launches program (tests/helpers/cuda_tsan.py) built with
-fsanitize=address,undefined and -DEMU_EXACT_SIZES, so that every region (workspace, locs,
confs) is allocated at exactly its size and the dynamic shared memory at exactly what the plan
asks for, the slack beyond it poisoned (ASAN_POISON_MEMORY_REGION). The other emulations pad
their buffers: a read one element past the end of the logits, or a shared region the plan
under-allocates, passes there unseen and is reported here."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tests.helpers.cuda_tsan import SanitizerUnavailable, ThreadedDecodeNms
from tests.helpers.cuda_tsan import build as build_threads

ASAN_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-DEMU_EXACT_SIZES")
ASAN_EXIT_CODE = 23

__all__ = ["ASAN_FLAGS", "AsanDecodeNms", "AsanRun", "SanitizerUnavailable", "build"]


def build(directory: Path, source: str | None = None, source_name: str | None = None) -> Path:
    """The run_launches executable under ASan + UBSan with exact-size buffers."""
    return build_threads(directory, source, source_name, sanitize=True, sanitizer_flags=ASAN_FLAGS)


@dataclass(frozen=True)
class AsanRun:
    detections: list
    report: str | None  # the first sanitizer report (ASan's or UBSan's), or None
    stderr: str
    seconds: float
    possible: np.ndarray | None
    probabilities: np.ndarray | None


class AsanDecodeNms(ThreadedDecodeNms):
    """The plan's launches run by the ASan build; the same plan text as the TSan runner,
    the regions written at their exact sizes."""

    def __call__(self, locs: np.ndarray, confs: np.ndarray, image_sizes: Sequence[tuple[int, int]],
                 timeout: float = 600.0, halt_on_error: bool = True) -> AsanRun:
        plan_file, files = self._write_inputs(locs, confs)
        batch = len(locs)
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = f"detect_leaks=0:halt_on_error=1:exitcode={ASAN_EXIT_CODE}"
        env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:exitcode={ASAN_EXIT_CODE}"
        began = time.perf_counter()
        result = subprocess.run([str(self.executable), str(plan_file)], capture_output=True, text=True,
                                env=env, timeout=timeout)
        seconds = time.perf_counter() - began
        if result.returncode == ASAN_EXIT_CODE or "ERROR: AddressSanitizer" in result.stderr \
                or "runtime error:" in result.stderr:
            return AsanRun([], _first_report(result.stderr), result.stderr, seconds, None, None)
        if result.returncode != 0:
            raise RuntimeError(f"{self.executable.name} exited with {result.returncode}:\n{result.stderr[-4000:]}")
        out = np.fromfile(files["workspace"], np.uint8)
        counts = out[self.plan.offsets["det_count"]:][:batch * 4].view(np.int32).copy()
        width = self.plan.record_width
        packed = out[self.plan.offsets["packed"]:][:int(counts.sum()) * width * 4].view(np.float32)
        detections = self.plan.detections(counts, packed.reshape(-1, width).copy(), image_sizes)
        p, c = self.plan.num_priors, self.plan.num_classes
        possible = out[self.plan.offsets["possible"]:][:batch * p].reshape(batch, p).astype(bool)
        probs = out[self.plan.offsets["probs"]:][:batch * c * p * 4].view(np.float32).reshape(batch, c, p).copy()
        return AsanRun(detections, None, result.stderr, seconds, possible, probs)


def _first_report(stderr: str) -> str:
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if "ERROR: AddressSanitizer" in line or "runtime error:" in line:
            return "\n".join(lines[i:i + 40])
    return stderr[-4000:]
