"""The ONNX model on OpenVINO (CPU, Intel GPU, NPU or OpenVINO's AUTO device selection),
decode + NMS in NumPy: the same ONNX file, ModelSpec, preprocessing buffer,
postprocessing and Detections as the onnxruntime CPU path.

The model is read straight from the .onnx file. OpenVINO's ONNX frontend keeps the file's
metadata_props under rt_info["framework"], so the ModelSpec (key `METADATA_KEY`) is read
without the `onnx` package. The model is compiled once with the LATENCY performance hint,
the thread count and an explicit inference precision; one infer request is made once and
reused, and the reused (B, 3, H, W) float32 input buffer is handed to it without a copy.
On the CPU with the default thread count it is also compiled for 1 thread, in the background
(the first calls do not wait for it), and each call runs whichever of the two is faster now
(ThreadChoice: on a CPU other work shares, 1 thread can be; see OpenVinoOptions).

Precision is always set explicitly, because OpenVINO's CPU plugin by itself computes in
bf16 on CPUs with AMX / AVX512_BF16, which changes the outputs (see PRECISIONS). What the
compiled model really uses is read back from it and shown in `name` (e.g.
'openvino 2026.4.1 (CPU, f32 instead of bf16)'), with the reason in `precision_note`.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ssd_edge.common.errors import SSDEdgeError, UsageError, require
from ssd_edge.runtime.backends.base import (
    THREADS_HELP,
    HostInputBuffer,
    check_network_io,
    check_threads,
    on_off,
    option,
)
from ssd_edge.runtime.backends.thread_choice import ThreadChoice
from ssd_edge.runtime.detections import Detections, PostprocessOverrides
from ssd_edge.runtime.model_file import QUANTIZATION_KEY, spec_from_onnx_metadata
from ssd_edge.runtime.postprocess.fast import postprocess
from ssd_edge.runtime.priors import default_boxes
from ssd_edge.runtime.spec import METADATA_KEY, SpecError
from ssd_edge.runtime.stage_timer import NO_TIMER, StageTimer

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PRECISIONS = ("f32", "bf16", "auto")
"""f32: float32 everywhere, equal to onnxruntime's CPU outputs to float rounding.
bf16: bfloat16 where the device supports it (CPUs with AMX or AVX512_BF16); elsewhere f32,
with a RuntimeWarning and `precision_note` saying why. auto: the device's fast native
precision (bf16 on such CPUs, f16 on GPUs and NPUs, else f32), the choice OpenVINO would
make by itself, made explicit."""
PARTITIONERS = ("static", "auto")
"""TBB_PARTITIONER of OpenVINO's CPU plugin: static gives each thread one fixed share of a
layer's work (tbb::static_partitioner), auto splits it into 32 shares that any free
thread takes (tbb's auto partitioner)."""


@dataclass(frozen=True)
class OpenVinoOptions:
    """OpenVINO's options. device: one of DEVICES. precision: one of PRECISIONS. threads:
    INFERENCE_NUM_THREADS; None: on the CPU, OpenVINO's default (one per physical core) or 1,
    whichever is faster as the CPU is loaded now (a model compiled for each, chosen by the
    latency of recent calls: thread_choice.py); elsewhere OpenVINO's default. pinning:
    ENABLE_CPU_PINNING on the CPU device (OpenVINO's own default on Linux is on; ours is off,
    because a thread pinned to a core that other work holds cannot move to a free one)."""

    device: str = option("CPU", "OpenVINO's device (default CPU)", choices=DEVICES)
    precision: str = option("f32", "OpenVINO's inference precision (default f32; bf16 runs f32 where the device "
                                   "has no bf16)", choices=PRECISIONS)
    threads: int | None = option(None, THREADS_HELP, parse=int, metavar="N")
    pinning: bool = option(False, "pin the CPU inference threads to cores (default off: on a CPU shared with other "
                                  "work a pinned thread waits for its busy core; see benchmarks/results/"
                                  "inference_under_load.md)", choices=("on", "off"), parse=on_off)
    partitioner: str | None = option(None, "how the CPU plugin shares each layer's work between its threads: static "
                                           "(one fixed share a thread) or auto (many small shares, taken by whichever "
                                           "thread is free); default: OpenVINO's choice",
                                     choices=PARTITIONERS)

    def __post_init__(self) -> None:
        if not isinstance(self.pinning, bool):
            raise UsageError(f"pinning is on (True) or off (False), got {self.pinning!r}")
        if self.device not in DEVICES:
            raise UsageError(f"unknown OpenVINO device {self.device!r}; choose from {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        check_threads(self.threads)
        if self.partitioner is not None and self.partitioner not in PARTITIONERS:
            raise UsageError(f"unknown partitioner {self.partitioner!r}; choose from {', '.join(PARTITIONERS)}")


class OpenVinoError(SSDEdgeError, RuntimeError):
    """OpenVINO cannot run the model as asked (no such device here); the message says what would."""


def import_openvino():
    """The `openvino` module, or MissingDependency naming the `openvino` extra."""
    return require("openvino", "openvino", "backend 'openvino'")


_core_lock = threading.Lock()
_core = None


def openvino_core():
    """The process's one `ov.Core`, made on first use and never freed: every backend, on every
    thread, compiles with it (OpenVINO's advice too; the backends set their options per compiled
    model, never on the Core).

    Not one Core per backend: OpenVINO's CPU plugin, made with each Core, gives the thread that
    makes it a signal stack of its own (sigaltstack, for AMX) and unmaps it when that Core goes,
    restoring the previous stack only when freed on the same thread, last made first freed. Two
    Cores freed in the order they were made, or one freed on another thread (a demo thread, the
    garbage collector), left the thread's signal stack pointing at unmapped memory, and the next
    signal with a handler (Ctrl-C; SIGCHLD once torch's DataLoader has set a handler for it)
    killed the process with SIGSEGV and no traceback (tests/test_openvino_signal_stack.py)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = import_openvino().Core()
        return _core


def choose_precision(requested: str, device: str, capabilities: Sequence[str] | None) -> tuple[str | None, str | None]:
    """The precision to compile with and, where it is not what was asked for, why.

    requested: one of PRECISIONS. capabilities: the device's OPTIMIZATION_CAPABILITIES
    (e.g. ['FP32', 'INT8', 'BIN', 'EXPORT_IMPORT'] on an AVX2 CPU, with 'BF16' on AMX /
    AVX512_BF16 CPUs), or None for the AUTO device, which has none of its own. Returns
    (precision, or None to leave it to the device; reason, or None).
    """
    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}; choose from {', '.join(PRECISIONS)}")
    if requested == "f32":
        return "f32", None
    if capabilities is None:  # AUTO: the device is chosen at compile time, each with its own capabilities
        return ("bf16", None) if requested == "bf16" else (None, None)
    caps = set(capabilities)
    if "BF16" in caps:
        return "bf16", None
    if requested == "bf16":
        return "f32", f"no bf16 on this {device} (its OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)})"
    if device != "CPU" and "FP16" in caps:
        return "f16", None
    return "f32", None


def _type_name(element_type: Any) -> str:
    """ov.Type -> 'f32', 'bf16', 'f16' (OpenVINO's Type.get_type_name())."""
    return element_type.get_type_name() if hasattr(element_type, "get_type_name") else str(element_type)


class OpenVinoBackend:
    """Network on OpenVINO, decode + NMS in NumPy.

    overrides: the caller's changes to the ModelSpec's postprocessing defaults.
    options: OpenVinoOptions (device, precision, threads).
    After construction: `precision` (what the compiled model computes in: 'f32', 'bf16',
    'f16'), `precision_note` (why it is not what was asked for, or None), `quantized`
    (the file is the project's INT8 QDQ model), `batch_size` (the model's fixed batch, or
    None when dynamic), `name`, `thread_choice` (the ThreadChoice between the CPU's default
    thread count and 1, or None where the count is fixed).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        overrides: PostprocessOverrides = PostprocessOverrides(),
        options: OpenVinoOptions = OpenVinoOptions(),
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such model file")
        self.options = options
        device, precision, threads = options.device, options.precision, options.threads
        ov = import_openvino()
        core = openvino_core()
        self.device = device
        wanted, self.precision_note = choose_precision(precision, device, self._capabilities(core, device))
        self.requested = precision if precision != "auto" else wanted
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises its own exception types for unreadable models
            raise SpecError(f"{self.path}: OpenVINO cannot read this model ({type(exc).__name__}: {exc})") from None
        metadata = _framework_metadata(model)
        self.spec = spec_from_onnx_metadata(metadata, self.path)
        self.config = overrides.apply(self.spec.postprocess)
        self.quantized = QUANTIZATION_KEY in metadata
        self._check_io(model)
        properties = self._properties(ov, wanted, threads)
        if device == "CPU":
            properties["ENABLE_CPU_PINNING"] = options.pinning
            if options.partitioner is not None:
                properties["TBB_PARTITIONER"] = options.partitioner.upper()
        # This compile comes first and on the caller's thread: it makes the CPU plugin, and with it the
        # plugin's signal stack for this thread (see openvino_core); the background one below reuses it.
        self.compiled = core.compile_model(model, device, properties)
        self._request = self.compiled.create_infer_request()
        self.thread_choice, self._single_thread_job, self._single_thread_request = None, None, None
        if device == "CPU" and threads is None:
            many = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
            if many > 1:  # the same model for 1 thread, run while it is the faster (thread_choice.py)
                self.thread_choice = ThreadChoice(many, single_ready=False)
                warm_up = {self.spec.input_name: np.zeros((self.batch_size or 1, 3, *self.spec.input_size), np.float32)}
                self._single_thread_job = _in_background(
                    _warm_request, core, model, device, {**properties, ov.properties.inference_num_threads: 1}, warm_up)
        self.precision = self._compiled_precision(wanted)
        if wanted is not None and self.precision != wanted and self.precision_note is None:
            self.precision_note = f"OpenVINO compiled in {self.precision} although {wanted} was asked for"
        if self.precision_note is not None:
            warnings.warn(f"{self.path}: OpenVINO runs in {self.precision}: {self.precision_note}",
                          RuntimeWarning, stacklevel=4)  # the caller of Detector()
        self.name = self._describe(ov)
        # by position: both compiled models (see thread_choice) list their outputs alike
        positions = {name: i for i, port in enumerate(self.compiled.outputs) for name in port.get_names()}
        self._outputs = [positions[name] for name in self.spec.output_names]
        self.priors = default_boxes(self.spec)
        self._input = HostInputBuffer(self.spec.input_size, self.batch_size)

    @staticmethod
    def _capabilities(core, device: str) -> list[str] | None:
        if device == "AUTO":
            return None
        available = list(core.available_devices)  # e.g. ['CPU', 'GPU.0', 'GPU.1']
        if not any(d.split(".")[0] == device for d in available):
            raise OpenVinoError(
                f"OpenVINO has no {device} device here (available: {', '.join(available) or 'none'}); "
                "use device='CPU' or 'AUTO'"
            )
        return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))

    @staticmethod
    def _properties(ov, precision: str | None, threads: int | None) -> dict:
        hint = ov.properties.hint
        properties = {hint.performance_mode: hint.PerformanceMode.LATENCY}
        if precision is not None:
            properties[hint.inference_precision] = getattr(ov.Type, precision)
        if threads is not None:
            properties[ov.properties.inference_num_threads] = threads
        return properties

    def _compiled_precision(self, wanted: str | None) -> str:
        try:
            return _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        except RuntimeError:  # a device (or AUTO) that does not report it
            return wanted or "device default"

    def _describe(self, ov) -> str:
        version = ov.get_version().split("-")[0]
        precision = self.precision
        if self.requested is not None and self.precision != self.requested:
            precision += f" instead of {self.requested}"  # precision_note says why
        details = [self.device, precision] + (["int8 QDQ"] if self.quantized else [])
        return f"openvino {version} ({', '.join(details)})"

    def _check_io(self, model) -> None:
        """check_network_io on the model's ports (a dynamic dimension as None); sets batch_size."""
        def shapes(ports) -> dict[str, list]:
            found = {}
            for port in ports:
                shape = port.get_partial_shape()
                dims = None if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]
                found.update({name: dims if dims is not None else [] for name in port.get_names()})
            return found

        self.batch_size = check_network_io(self.spec, shapes(model.inputs), shapes(model.outputs), self.path)

    @property
    def max_batch(self) -> int | None:
        """The most images one run takes: the fixed batch, or no limit."""
        return self.batch_size

    def input_buffer(self, batch: int) -> np.ndarray:
        """The reused (batch, 3, H, W) float32 array preprocessing writes into."""
        return self._input.view(batch)

    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """locs (B, P, 4) and confs (B, P, C) float32 for images (B, 3, H, W) float32. The
        arrays are OpenVINO's own output memory: valid until the next inference."""
        inputs = {self.spec.input_name: images}
        if self._single_thread_job is not None:
            self._take_single_thread_request()
        choice = self.thread_choice
        if choice is None:
            results = self._request.infer(inputs, share_inputs=True, share_outputs=True)
        else:
            threads = choice.next()
            request = self._single_thread_request if threads == 1 else self._request
            start = time.perf_counter()
            results = request.infer(inputs, share_inputs=True, share_outputs=True)
            if len(images):
                choice.record(threads, (time.perf_counter() - start) / len(images))
        return results[self._outputs[0]], results[self._outputs[1]]

    def _take_single_thread_request(self) -> None:
        """Once the background job has the 1-thread model compiled and warmed up, let the
        ThreadChoice use it; if the job failed, keep the default thread count alone, with a
        RuntimeWarning saying why."""
        if not self._single_thread_job.done():
            return
        job, self._single_thread_job = self._single_thread_job, None
        try:
            self._single_thread_request = job.result()
        except Exception as exc:  # OpenVINO's own exception types
            warnings.warn(f"{self.path}: OpenVINO could not compile the model for 1 thread; it keeps its "
                          f"{self.thread_choice.many} threads ({type(exc).__name__}: {exc})", RuntimeWarning,
                          stacklevel=6)  # the line calling the Detector
            self.thread_choice = None
        else:
            self.thread_choice.single_ready = True

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw network outputs (copies) for images (B, 3, H, W) float32 RGB in [0, 1]:
        locs (B, P, 4) box offsets and confs (B, P, C) logits, as onnxruntime's session.run
        gives them."""
        locs, confs = self._infer(np.ascontiguousarray(images, np.float32))
        return locs.copy(), confs.copy()

    def detect(
        self, batch: int, image_sizes: Sequence[tuple[int, int]], timer: StageTimer = NO_TIMER
    ) -> list[Detections]:
        """Run the network on input_buffer(batch) (padded to the fixed batch) and decode.

        timer (a StageTimer) times `network` (the infer request; on a GPU or NPU it includes
        OpenVINO's own input and output copies) and `decode_nms`."""
        images = self._input.network_input(batch)
        with timer.stage("network"):
            locs, confs = self._infer(images)
        with timer.stage("decode_nms"):  # postprocess copies what it keeps: no view of locs/confs survives
            return postprocess(
                locs[: len(image_sizes)], confs[: len(image_sizes)], self.priors, image_sizes, self.config,
                self.spec.class_names,
            )

    def close(self) -> None:
        # OpenVINO frees a request and its compiled model with their last reference (a background job
        # still running ends on its own and is dropped)
        self._request = self._single_thread_request = self._single_thread_job = None
        self.compiled = None


def _warm_request(core, model, device: str, properties: dict, inputs: dict):
    """An infer request of `model` compiled with `properties`, after one call on `inputs` (a
    compiled model's first call is several times slower: it is paid here, not by a caller)."""
    request = core.compile_model(model, device, properties).create_infer_request()
    request.infer(inputs)
    return request


def _in_background(function: Callable[..., Any], *args: Any) -> Future:
    """function(*args) on a thread of its own (OpenVINO lets go of the GIL while it compiles and
    infers). The thread is not a daemon: an interpreter that exits meanwhile waits for it (a
    compile of these models: a few hundred milliseconds)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openvino-compile")
    future = executor.submit(function, *args)
    executor.shutdown(wait=False)  # the thread ends with the function
    return future


def _framework_metadata(model) -> dict[str, str]:
    """The ONNX file's metadata_props that ssd-edge reads, which OpenVINO's ONNX frontend
    keeps under rt_info["framework"]: {key: value} as strings."""
    if not model.has_rt_info(["framework"]):
        return {}
    framework = model.get_rt_info()["framework"]
    keys = [METADATA_KEY, QUANTIZATION_KEY]
    return {key: model.get_rt_info(["framework", key]).astype(str) for key in keys if key in framework}
