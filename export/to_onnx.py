"""ONNX export of the network alone: images -> (locs, confs), ModelSpec in metadata_props.

Uses torch's TorchScript-based exporter (`dynamo=False`): the dynamo exporter needs
onnxscript, which the toolkit does not depend on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ssd_edge.common.atomic import atomic_path
from ssd_edge.export.onnx_model import ExportError, save, set_metadata, simplify
from ssd_edge.runtime.spec import METADATA_KEY

__all__ = ["DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "export_onnx", "set_metadata"]

DEFAULT_OPSET = 17
MIN_OPSET = 14  # HardSwish (MobileNetV3) is an ONNX operator from opset 14
MAX_OPSET = 20  # the highest opset torch's TorchScript-based exporter writes


def export_onnx(
    model,
    path: str | os.PathLike,
    *,
    batch: int = 1,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    simplified: bool = True,
) -> Path:
    """Export `model` (an SSD) to `path`, atomically.

    Input `images` float32 (B, 3, H, W), RGB in [0, 1]; outputs `locs` (B, P, 4) and
    `confs` (B, P, C); normalisation is inside the graph. With `dynamic` the batch
    dimension is symbolic ("batch"), else fixed at `batch`. With `simplified` the graph
    goes through onnxsim (a warning and the plain graph if onnxsim fails). The ModelSpec
    is in metadata_props under `METADATA_KEY`; onnx.checker passes on what is written.
    """
    import onnx
    import torch

    from ssd_edge.models.ssd import RawOutputs

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset}: choose {MIN_OPSET} to {MAX_OPSET} "
                          f"(HardSwish needs {MIN_OPSET}; torch's exporter stops at {MAX_OPSET})")
    if batch < 1:
        raise ExportError(f"batch must be at least 1, got {batch}")
    spec = model.spec
    wrapper = RawOutputs(model).eval()  # BatchNorm must trace in eval mode
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
        if simplified:
            proto = simplify(proto, path)
        onnx.checker.check_model(proto)
        save(proto, tmp)
    return path
