"""ssd-doctor's checks of the CUDA decode + NMS (`decode_nms.cu`).

* NVRTC (where the nvidia-cuda-nvrtc-cu12 wheel or a system libnvrtc is installed; no GPU
  needed): the kernel compiles for every Jetson SM, Hopper and this GPU, and every launch
  of an SSDLite-COCO-sized plan (and of the user's model) fits each SM's limits.
* On a GPU (pycuda and nvcc present): the kernel compiled for this GPU by the runtime's own
  launcher (`CudaDecodeNms`) agrees with the NumPy reference by the float32 kernel's rule
  (`kernel_cases.kernel_difference`: scores within 1e-6 of the float64 softmax, NumPy on the
  kernel's scores equal to its detections, end to end tie-aware; and tie-aware against the
  one-box-at-a-time `postprocess.reference` on the cases small enough for it) on random and
  edge-case outputs at batch 1 and 8; then decode + NMS is timed against NumPy on the same outputs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np

from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.checks import NO_GPU_MEANING, NVCC_FIX, PYCUDA_FIX, Machine
from ssd_edge.runtime.doctor.kernel_cases import (
    COCO_CLASSES,
    SSDLITE_PRIORS,
    KernelCase,
    kernel_cases,
    kernel_difference,
    ssdlite_case,
    tie_aware_difference,
)
from ssd_edge.runtime.doctor.verdict import Verdict, failed, missing, ok

NVRTC_FIX = "pip install nvidia-cuda-nvrtc-cu12==12.9.86 (a check only: the runtime compiles with nvcc)"
KERNEL_FIX = "attach this report to a bug report: the CUDA decode + NMS disagrees with NumPy on this GPU; " \
             "meanwhile run .onnx models with backend='onnxruntime-cpu'"
WARMUP, RUNS = 5, 50


def _plans(spec=None) -> list[tuple[str, int, int, PostprocessConfig]]:
    """(what, default boxes, classes, config) of the plans to hold against the SM limits."""
    plans = [(f"SSDLite-COCO ({SSDLITE_PRIORS} boxes x {COCO_CLASSES} classes)", SSDLITE_PRIORS, COCO_CLASSES,
              PostprocessConfig(top_k=300, max_detections=300)),
             (f"SSDLite-COCO, agnostic_nms ({SSDLITE_PRIORS} boxes x {COCO_CLASSES} classes)", SSDLITE_PRIORS,
              COCO_CLASSES, PostprocessConfig(top_k=300, max_detections=300, agnostic_nms=True))]
    if spec is not None:
        plans.append((f"this model ({spec.num_priors} boxes x {spec.num_classes} classes)", spec.num_priors,
                      spec.num_classes, spec.postprocess))
    return plans


def check_nvrtc(machine: Machine, spec=None, batches: tuple[int, ...] = (1, 8)) -> list[Verdict]:
    """Compile decode_nms.cu with NVRTC for the known SMs and this GPU's, and check launches."""
    from ssd_edge.runtime.cuda import kernel_resources as kr
    from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan

    try:
        nvrtc = kr.Nvrtc()
    except kr.KernelResourceError as exc:
        return [missing("NVRTC kernel check", f"NVRTC is not installed ({exc}): the kernel's compile check "
                        "for every Jetson SM is skipped", NVRTC_FIX)]
    architectures = list(kr.ARCHITECTURES)
    if machine.gpu is not None:
        mine = "sm_{}{}".format(*machine.gpu.compute_capability)
        architectures = [mine] + [a for a in architectures if a != mine]
    source = KERNEL_SOURCE.read_text()
    version = ".".join(map(str, nvrtc.version()))
    resources, problems, unchecked = {}, [], []
    supported = set(nvrtc.supported_architectures())
    for arch in architectures:
        if arch not in supported:  # a GPU newer than this NVRTC: nothing to say about the kernel
            unchecked.append(f"{arch}: NVRTC {version} does not know it")
        elif arch not in kr.ARCH_LIMITS:
            nvrtc.compile(source, KERNEL_SOURCE.name, arch)  # it compiles; no limits known to check against
            unchecked.append(f"{arch}: compiled, limits unknown")
        else:
            resources[arch] = kr.kernel_resources(source, arch, nvrtc=nvrtc)
    plans = []
    for what, priors, classes, config in _plans(spec):
        try:
            plans += [(f"{what} batch {batch}", batch, DecodeNmsPlan(priors, classes, batch, config))
                      for batch in batches]
        except ValueError as exc:  # the kernel cannot serve this model at all
            problems.append(f"{what}: {exc}")
    for arch, kernels in resources.items():
        for what, batch, plan in plans:
            for launch in kr.check_plan(plan, batch, kernels, kr.ARCH_LIMITS[arch]):
                problems += [f"{arch} {what} {launch.kernel}: {p}" for p in launch.problems]
    notes = kr.markdown_table(resources)
    compiled = ", ".join(resources)
    if problems:
        return [failed("NVRTC kernel check", f"decode_nms.cu on {compiled}: " + "; ".join(problems[:3]),
                       KERNEL_FIX, notes=notes + "\n\n" + "\n".join(f"- {p}" for p in problems))]
    extra = f" ({'; '.join(unchecked)})" if unchecked else ""
    return [ok("NVRTC kernel check", f"NVRTC {version} compiles decode_nms.cu for {compiled}{extra}; every launch "
               f"at batch {', '.join(map(str, batches))} fits", notes=notes)]


