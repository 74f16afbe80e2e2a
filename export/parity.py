"""Does the exported model compute what the PyTorch model computes?

Runs an ONNX file on onnxruntime's CPU provider and a reference (the PyTorch model, or
another ONNX file) on the same preprocessed images, and compares the raw outputs and the
postprocessed detections (the comparison itself is the runtime's, `ssd_edge.runtime.parity`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ssd_edge.export.onnx_model import ExportError
from ssd_edge.runtime.parity import Outputs, ParityReport, compare, in_batches, onnx_outputs
from ssd_edge.runtime.preprocess import preprocess
from ssd_edge.runtime.spec import ModelSpec

FP32_RTOL = 1e-4


class ParityError(ExportError):
    """The exported model disagrees with its reference past the tolerance."""

    exit_code = 1


def torch_outputs(model, images: np.ndarray, batch: int) -> Outputs:
    """locs and confs of the PyTorch SSD (in eval mode, on CPU) for the same images."""
    import torch

    model = model.eval()

    def run(x: np.ndarray) -> Outputs:
        with torch.no_grad():
            locs, confs = model.raw(torch.from_numpy(x).to(next(model.parameters()).device))
        return locs.float().cpu().numpy(), confs.float().cpu().numpy()

    return in_batches(run, images, batch)


def check_parity(
    model,
    onnx_path: str | os.PathLike,
    images_bgr: Sequence[np.ndarray],
    batch: int = 1,
    rtol: float | None = FP32_RTOL,
) -> ParityReport:
    """ONNX on onnxruntime CPU vs the PyTorch `model` on the same images.

    images_bgr: BGR uint8 images of any sizes, preprocessed as the runtime does.
    Raises ParityError when the relative error of `locs` or `confs` exceeds `rtol`
    (None: report only).
    """
    spec = model.spec
    images = preprocess(images_bgr, spec.input_size)
    sizes = [image.shape[:2] for image in images_bgr]
    report = compare(spec, onnx_outputs(onnx_path, images, batch), torch_outputs(model, images, batch), sizes, batch)
    if rtol is not None and not report.within(rtol):
        raise ParityError(f"{onnx_path}: differs from the PyTorch model past the relative tolerance {rtol:g}: "
                          f"{report.summary()}")
    return report


def compare_onnx(
    spec: ModelSpec,
    onnx_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    images_bgr: Sequence[np.ndarray],
    batch: int = 1,
) -> ParityReport:
    """Two ONNX models (say INT8 against FP32) on onnxruntime CPU, report only."""
    images = preprocess(images_bgr, spec.input_size)
    sizes = [image.shape[:2] for image in images_bgr]
    return compare(spec, onnx_outputs(onnx_path, images, batch), onnx_outputs(reference_path, images, batch),
                   sizes, batch)
