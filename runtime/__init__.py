"""ssd_edge.runtime: the torch-free deployment side of ssd-edge.

It holds the contract (ModelSpec, default boxes), NumPy box coding and the reference
decode + NMS, and the `Detector` that runs exported models (onnxruntime, or TensorRT with
the CUDA decode + NMS kernel). It must never import torch: a Jetson deploys without it.
`Detector`, `draw_detections` and `read_image` load on first use (they need OpenCV).
"""

from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.postprocess.fast import postprocess
from ssd_edge.runtime.priors import default_boxes
from ssd_edge.runtime.spec import DefaultBoxConfig, ModelSpec, SpecError

__all__ = [
    "DefaultBoxConfig",
    "Detections",
    "Detector",
    "ModelSpec",
    "PostprocessConfig",
    "SpecError",
    "default_boxes",
    "draw_detections",
    "postprocess",
    "read_image",
]

_LAZY = {"Detector": "detector", "draw_detections": "draw", "read_image": "image_io"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
