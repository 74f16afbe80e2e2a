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


def model_format(path: str | os.PathLike) -> str:
    """'onnx' or 'engine' from the file name; SpecError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise SpecError(
        f"{path}: not a model the runtime runs (expected .onnx or .engine); export a checkpoint with ssd-export"
    )


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
    engine is tied to (TensorRT version, GPU name and compute capability)."""

    spec: ModelSpec
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    precision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def built_for(self) -> str:
        """'TensorRT 10.3.0 on Orin (sm_87)', as far as the sidecar says."""
        trt = f"TensorRT {self.tensorrt_version}" if self.tensorrt_version else "an unrecorded TensorRT version"
        gpu = self.gpu_name or "an unrecorded GPU"
        if self.compute_capability:
            gpu += f" (sm_{self.compute_capability[0]}{self.compute_capability[1]})"
        return f"{trt} on {gpu}"


def read_sidecar(engine_path: str | os.PathLike) -> EngineSidecar:
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
    if not isinstance(data, dict) or "model_spec" not in data:
        raise SpecError(f"{path}: no 'model_spec' in the engine sidecar; rebuild the engine with ssd-export")
    try:
        spec = ModelSpec.from_dict(data["model_spec"])
    except SpecError as exc:
        raise SpecError(f"{path}: the ModelSpec is unusable: {exc}") from None
    gpu = data.get("gpu")
    gpu_name, capability = None, None
    if isinstance(gpu, dict):
        gpu_name = gpu.get("name")
        if isinstance(gpu.get("compute_capability"), (list, tuple)) and len(gpu["compute_capability"]) == 2:
            capability = tuple(int(v) for v in gpu["compute_capability"])
    elif isinstance(gpu, str):
        gpu_name = gpu
    known = {"model_spec", "tensorrt_version", "gpu", "precision"}
    return EngineSidecar(
        spec=spec,
        tensorrt_version=data.get("tensorrt_version"),
        gpu_name=gpu_name,
        compute_capability=capability,
        precision=data.get("precision"),
        extra={k: v for k, v in data.items() if k not in known},
    )
