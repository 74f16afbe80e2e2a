"""Raw SSD outputs for postprocessing tests: the generators ssd-doctor's kernel cases use, and
the configs and score distributions of NMS across the classes."""

from __future__ import annotations

import numpy as np

from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.kernel_cases import random_outputs, random_priors

__all__ = ["AGNOSTIC_CONFIGS", "AGNOSTIC_KINDS", "agnostic_outputs", "random_outputs", "random_priors"]

# NMS across the classes, as tests/test_agnostic_nms.py runs it (NumPy and torch against the
# reference) and the CUDA kernel's agnostic cases (tests/helpers/decode_nms_cases.py) do.
AGNOSTIC_CONFIGS = [
    PostprocessConfig(agnostic_nms=True),
    PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=60, max_detections=40, agnostic_nms=True),
    PostprocessConfig(score_threshold=0.05, iou_threshold=0.2, top_k=30, max_detections=300, agnostic_nms=True),
    PostprocessConfig(score_threshold=0.0, iou_threshold=0.0, top_k=20, max_detections=50, agnostic_nms=True),
    PostprocessConfig(score_threshold=0.01, iou_threshold=1.0, top_k=20, max_detections=50, agnostic_nms=True),
]
AGNOSTIC_KINDS = ("spread", "tied", "half-tied", "near-uniform")


def agnostic_outputs(kind: str, rng: np.random.Generator, batch: int, priors: int,
                     classes: int) -> tuple[np.ndarray, np.ndarray]:
    """random_outputs (logit scale 3) with the scores of `kind`, one of AGNOSTIC_KINDS: spread
    logits; all tied, so that every class of a default box ties; every other default box tied;
    near-uniform."""
    locs, logits = random_outputs(rng, batch, priors, classes, logit_scale=3.0)
    if kind == "tied":
        logits[:] = 0.0
    elif kind == "half-tied":
        logits[:, ::2] = 0.0
    elif kind == "near-uniform":
        logits *= 0.01
    return locs, logits
