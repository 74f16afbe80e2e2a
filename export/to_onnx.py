"""ONNX export of the network alone: images -> (locs, confs), ModelSpec in metadata_props."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ssd_edge.fileio import atomic_path
from ssd_edge.runtime.spec import METADATA_KEY

DEFAULT_OPSET = 17


def export_onnx(model, path: str | os.PathLike, *, batch: int = 1, dynamic: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """Export `model` (an SSD) to `path`, atomically.

    Input `images` float32 (B, 3, H, W), RGB in [0, 1]; outputs `locs` (B, P, 4) and
    `confs` (B, P, C); normalisation is inside the graph. With `dynamic` the batch
    dimension is symbolic ("batch"), else fixed at `batch`.
    """
    import onnx
    import torch

    from ssd_edge.models.ssd import RawOutputs

    spec = model.spec
    wrapper = RawOutputs(model).eval()
    param = next(model.parameters())
    example = torch.zeros((batch, 3, *spec.input_size), dtype=param.dtype, device=param.device)
    input_name, output_names = spec.input_name, list(spec.output_names)
    dynamic_axes = {name: {0: "batch"} for name in [input_name, *output_names]} if dynamic else None
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[input_name],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        set_metadata(proto, {METADATA_KEY: spec.to_json()})
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def set_metadata(proto, entries: dict[str, str]) -> None:
    """Set (replace) string entries in an ONNX model's metadata_props."""
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
