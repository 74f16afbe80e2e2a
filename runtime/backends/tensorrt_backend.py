"""A TensorRT engine run through pycuda, its outputs decoded on the GPU.

The engine is deserialized once; its buffers are allocated once, by tensor name, at the
largest batch its profile allows; images go in from pinned host memory; everything is
queued on one stream (input copy, `execute_async_v3`, the decode + NMS kernels, the copy
of the detections) in the device's primary context, which TensorRT shares. The engine's
output buffers are handed to the decode kernels directly: no round trip through the host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ssd_edge.runtime.backends.base import check_network_io
from ssd_edge.runtime.backends.tensorrt_logging import create, process_logger
from ssd_edge.runtime.backends.tensorrt_support import load_tensorrt
from ssd_edge.runtime.cuda.decode_nms import CudaDecodeNms
from ssd_edge.runtime.cuda.resources import (
    CudaContext,
    DeviceBuffer,
    GpuError,
    PinnedBuffer,
    Stream,
    check,
    close_at_exit,
    import_pycuda,
    primary_context,
)
from ssd_edge.runtime.detections import Detections, PostprocessOverrides
from ssd_edge.runtime.model_file import EngineSidecar, read_sidecar, sidecar_path
from ssd_edge.runtime.priors import default_boxes
from ssd_edge.runtime.stage_timer import NO_TIMER, StageTimer


class EngineError(GpuError):
    """The engine cannot run here (another TensorRT version or GPU, or a broken file)."""


def import_tensorrt(path: Path, sidecar: EngineSidecar):
    """tensorrt, or GpuError: not installed, older than 10, or an old JetPack (see tensorrt_support)."""
    try:
        tensorrt = load_tensorrt(error=GpuError)
    except GpuError as exc:
        raise GpuError(f"{path}: {exc}") from None
    except ImportError as exc:
        raise GpuError(
            f"{path}: a TensorRT engine runs only where TensorRT and an NVIDIA GPU are ({exc}; it was built with "
            f"{sidecar.built_for()}). On this machine run the ONNX model with backend='onnxruntime' instead"
        ) from None
    return tensorrt


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT's options at run time: none (precision, batch and workspace are chosen when
    the engine is built, by `ssd-export --format engine`; an engine has no thread pool)."""