class _DeviceRun:
    """Raw outputs uploaded to the GPU and decoded by the runtime's CudaDecodeNms, in the
    process's primary context (the one TensorRT and onnxruntime use)."""

    def __init__(self) -> None:
        from ssd_edge.runtime.cuda.resources import Stream, primary_context

        self.context = primary_context()
        with self.context:
            self.stream = Stream()

    @contextmanager
    def loaded(self, case: KernelCase) -> Iterator[Callable[[], list]]:
        """A CudaDecodeNms for `case` with its outputs uploaded; yields a function that runs
        decode + NMS once and returns the Detections. Everything is freed on leaving."""
        from ssd_edge.runtime.cuda.decode_nms import CudaDecodeNms
        from ssd_edge.runtime.cuda.resources import DeviceBuffer

        with self.context:
            decoder = CudaDecodeNms(self.stream, case.priors, case.confs.shape[2], len(case.locs), case.config)
        buffers = []
        try:
            with self.context:
                for array, what in ((case.locs, "locs"), (case.confs, "confs")):
                    buffers.append(DeviceBuffer(array.nbytes, what))
                    self.stream.copy_to_device(buffers[-1].address, np.ascontiguousarray(array, np.float32))
                self.stream.synchronize()
            locs, confs = (buffer.address for buffer in buffers)

            def run() -> list:
                with self.context:
                    return decoder.run(locs, confs, case.image_sizes)

            def scores() -> tuple:  # the last run's (B, C, P) scores and (B, P) possible boxes
                with self.context:
                    return decoder.scores(len(case.locs))

            run.scores = scores
            yield run
        finally:
            with self.context:
                decoder.close()
                for buffer in buffers:
                    buffer.free()

    def detect(self, case: KernelCase) -> tuple:
        """Detections of `case`, decoded once on the GPU, with the kernel's scores (B, C, P)
        and possible boxes (B, P)."""
        with self.loaded(case) as run:
            found = run()
            return (found, *run.scores())

    def close(self) -> None:
        with self.context:
            self.stream.close()


def _numpy(case: KernelCase) -> list:
    from ssd_edge.runtime.postprocess.fast import postprocess

    return postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config)


def _reference(case: KernelCase) -> list:
    from ssd_edge.runtime.postprocess.reference import reference_postprocess

    return reference_postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config)


def _percentiles(seconds: list[float]) -> str:
    p50, p90 = np.percentile(np.array(seconds) * 1e3, (50, 90))
    return f"p50 {p50:.3f} ms, p90 {p90:.3f} ms"


