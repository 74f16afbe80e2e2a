"""TensorRT engine builds from our ONNX, on TensorRT 10.x (JetPack 6 ships 10.3) and 11.x.

What the installed TensorRT offers decides how to build, never its version string:

- Every network is explicit-batch (implicit batch is gone since 10.0, so no flag asks for it).
  A dynamic batch gets one optimization profile: min 1, opt and max `batch`.
- FP16: where `BuilderFlag.FP16` exists (10.x) it is set on the FP32 network; where it is
  gone (11.x: precision comes from the graph) the ONNX is converted to an FP16 graph first.
- INT8: only from a QDQ model of the `tensorrt` flavour, parsed as a strongly typed network
  (`NetworkDefinitionCreationFlag.STRONGLY_TYPED` where it exists; on 11.x every network
  is). No implicit INT8 calibrator.
- Workspace through `set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)`; DLA through
  `default_device_type`/`DLA_core` with `BuilderFlag.GPU_FALLBACK`; a timing cache per GPU
  and TensorRT version reused across builds; `build_serialized_network` only.

Writes `<name>.engine` and its sidecar `<name>.engine.json` (see `sidecar`, and
`model_file.sidecar_path`, the one place that names it). Without TensorRT or an
NVIDIA GPU (the CPU-only machines that run the test suite cannot install TensorRT) every
build is refused with one line saying what is missing (`TensorRTUnavailable`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ssd_edge.common.atomic import atomic_path
from ssd_edge.export.onnx_model import (
    ExportError,
    batch_size,
    fp16_graph,
    load_onnx,
    metadata,
    save,
    spec_of,
)
from ssd_edge.runtime.backends.tensorrt_logging import create, process_logger
from ssd_edge.runtime.backends.tensorrt_support import Capabilities, load_tensorrt, no_dla_cores
from ssd_edge.runtime.cuda.device import GpuInfo, NoGpu, gpu_info
from ssd_edge.runtime.model_file import QUANTIZATION_KEY, EngineSidecar, sidecar_path
from ssd_edge.runtime.spec import ModelSpec

PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTUnavailable(ExportError):
    """TensorRT, a GPU or a TensorRT feature this build needs is missing."""


@dataclass(frozen=True)
class EngineOptions:
    """precision: fp32, fp16 or int8 (int8 needs a `tensorrt`-flavour QDQ model).
    batch: the fixed batch of a static ONNX must equal it; for a dynamic ONNX it is the
    profile's opt and max. workspace_gib: the builder's scratch memory limit (None:
    TensorRT's default). dla_core: build for this DLA core, GPU fallback on.
    timing_cache: file to reuse (None: one per GPU and TensorRT version under the user's
    cache folder)."""

    precision: str = "fp32"
    batch: int = 1
    workspace_gib: float | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None
    progress: bool = True


def import_tensorrt() -> ModuleType:
    """tensorrt, or TensorRTUnavailable: not installed, older than 10, or an old JetPack."""
    try:
        tensorrt = load_tensorrt(error=TensorRTUnavailable)
    except ImportError as exc:
        raise TensorRTUnavailable(
            f"TensorRT is not installed (import tensorrt: {exc}); engines are built on the machine "
            "that runs them (JetPack ships it; on a PC: pip install tensorrt)"
        ) from None
    return tensorrt


Environment = tuple[ModuleType, Capabilities, GpuInfo]  # tensorrt, what it offers, the GPU


def build_environment() -> Environment:
    """tensorrt, what it offers and the GPU it builds for; TensorRTUnavailable if any is missing."""
    trt = import_tensorrt()
    capabilities = Capabilities.of(trt)
    problem = capabilities.missing()
    if problem:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__}: {problem}")
    try:
        gpu = gpu_info()
    except NoGpu as exc:
        raise TensorRTUnavailable(f"no NVIDIA GPU to build a TensorRT engine on: {exc}") from None
    return trt, capabilities, gpu


def profile_shapes(spec: ModelSpec, fixed_batch: int | None, batch: int) -> dict[str, dict[str, list[int]]]:
    """{input name: {"min", "opt", "max": [B, 3, H, W]}}: the ONNX's fixed batch, or for a
    dynamic one min 1 and opt = max = `batch`."""
    chw = [3, *spec.input_size]
    low, high = (fixed_batch, fixed_batch) if fixed_batch else (1, batch)
    return {spec.input_name: {"min": [low, *chw], "opt": [high, *chw], "max": [high, *chw]}}


def default_timing_cache(trt: ModuleType, gpu: GpuInfo) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    major, minor = gpu.compute_capability
    safe_name = "".join(c if c.isalnum() else "-" for c in gpu.name)
    return root / "ssd_edge" / "tensorrt" / f"{safe_name}-sm{major}{minor}-trt{trt.__version__}.timing"


def sidecar(
    spec: ModelSpec, trt: ModuleType, gpu: GpuInfo, options: EngineOptions, shapes: dict, source: Path
) -> EngineSidecar:
    """The `<engine>.json` beside every engine: what the runtime needs besides the engine
    (the ModelSpec) and what the engine is tied to (TensorRT version, GPU)."""
    return EngineSidecar(
        spec=spec, tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        precision=options.precision, dla_core=options.dla_core, profile=shapes, source_onnx=source.name,
    )


def _check_source(proto, path: Path, options: EngineOptions) -> None:
    record = json.loads(metadata(proto).get(QUANTIZATION_KEY, "null"))
    if options.precision == "int8":
        if record is None:
            raise ExportError(f"{path}: an INT8 engine is built from an INT8 QDQ model; this one is not quantized")
        if record.get("flavour") != "tensorrt":
            raise ExportError(
                f"{path}: quantized in the {record.get('flavour')!r} flavour; TensorRT needs the 'tensorrt' "
                "flavour (symmetric, zero points 0)"
            )
    elif record is not None:
        raise ExportError(f"{path}: an INT8 QDQ model; build it with precision int8 (--int8)")


def _parse(trt: ModuleType, builder, logger, path: Path, strongly_typed: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{path}: TensorRT cannot parse it: {errors[0] if errors else 'unknown error'}")
    return network, parser


def _configure(trt, builder, config, capabilities: Capabilities, options: EngineOptions, shapes: dict, dynamic: bool):
    """Set workspace, precision flag, profile, DLA and progress monitor on `config`; returns
    the monitor (or None), which the caller must keep alive until the build ends."""
    if options.workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    if options.precision == "fp16" and capabilities.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, shape in shapes.items():
            profile.set_shape(name, shape["min"], shape["opt"], shape["max"])
        config.add_optimization_profile(profile)
    if options.dla_core is not None:
        _use_dla(trt, builder, config, capabilities, options)
    monitor = None
    if options.progress and capabilities.progress_monitor:
        from ssd_edge.export.tensorrt_callbacks import build_progress

        monitor = build_progress(trt)
        config.progress_monitor = monitor
    return monitor


def _use_dla(trt, builder, config, capabilities: Capabilities, options: EngineOptions) -> None:
    if options.precision == "fp32":
        raise ExportError("DLA runs FP16 and INT8 layers only: add --half or --int8 to use --dla-core")
    cores = builder.num_DLA_cores if capabilities.dla else 0
    if cores == 0:
        raise TensorRTUnavailable(f"--dla-core {options.dla_core}: {no_dla_cores(trt.__version__)}")
    if not 0 <= options.dla_core < cores:
        raise ExportError(f"--dla-core {options.dla_core}: this device has DLA cores 0 to {cores - 1}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = options.dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _load_timing_cache(config, path: Path):
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False) and data:
        # A cache from another GPU or TensorRT: start a fresh one.
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))


def _serialize(
    trt, capabilities: Capabilities, gpu: GpuInfo, proto, onnx_path: Path, options: EngineOptions, shapes: dict
):
    """Parse, configure and build: the serialized engine (an IHostMemory)."""
    fp16_graph_needed = options.precision == "fp16" and capabilities.fp16_from_graph()
    strongly_typed = (options.precision == "int8" or fp16_graph_needed) and capabilities.strongly_typed_flag
    logger = process_logger(trt)
    builder = create(trt, "Builder", error=TensorRTUnavailable)
    config = builder.create_builder_config()
    with tempfile.TemporaryDirectory(prefix="ssd_edge_trt_") as work, logger.collecting() as errors:
        source = onnx_path
        if fp16_graph_needed:
            source = Path(work) / f"{onnx_path.stem}.fp16.onnx"
            save(fp16_graph(proto), source)
        network, _parser = _parse(trt, builder, logger, source, strongly_typed)  # the parser must outlive the build
        _monitor = _configure(trt, builder, config, capabilities, options, shapes, dynamic=batch_size(proto) is None)
        cache_path = options.timing_cache or default_timing_cache(trt, gpu)
        _load_timing_cache(config, cache_path)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = errors[-1] if errors else "no error message from TensorRT"
        raise ExportError(f"{onnx_path}: TensorRT could not build a {options.precision} engine: {detail}")
    _save_timing_cache(config, cache_path)
    return serialized


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    options: EngineOptions = EngineOptions(),
    *,
    environment: Environment | None = None,
    proto=None,
) -> Path:
    """Build `engine_path` (and its sidecar, `sidecar_path(engine_path)`) from the ONNX at
    `onnx_path`. A caller that has probed `build_environment()` or loaded the ONNX (`proto`)
    already passes them, so neither is done twice.

    Both files are replaced only once both are complete. Raises TensorRTUnavailable when
    TensorRT or a GPU is missing, ExportError for an unusable ONNX or option.
    """
    if options.precision not in PRECISIONS:
        raise ExportError(f"unknown engine precision {options.precision!r}; choose from {', '.join(PRECISIONS)}")
    trt, capabilities, gpu = environment or build_environment()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    proto = load_onnx(onnx_path) if proto is None else proto
    spec = spec_of(proto, onnx_path)
    _check_source(proto, onnx_path, options)
    fixed_batch = batch_size(proto)
    if fixed_batch and fixed_batch != options.batch:
        raise ExportError(f"{onnx_path}: exported for batch {fixed_batch}, "
                          f"asked for an engine of batch {options.batch}")
    shapes = profile_shapes(spec, fixed_batch, options.batch)
    serialized = _serialize(trt, capabilities, gpu, proto, onnx_path, options, shapes)
    info = sidecar(spec, trt, gpu, options, shapes, onnx_path)
    with atomic_path(engine_path) as engine_tmp, atomic_path(sidecar_path(engine_path)) as json_tmp:
        engine_tmp.write_bytes(memoryview(serialized))
        json_tmp.write_text(info.to_json())
    return engine_path
