"""What a model file is and the ModelSpec it carries: an ONNX model holds it in its
metadata_props (read through onnxruntime, so the `onnx` package is not needed), a
TensorRT engine beside it in `<name>.engine.json`, written by ssd-export.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssd_edge.runtime.spec import METADATA_KEY, ModelSpec, SpecError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".trt", ".plan")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
SIDECAR_FORMAT = "ssd_edge.engine"
SIDECAR_VERSION = 1
# The metadata_props key ssd-export --format int8 writes beside the ModelSpec's (METADATA_KEY):
# the quantization record (flavour, calibration), present only in an INT8 QDQ model.
QUANTIZATION_KEY = "ssd_edge.quantization"


def model_format(path: str | os.PathLike, allow_checkpoint: bool = False) -> str:
    """What a model file is, from its name: 'onnx', 'engine' (TensorRT: .engine, .trt,
    .plan) or, with `allow_checkpoint`, 'pytorch' (.pt, .pth); SpecError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if allow_checkpoint and suffix in CHECKPOINT_SUFFIXES:
        return "pytorch"
    if allow_checkpoint:
        raise SpecError(f"{path}: not a model file the toolkit knows (expected .onnx, .engine or a .pt checkpoint)")
    raise SpecError(
        f"{path}: not a model the runtime runs (expected .onnx or .engine); export a checkpoint with ssd-export"
    )


def format_label(path: str | os.PathLike) -> str:
    """How reports name a model's format: 'ONNX', 'ONNX int8' (its metadata holds a
    quantization record, whatever the file is called), 'TensorRT' or 'PyTorch'."""
    kind = model_format(path, allow_checkpoint=True)
    if kind == "onnx":
        return "ONNX int8" if QUANTIZATION_KEY in onnx_metadata(path) else "ONNX"
    return {"engine": "TensorRT", "pytorch": "PyTorch"}[kind]


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An ONNX model's metadata_props, read through onnxruntime (graph not optimised, so
    this costs a parse, not a session's set-up); SpecError naming the file if unreadable."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise SpecError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def spec_from_onnx_metadata(metadata: dict[str, str], source: str | os.PathLike) -> ModelSpec:
    """The ModelSpec in an ONNX model's custom metadata (metadata_props)."""
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise SpecError(
            f"{source}: no ssd-edge metadata ('{METADATA_KEY}' is missing from metadata_props); "
            "export the model with ssd-export so the runtime knows its input size, classes and default boxes"
        )
    try:
        return ModelSpec.from_json(text)
    except SpecError as exc:
        raise SpecError(f"{source}: the stored ModelSpec is unusable: {exc}") from None


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


@dataclass(frozen=True)
class EngineSidecar:
    """The `<engine>.json` ssd-export writes beside an engine: the ModelSpec, and what the
    engine is tied to (TensorRT version, GPU name and compute capability), its precision,
    DLA core, optimisation profile (input name -> min/opt/max shapes) and source ONNX."""

    spec: ModelSpec
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    precision: str | None = None
    dla_core: int | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    source_onnx: str | None = None

    def built_for(self) -> str:
        """'TensorRT 10.3.0 on Orin (sm_87)', as far as the sidecar says."""
        trt = f"TensorRT {self.tensorrt_version}" if self.tensorrt_version else "an unrecorded TensorRT version"
        gpu = self.gpu_name or "an unrecorded GPU"
        if self.compute_capability:
            gpu += f" (sm_{self.compute_capability[0]}{self.compute_capability[1]})"
        return f"{trt} on {gpu}"

    def to_dict(self) -> dict[str, Any]:
        gpu = {"name": self.gpu_name}
        if self.compute_capability is not None:
            gpu["compute_capability"] = list(self.compute_capability)
        return {
            "format": SIDECAR_FORMAT,
            "version": SIDECAR_VERSION,
            "model_spec": self.spec.to_dict(),
            "tensorrt_version": self.tensorrt_version,
            "gpu": gpu,
            "precision": self.precision,
            "dla_core": self.dla_core,
            "profile": self.profile,
            "source_onnx": self.source_onnx,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike) -> "EngineSidecar":
        """Parse and check a sidecar's content; SpecError naming `source` when unusable."""
        if not isinstance(data, dict):
            raise SpecError(f"{source}: not an engine sidecar (a JSON object was expected)")
        if data.get("format") != SIDECAR_FORMAT:
            raise SpecError(
                f"{source}: not an ssd-edge engine sidecar (format {data.get('format')!r}, expected "
                f"{SIDECAR_FORMAT!r}); rebuild the engine with ssd-export"
            )
        if data.get("version") != SIDECAR_VERSION:
            raise SpecError(
                f"{source}: engine sidecar version {data.get('version')!r} is not supported (this toolkit reads "
                f"{SIDECAR_VERSION}); rebuild the engine with this toolkit's ssd-export"
            )
        if "model_spec" not in data:
            raise SpecError(f"{source}: no 'model_spec' in the engine sidecar; rebuild the engine with ssd-export")
        try:
            spec = ModelSpec.from_dict(data["model_spec"])
        except SpecError as exc:
            raise SpecError(f"{source}: the ModelSpec is unusable: {exc}") from None
        gpu = data.get("gpu") if isinstance(data.get("gpu"), dict) else {}
        capability = gpu.get("compute_capability")
        if not (isinstance(capability, (list, tuple)) and len(capability) == 2):
            capability = None
        profile = data.get("profile")
        return cls(
            spec=spec,
            tensorrt_version=data.get("tensorrt_version"),
            gpu_name=gpu.get("name"),
            compute_capability=tuple(int(v) for v in capability) if capability else None,
            precision=data.get("precision"),
            dla_core=data.get("dla_core"),
            profile=profile if isinstance(profile, dict) else {},
            source_onnx=data.get("source_onnx"),
        )


def read_sidecar(engine_path: str | os.PathLike) -> EngineSidecar:
    """The sidecar beside `engine_path`; SpecError when it is missing or unusable."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise SpecError(
            f"{engine_path}: its ModelSpec sidecar {path.name} is missing; keep the .engine.json that "
            "ssd-export wrote beside the engine (or rebuild the engine with ssd-export)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable engine sidecar ({exc})") from None
    return EngineSidecar.from_dict(data, path)