class EngineRunner:
    """One deserialized engine, its execution context and its I/O buffers.

    Input `images` (B, 3, H, W) float32 from `host_input` (pinned); outputs `locs`
    (B, P, 4) and `confs` (B, P, C) float32 stay on the device. Use inside the context.
    """

    def __init__(self, path: Path, sidecar: EngineSidecar, trt, cuda_context: CudaContext, stream: Stream) -> None:
        self.spec = sidecar.spec
        self.stream = stream
        self._runtime = create(trt, "Runtime")
        with process_logger(trt).collecting() as errors:
            try:
                engine = check(
                    "deserializeCudaEngine", self._runtime.deserialize_cuda_engine, path.read_bytes(), must_succeed=True
                )
            except GpuError as exc:
                said = "; ".join(errors) or str(exc)
                raise EngineError(
                    f"{path}: TensorRT {trt.__version__} on {cuda_context.name} "
                    f"(sm_{cuda_context.compute_capability[0]}{cuda_context.compute_capability[1]}) cannot load this "
                    f"engine, built with {sidecar.built_for()}. TensorRT said: {said}. Engines are tied to the "
                    "TensorRT version and GPU that built them: rebuild it here with `ssd-export --format engine`"
                ) from None
        self.engine = engine
        self._trt = trt
        self._describe_io(path)  # before anything is allocated for the engine
        self.context = check("createExecutionContext", engine.create_execution_context, must_succeed=True)
        self.buffers = {
            name: DeviceBuffer(self.max_batch * self._sample_bytes[name], name) for name in self._sample_bytes
        }
        height, width = self.spec.input_size
        self.host_input = PinnedBuffer((self.max_batch, 3, height, width), np.float32, "input images")
        for name, buffer in self.buffers.items():
            check(f"setTensorAddress({name})", self.context.set_tensor_address, name, buffer.address, must_succeed=True)
        self._bound_batch = None

    def _describe_io(self, path: Path) -> None:
        """Check the engine's tensors against the sidecar's ModelSpec and find the batch range.

        The buffers are sized from the spec: `locs` (B, P, 4) and `confs` (B, P, C), B up to
        the profile's largest batch. An engine whose own shapes differ (a sidecar left over from
        another model or input size) would let TensorRT write past them, so it is refused."""
        trt, engine, spec = self._trt, self.engine, self.spec
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        shapes = {name: tuple(int(d) for d in engine.get_tensor_shape(name)) for name in names}
        inputs = {n: shape for n, shape in shapes.items() if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}

        def explain(name: str, shape: tuple, expected: tuple) -> str:
            return (f"{path}: the engine's tensor '{name}' has shape {shape}, but its sidecar "
                    f"{sidecar_path(path)} describes {expected} (input {spec.input_size[0]}x{spec.input_size[1]}, "
                    f"{spec.num_priors} default boxes, {spec.num_classes} classes). The sidecar belongs to another "
                    "model: export the engine and its sidecar together again with `ssd-export --format engine`")

        outputs = {n: shape for n, shape in shapes.items() if n not in inputs}
        check_network_io(spec, inputs, outputs, path, error=EngineError, explain=explain)
        for name in [spec.input_name, *spec.output_names]:
            if engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                dtype = engine.get_tensor_dtype(name)
                raise EngineError(
                    f"{path}: engine tensor '{name}' is {dtype}; the runtime needs float32 inputs and outputs"
                )
        batch = shapes[spec.input_name][0]  # -1: dynamic
        if batch == -1:  # dynamic batch: the profile says how far
            low, _, high = engine.get_tensor_profile_shape(spec.input_name, 0)
            self.min_batch, self.max_batch, self.dynamic = int(low[0]), int(high[0]), True
        else:
            self.min_batch = self.max_batch = batch
            self.dynamic = False
        p, c = spec.num_priors, spec.num_classes
        self._sample_bytes = {
            spec.input_name: 3 * spec.input_size[0] * spec.input_size[1] * 4,
            spec.output_names[0]: p * 4 * 4,
            spec.output_names[1]: p * c * 4,
        }

    def infer(self, batch: int, timer: StageTimer = NO_TIMER) -> tuple[int, int]:
        """Queue input copy and inference for host_input[:batch]; returns the device
        addresses of locs and confs. With a StageTimer, `host_to_device` and `network`
        each end with a stream synchronisation."""
        spec = self.spec
        if self.dynamic and batch != self._bound_batch:
            check(
                "setInputShape", self.context.set_input_shape, spec.input_name,
                (batch, 3, *spec.input_size), must_succeed=True,
            )
            self._bound_batch = batch
        with timer.stage("host_to_device", self.stream.synchronize):
            self.stream.copy_to_device(self.buffers[spec.input_name].address, self.host_input.array[:batch])
        with timer.stage("network", self.stream.synchronize):
            check("executeAsyncV3", self.context.execute_async_v3, stream_handle=self.stream.handle, must_succeed=True)
        return self.buffers[spec.output_names[0]].address, self.buffers[spec.output_names[1]].address

    def close(self) -> None:
        self.context = None  # TensorRT frees context, engine and runtime with their last reference
        self.engine = None
        self._runtime = None
        self.host_input.free()
        for buffer in self.buffers.values():
            buffer.free()


class TensorRTBackend:
    """A `.engine` (with its `.engine.json`) on the GPU, decoded by the CUDA kernel."""

    name = "tensorrt"

    def __init__(
        self, path: str | os.PathLike, overrides: PostprocessOverrides = PostprocessOverrides(),
        sidecar: EngineSidecar | None = None, options: TensorRTOptions = TensorRTOptions(),
    ) -> None:
        self.options = options
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such engine file")
        self.sidecar = sidecar or read_sidecar(self.path)
        self.spec = self.sidecar.spec
        self.config = config = overrides.apply(self.spec.postprocess)
        trt = import_tensorrt(self.path, self.sidecar)
        import_pycuda()
        self.context = primary_context()
        self.name = f"tensorrt {trt.__version__} on {self.context.name}"
        with self.context:
            self.stream = Stream()
            try:
                self.engine = EngineRunner(self.path, self.sidecar, trt, self.context, self.stream)
                try:
                    self.decoder = CudaDecodeNms(
                        self.stream, default_boxes(self.spec), self.spec.num_classes, self.engine.max_batch, config,
                        self.spec.class_names,
                    )
                except BaseException:
                    self.engine.close()
                    raise
            except BaseException:
                self.stream.close()
                raise
        self.batch_size = None if self.engine.dynamic else self.engine.max_batch
        self.max_batch = self.engine.max_batch
        close_at_exit(self)  # an unclosed backend is freed at exit before the context is released

    def input_buffer(self, batch: int) -> np.ndarray:
        return self.engine.host_input.array[:batch]

    def detect(
        self, batch: int, image_sizes: Sequence[tuple[int, int]], timer: StageTimer = NO_TIMER
    ) -> list[Detections]:
        with self.context:
            rows = self.batch_size or max(batch, self.engine.min_batch)
            locs, confs = self.engine.infer(rows, timer)
            return self.decoder.run(locs, confs, image_sizes, timer)

    def close(self) -> None:
        with self.context:
            self.decoder.close()
            self.engine.close()
            self.stream.close()