def _time(run: Callable[[], object], warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _cuda_path_missing(machine: Machine) -> Verdict | None:
    if machine.gpu is None:
        return missing("CUDA decode + NMS", f"no GPU: {NO_GPU_MEANING}", "run ssd-doctor on the GPU machine")
    if not machine.pycuda:
        return missing("CUDA decode + NMS", "pycuda is missing: the kernel cannot be compiled or run", PYCUDA_FIX)
    if machine.nvcc is None:
        return missing("CUDA decode + NMS", "nvcc is not on PATH: pycuda cannot compile the kernel", NVCC_FIX)
    return None


def compare_with_numpy(decode: Callable[[KernelCase], tuple],
                       cases: Sequence[KernelCase]) -> tuple[str | None, list[str]]:
    """Run `decode(case)` (a GPU decode + NMS: its Detections per image, its (B, C, P)
    scores and (B, P) possible boxes) on every case, held to the float32 kernel's rule
    against NumPy's fast path (`kernel_difference`) and, tie-aware, against the
    one-box-at-a-time reference where the case is small enough. Returns the first
    disagreement ('on CASE: ...', or None) and one note per case."""
    notes = []
    for case in cases:
        got, probs, possible = decode(case)
        difference = kernel_difference(case, got, probs, possible)
        if difference:
            return f"differs from the NumPy fast path on {case.name}: {difference}", notes
        if case.reference:
            difference = tie_aware_difference(got, _reference(case), case.config)
            if difference:
                return f"differs from the NumPy reference on {case.name}: {difference}", notes
        notes.append(f"- {case.name}: {sum(len(d.labels) for d in got)} detections, agree")
    return None, notes


def check_kernel(machine: Machine) -> list[Verdict]:
    """The kernel on this GPU against NumPy (and the reference) on every case."""
    absent = _cuda_path_missing(machine)
    if absent is not None:
        return [absent]
    device, cases = _DeviceRun(), kernel_cases()
    try:
        problem, notes = compare_with_numpy(device.detect, cases)
    finally:
        device.close()
    if problem:
        return [failed("CUDA decode + NMS", problem, KERNEL_FIX, notes="\n".join(notes))]
    gpu = machine.gpu
    return [ok("CUDA decode + NMS", f"compiled for {gpu.name} (sm_{gpu.compute_capability[0]}"
               f"{gpu.compute_capability[1]}); agrees with NumPy (scores within 1e-6, the rest exact) on {len(cases)} "
               "random and edge cases at batch 1 and 8",
               notes="\n".join(notes))]


def check_kernel_speed(machine: Machine, warmup: int = WARMUP, runs: int = RUNS) -> list[Verdict]:
    """decode + NMS of SSDLite-sized outputs on the GPU and in NumPy, batch 1 and 8."""
    if _cuda_path_missing(machine) is not None:
        return []  # check_kernel has said why
    device, parts, notes = _DeviceRun(), [], []
    try:
        for batch in (1, 8):
            case = ssdlite_case(batch)
            with device.loaded(case) as run:
                gpu_times = _time(run, warmup, runs)
            cpu_times = _time(lambda: _numpy(case), 1, max(3, runs // 10))
            parts.append(f"batch {batch}: GPU {_percentiles(gpu_times)} (NumPy {_percentiles(cpu_times)})")
            notes.append(f"- batch {batch}: CUDA {_percentiles(gpu_times)} over {runs} runs after {warmup} warm-up; "
                         f"NumPy {_percentiles(cpu_times)} over {len(cpu_times)} runs")
    finally:
        device.close()
    what = (f"Timed: decode + NMS of {SSDLITE_PRIORS} boxes x {COCO_CLASSES} classes with the outputs already on "
            "the GPU: the kernels, the copy of the detections to the host and their unpacking "
            "(time.perf_counter around CudaDecodeNms.run); NumPy: runtime.postprocess.fast on the same outputs.")
    return [ok("decode + NMS speed", "; ".join(parts), notes=what + "\n\n" + "\n".join(notes))]
