"""The ONNX model on onnxruntime: the CPU provider by default; with onnxruntime-gpu the CUDA
provider (and, when asked for, the TensorRT provider), whose outputs then stay on the GPU
and go straight into the CUDA decode + NMS when pycuda is installed and the kernel compiles
(else decode + NMS runs in NumPy, after one RuntimeWarning saying why).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ssd_edge.common.errors import UsageError, require
from ssd_edge.runtime.backends.base import (
    THREADS_HELP,
    HostInputBuffer,
    check_network_io,
    check_threads,
    on_off,
    option,
)
from ssd_edge.runtime.cuda.resources import GpuError
from ssd_edge.runtime.detections import Detections, PostprocessOverrides
from ssd_edge.runtime.model_file import spec_from_onnx_metadata
from ssd_edge.runtime.postprocess.fast import postprocess
from ssd_edge.runtime.priors import default_boxes
from ssd_edge.runtime.spec import SpecError
from ssd_edge.runtime.stage_timer import NO_TIMER, StageTimer

DEFAULT_GPU_MAX_BATCH = 32
SPINNING_KEY = "session.intra_op.allow_spinning"
DEFAULT_SPINNING = False
"""Whether onnxruntime's idle intra-op threads spin waiting for work, unless the caller says.
onnxruntime's own default is on; off measured faster under load, where capture, display or
other processes share the cores (benchmarks/results/openvino_cpu.md, "spinning")."""


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """onnxruntime's options. threads: intra-op threads (None: onnxruntime's default, one per
    physical core). spinning: whether idle intra-op threads spin waiting for work (None:
    DEFAULT_SPINNING); spinning burns CPU between and after runs, which on a shared CPU
    slows the next run."""

    threads: int | None = option(None, THREADS_HELP, parse=int, metavar="N")
    spinning: bool | None = option(None, "whether idle intra-op threads spin waiting for work (default off)",
                                   choices=("on", "off"), parse=on_off)

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.spinning is not None and not isinstance(self.spinning, bool):
            raise UsageError(f"spinning is on (True) or off (False), got {self.spinning!r}")


def import_onnxruntime():
    return require("onnxruntime", "runtime", "running an ONNX model")


def open_session(path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None, spinning: bool | None = None):
    """An onnxruntime InferenceSession for the ONNX file at `path` on `providers` (in order of
    preference), logging errors only; `threads` intra-op threads (None: onnxruntime's
    default, one per physical core); `spinning`: whether idle intra-op threads spin
    (SPINNING_KEY; None: onnxruntime's default, on). SpecError naming the file when
    onnxruntime cannot load it."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
    if spinning is not None:
        options.add_session_config_entry(SPINNING_KEY, "1" if spinning else "0")
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise SpecError(f"{path}: onnxruntime cannot load this model ({type(exc).__name__}: {exc})") from None


def choose_providers(available: Sequence[str], flavour: str) -> list[str]:
    """Execution providers for a flavour: 'cpu'; 'auto' (CUDA when installed, then CPU);
    'tensorrt' (TensorRT, CUDA, CPU, as installed)."""
    if flavour == "cpu":
        wanted = ["CPUExecutionProvider"]
    elif flavour == "auto":
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif flavour == "tensorrt":
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        raise ValueError(f"unknown onnxruntime flavour {flavour!r}")
    chosen = [p for p in wanted if p in available]
    if flavour == "tensorrt" and "TensorrtExecutionProvider" not in chosen:
        raise GpuError(
            f"onnxruntime has no TensorRT execution provider here (available: {', '.join(available)}); "
            "install onnxruntime-gpu with TensorRT, or use backend='onnxruntime'"
        )
    return chosen


class OnnxRuntimeBackend:
    """Network on onnxruntime, decode + NMS in NumPy (CPU) or in the CUDA kernel (GPU).

    overrides: the caller's changes to the ModelSpec's postprocessing defaults.
    flavour: which providers (see choose_providers). options: OnnxRuntimeOptions.
    batch_size: the model's fixed batch, or None when its batch is dynamic.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        overrides: PostprocessOverrides = PostprocessOverrides(),
        flavour: str = "auto",
        options: OnnxRuntimeOptions = OnnxRuntimeOptions(),
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such model file")
        self.options = options
        self.spinning = DEFAULT_SPINNING if options.spinning is None else options.spinning
        providers = choose_providers(ort.get_available_providers(), flavour)
        self.session = open_session(self.path, providers, options.threads, self.spinning)
        self.spec = spec_from_onnx_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.config = overrides.apply(self.spec.postprocess)
        self.providers = self.session.get_providers()
        self.name = f"onnxruntime ({', '.join(self.providers)})"
        self.batch_size = check_network_io(
            self.spec, {i.name: i.shape for i in self.session.get_inputs()},
            {o.name: o.shape for o in self.session.get_outputs()}, self.path,
        )
        self.priors = default_boxes(self.spec)
        self._input = HostInputBuffer(self.spec.input_size, self.batch_size)
        self._gpu = None
        if "CUDAExecutionProvider" in self.providers:
            self._gpu = _OrtGpuDecode.try_create(self)

    @property
    def max_batch(self) -> int | None:
        """The most images one run takes: the fixed batch, the GPU decoder's, or no limit."""
        if self.batch_size is not None:
            return self.batch_size
        return self._gpu.max_batch if self._gpu is not None else None

    def input_buffer(self, batch: int) -> np.ndarray:
        """The reused (batch, 3, H, W) float32 array preprocessing writes into."""
        return self._input.view(batch)

    def detect(
        self, batch: int, image_sizes: Sequence[tuple[int, int]], timer: StageTimer = NO_TIMER
    ) -> list[Detections]:
        """Run the network on input_buffer(batch) (padded to the fixed batch) and decode.

        timer (a StageTimer) times `network` (session.run; with the CUDA provider it
        includes onnxruntime's own input and output copies) and `decode_nms`."""
        images = self._input.network_input(batch)
        if self._gpu is not None:
            return self._gpu.run(images, image_sizes, timer)
        with timer.stage("network"):
            locs, confs = self.session.run(list(self.spec.output_names), {self.spec.input_name: images})
        with timer.stage("decode_nms"):
            return postprocess(
                locs[: len(image_sizes)], confs[: len(image_sizes)], self.priors, image_sizes, self.config,
                self.spec.class_names,
            )

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()
            self._gpu = None
        self.session = None


class _OrtGpuDecode:
    """onnxruntime's CUDA outputs bound to our device buffers and decoded there."""

    def __init__(self, backend: OnnxRuntimeBackend) -> None:
        from ssd_edge.runtime.cuda.decode_nms import CudaDecodeNms
        from ssd_edge.runtime.cuda.resources import DeviceBuffer, Stream, close_at_exit, primary_context

        spec = backend.spec
        self.backend = backend
        self.max_batch = backend.batch_size or DEFAULT_GPU_MAX_BATCH
        self.context = primary_context()
        with self.context:
            self.stream = Stream()
            self.decoder = self.locs = self.confs = None
            try:
                self.decoder = CudaDecodeNms(
                    self.stream, backend.priors, spec.num_classes, self.max_batch, backend.config, spec.class_names
                )
                self.locs = DeviceBuffer(self.max_batch * spec.num_priors * 4 * 4, "locs")
                self.confs = DeviceBuffer(self.max_batch * spec.num_priors * spec.num_classes * 4, "confs")
            except BaseException:
                self._free()
                raise
        self.binding = backend.session.io_binding()
        close_at_exit(self)  # an unclosed one is freed at exit before the context is released

    @classmethod
    def try_create(cls, backend: OnnxRuntimeBackend) -> "_OrtGpuDecode | None":
        """The GPU decoder, or None (NumPy decoding) when pycuda is not installed or the
        kernel cannot be built here (no nvcc on PATH, a GPU nvcc cannot compile for): then one
        RuntimeWarning gives the reason."""
        try:
            import pycuda.driver  # noqa: F401
        except ImportError:
            return None
        try:
            return cls(backend)
        except GpuError as exc:
            warnings.warn(
                f"{backend.path}: decode + NMS runs in NumPy on the CPU, not in the CUDA kernel: {exc}",
                RuntimeWarning, stacklevel=5,  # the caller of Detector()
            )
            return None

    def run(
        self, images: np.ndarray, image_sizes: Sequence[tuple[int, int]], timer: StageTimer = NO_TIMER
    ) -> list[Detections]:
        """Network (timed with onnxruntime's input copy inside it) and decode + NMS on the GPU."""
        spec, rows = self.backend.spec, len(images)
        binding = self.binding
        binding.bind_cpu_input(spec.input_name, images)
        binding.bind_output(spec.output_names[0], "cuda", 0, np.float32, (rows, spec.num_priors, 4), self.locs.address)
        binding.bind_output(
            spec.output_names[1], "cuda", 0, np.float32, (rows, spec.num_priors, spec.num_classes), self.confs.address
        )
        with timer.stage("network"):
            self.backend.session.run_with_iobinding(binding)
            binding.synchronize_outputs()  # onnxruntime's stream is not ours: wait for it
        with self.context:
            return self.decoder.run(self.locs.address, self.confs.address, image_sizes, timer)

    def close(self) -> None:
        with self.context:
            self._free()

    def _free(self) -> None:
        """Free what exists (construction may have stopped part way). Inside the context."""
        for part, release in ((self.decoder, "close"), (self.locs, "free"), (self.confs, "free")):
            if part is not None:
                getattr(part, release)()
        self.stream.close()
