"""ssd_edge.runtime: the torch-free deployment side of ssd-edge.

It holds the contract (ModelSpec, default boxes), NumPy box coding and the reference
decode + NMS. It must never import torch: a Jetson deploys without it.
"""

from .postprocess import Detections, PostprocessConfig, postprocess
from .priors import default_boxes
from .spec import DefaultBoxConfig, ModelSpec, SpecError

__all__ = [
    "DefaultBoxConfig",
    "Detections",
    "ModelSpec",
    "PostprocessConfig",
    "SpecError",
    "default_boxes",
    "postprocess",
]
