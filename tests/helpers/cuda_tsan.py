"""Run runtime/cuda/decode_nms.cu under ThreadSanitizer: the kernels compiled by g++ with
-fsanitize=thread against tests/cuda_emulation/cuda_threads.h (one OS thread per CUDA thread, a
real barrier for __syncthreads, relaxed __atomic builtins for atomicAdd & co.) and
executed through the same `DecodeNmsPlan` launches as on a GPU.

The sanitizer runtime must start with its process, so the kernels are built into a
small executable (tests/cuda_emulation/run_launches.cpp) that this module drives through files:
the plan's regions (workspace, locs, confs) and its launches, written as text.
A `#line` directive makes every report name the kernel source as decode_nms.cu:LINE.

The fiber emulation (cuda_emulator.py) runs fast and in both thread orders; this one
finds the races that order changes cannot (a plain read-modify-write where an atomic
belongs, a missing barrier that happens to work in both orders).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan
from tests.helpers.cuda_emulator import DYNAMIC_SHARED, DYNAMIC_SHARED_KERNELS, compiler

HERE = Path(__file__).resolve().parents[1] / "cuda_emulation"
TSAN_EXIT_CODE = 66
REGION_BITS = 40  # fake device addresses: region number << 40 | offset
REGIONS = ("workspace", "locs", "confs")
# Kernels with a block per class or image, written for any blockDim (the others' grids are
# sized from their block).
BLOCK_PER_GROUP = ("ssd_class_nms", "ssd_merge", "ssd_class_top_k", "ssd_agnostic_nms", "ssd_pack")


class SanitizerUnavailable(RuntimeError):
    """No C++ compiler, or one that cannot link a -fsanitize=thread program."""


def build(directory: Path, source: str | None = None, source_name: str | None = None,
          sanitize: bool = True, sanitizer_flags: Sequence[str] = ("-fsanitize=thread",)) -> Path:
    """Build the run_launches executable for `source` (default: the real decode_nms.cu)
    into `directory`, reused while the sources and flags are unchanged. `source_name` is
    what the #line directive calls the file (reports say `source_name:LINE`).
    sanitizer_flags: what `sanitize` adds (tests/helpers/cuda_asan.py passes AddressSanitizer's)."""
    cxx = compiler()
    if cxx is None:
        raise SanitizerUnavailable("no C++ compiler (g++ or c++) on PATH")
    text = KERNEL_SOURCE.read_text() if source is None else source
    if text.count(DYNAMIC_SHARED) != DYNAMIC_SHARED_KERNELS:
        raise ValueError(f"expected the dynamic shared declaration `{DYNAMIC_SHARED}` {DYNAMIC_SHARED_KERNELS} times "
                         "in the kernel source")
    name = source_name or str(KERNEL_SOURCE)
    emulated = f'#line 1 "{name}"\n' + text.replace(DYNAMIC_SHARED, "unsigned char* smem = emu::dynamic_shared();")
    flags = ["-std=c++17", "-g", "-O1", "-pthread", "-ffp-contract=off", "-fno-fast-math", "-fno-omit-frame-pointer"]
    if sanitize:
        flags.extend(sanitizer_flags)
    harness = (HERE / "run_launches.cpp").read_text() + (HERE / "cuda_threads.h").read_text()
    harness += "".join((HERE / name).read_text() for name in ("cuda_keywords.h", "kernel_adapters.h"))
    digest = hashlib.sha256("\0".join([emulated, harness, cxx, *flags]).encode()).hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    executable = directory / f"run_launches_{digest}"
    if not executable.exists():
        kernel = directory / f"decode_nms_threads_{digest}"
        kernel.mkdir(exist_ok=True)
        (kernel / "decode_nms_threads.cu").write_text(emulated)
        command = [cxx, *flags, "-I", str(HERE), "-I", str(kernel), str(HERE / "run_launches.cpp"),
                   "-o", str(executable)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            message = f"{' '.join(command)} failed:\n{result.stderr[-4000:]}"
            if sanitize and any(n in result.stderr.lower() for n in ("tsan", "asan", "ubsan")):
                raise SanitizerUnavailable(message)
            raise RuntimeError(message)
    return executable


@dataclass(frozen=True)
class TsanReport:
    """One ThreadSanitizer warning: its kind ("data race", ...) and the file:line of each
    stack frame, innermost first, of its two accesses."""

    kind: str
    frames: tuple[str, ...]
    text: str

    def lines_in(self, file_name: str) -> list[int]:
        """Lines of `file_name` (a path's last component) that the report's frames name."""
        lines = []
        for frame in self.frames:
            path, _, line = frame.rpartition(":")
            if Path(path).name == file_name and line.isdigit():
                lines.append(int(line))
        return lines


_WARNING = re.compile(r"^WARNING: ThreadSanitizer: (.+?) \(pid=\d+\)", re.M)
_FRAME = re.compile(r"^\s+#\d+ .*? (\S+?:\d+)(?::\d+)? ", re.M)


def parse_tsan_reports(stderr: str) -> list[TsanReport]:
    """The ThreadSanitizer warnings in a program's stderr."""
    reports = []
    blocks = stderr.split("==================")
    for block in blocks:
        warning = _WARNING.search(block)
        if warning:
            reports.append(TsanReport(warning.group(1), tuple(_FRAME.findall(block)), block.strip()))
    return reports


@dataclass
class ThreadedRun:
    detections: list
    reports: list[TsanReport]
    seconds: float
    stderr: str
    possible: np.ndarray | None = None  # (B, P) bool: the default boxes ssd_softmax took the softmax of
    probabilities: np.ndarray | None = None  # (B, C, P) float32: the kernel's softmax (possible columns)


class ThreadedDecodeNms:
    """The CUDA decode + NMS of `plan`, run by the threaded emulation in `executable`.

    block: optional block size for the block-per-class/image kernels (class NMS, merge,
    pack) instead of the plan's 256; the kernels are written for any blockDim, and fewer
    OS threads keep a sanitizer run short."""

    def __init__(self, executable: Path, plan: DecodeNmsPlan, priors_cxcywh: np.ndarray, work_dir: Path,
                 block: int | None = None) -> None:
        self.executable, self.plan, self.work_dir, self.block = executable, plan, work_dir, block
        self.priors = np.ascontiguousarray(priors_cxcywh, np.float32)
        work_dir.mkdir(parents=True, exist_ok=True)

    def _plan_text(self, batch: int, files: dict[str, Path], sizes: dict[str, int]) -> str:
        base = {name: (i + 1) << REGION_BITS for i, name in enumerate(REGIONS)}
        lines = [f"region {name} {sizes[name]} {files[name]}" for name in REGIONS]
        for launch in self.plan.launches(base["workspace"], base["locs"], base["confs"], batch):
            block = launch.block
            if self.block is not None and launch.kernel in BLOCK_PER_GROUP:
                block = (self.block, 1, 1)
            lines.append(f"launch {launch.kernel} {' '.join(map(str, launch.grid))} {' '.join(map(str, block))} "
                         f"{launch.shared_bytes}")
            for value in launch.args:
                if isinstance(value, np.uintp):
                    region, offset = REGIONS[(int(value) >> REGION_BITS) - 1], int(value) & ((1 << REGION_BITS) - 1)
                    lines.append(f"arg p {region} {offset}")
                elif isinstance(value, np.int32):
                    lines.append(f"arg i {int(value)}")
                elif isinstance(value, np.float32):
                    lines.append(f"arg f {int(np.float32(value).view(np.uint32))}")
                else:
                    raise TypeError(f"{launch.kernel}: unexpected argument {value!r}")
        return "\n".join(lines) + "\n"

    def _write_inputs(self, locs: np.ndarray, confs: np.ndarray) -> tuple[Path, dict[str, Path]]:
        """The batch's regions (workspace with the priors, locs, confs) written to files at
        their exact sizes, and the launch plan naming them: (plan file, {region: file})."""
        locs = np.ascontiguousarray(locs, np.float32)
        confs = np.ascontiguousarray(confs, np.float32)
        workspace = np.zeros(self.plan.workspace_bytes, np.uint8)
        start = self.plan.offsets["priors"]
        workspace[start:start + self.priors.nbytes] = self.priors.view(np.uint8).ravel()
        arrays = {"workspace": workspace, "locs": locs, "confs": confs}
        files = {name: self.work_dir / f"{name}.bin" for name in REGIONS}
        for name in REGIONS:
            arrays[name].tofile(files[name])
        sizes = {name: arrays[name].nbytes for name in REGIONS}
        plan_file = self.work_dir / "launches.txt"
        plan_file.write_text(self._plan_text(len(locs), files, sizes))
        return plan_file, files

    def __call__(self, locs: np.ndarray, confs: np.ndarray, image_sizes: Sequence[tuple[int, int]],
                 timeout: float = 600.0, halt_on_error: bool = False) -> ThreadedRun:
        """Detections of the batch, and the sanitizer's reports. halt_on_error: stop at
        the first report (the detections are then those of an unfinished run). Raises
        RuntimeError when the emulation itself fails (a barrier reached by part of a
        block, a crash)."""
        plan_file, files = self._write_inputs(locs, confs)
        batch = len(locs)
        env = dict(os.environ)
        env["TSAN_OPTIONS"] = (f"halt_on_error={int(halt_on_error)} exitcode={TSAN_EXIT_CODE} history_size=4 "
                               + env.get("TSAN_OPTIONS", ""))
        began = time.perf_counter()
        result = subprocess.run([str(self.executable), str(plan_file)], capture_output=True, text=True,
                                env=env, timeout=timeout)
        seconds = time.perf_counter() - began
        if result.returncode not in (0, TSAN_EXIT_CODE):
            raise RuntimeError(f"{self.executable.name} exited with {result.returncode}:\n{result.stderr[-4000:]}")
        out = np.fromfile(files["workspace"], np.uint8)
        counts = out[self.plan.offsets["det_count"]:][:batch * 4].view(np.int32).copy()
        width = self.plan.record_width
        packed = out[self.plan.offsets["packed"]:][:int(counts.sum()) * width * 4].view(np.float32)
        records = packed.reshape(-1, width).copy()
        detections = self.plan.detections(counts, records, image_sizes)
        p, c = self.plan.num_priors, self.plan.num_classes
        possible = out[self.plan.offsets["possible"]:][:batch * p].reshape(batch, p).astype(bool)
        probs = out[self.plan.offsets["probs"]:][:batch * c * p * 4].view(np.float32).reshape(batch, c, p).copy()
        return ThreadedRun(detections, parse_tsan_reports(result.stderr), seconds, result.stderr, possible, probs)


def mutate(source: str, find: str, replace: str, occurrence: int = 1,
           check: Callable[[str], bool] | None = None) -> tuple[str, int]:
    """`source` with the `occurrence`-th (1-based) `find` replaced on its own line, so
    that line numbers stay those of the original; returns (mutated source, 1-based line)."""
    at = -1
    for _ in range(occurrence):
        at = source.find(find, at + 1)
        if at < 0:
            raise ValueError(f"`{find}` occurs fewer than {occurrence} times in the kernel source")
    if "\n" in replace or "\n" in find:
        raise ValueError("mutations replace within one line")
    line = source.count("\n", 0, at) + 1
    mutated = source[:at] + replace + source[at + len(find):]
    if check is not None and not check(mutated):
        raise ValueError("mutation check failed")
    return mutated, line
