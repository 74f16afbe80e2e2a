"""What an export needs installed, checked before any work: each missing package ends the
command in one line naming the extra that brings it (ssd_edge.common.errors.require)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ssd_edge.common.errors import require

if TYPE_CHECKING:
    from ssd_edge.export.pipeline import ExportOptions


def check_dependencies(options: ExportOptions) -> None:
    """MissingDependency for the first package `options` need that is not installed."""
    asked = "ssd-export --format " + ",".join(options.formats)
    if not options.from_onnx:
        for package in ("torch", "torchvision"):
            require(package, "train,export", f"ssd-export of {Path(options.weights).name}")
    require("onnx", "export", asked)
    if options.simplify and not options.from_onnx:
        require("onnxsim", "export", f"{asked} (--simplify; --no-simplify skips it)")
    if "int8" in options.formats or options.int8:
        require("onnxruntime.quantization", "export", f"{asked} (INT8 quantization)")
    if "int8" in options.formats or options.int8 or "engine" in options.formats:
        require("tqdm", "export", f"{asked} (progress of calibration and engine builds)")
