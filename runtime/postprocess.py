"""Decode + per-class NMS in NumPy: the reference implementation of SSD postprocessing.

Semantics (every other implementation, torch and CUDA, is tested against this one):
softmax over classes; for each class c >= 1 keep the default boxes whose score is
> score_threshold; keep the `top_k` best of each class; decode them against the
default boxes (variances, log-size clamp) and clip to the image; greedy NMS per class
at `iou_threshold`; merge the classes and keep the best `max_detections`. Ordering
everywhere: score descending, ties by lower default-box index, then lower class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from .boxes import decode, pairwise_iou
from .spec import ModelSpec


class Detections(NamedTuple):
    """Detections of one image. boxes (N, 4) xyxy in the original image's pixels,
    labels (N,) int64 (1..C-1), scores (N,) float32, confs (N, C) the softmax vector
    of each kept box."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    confs: np.ndarray

    @classmethod
    def empty(cls, num_classes: int) -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.float32),
            np.zeros((0, num_classes), np.float32),
        )


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    top_k: int = 200
    max_detections: int = 200
    variances: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must lie in [0, 1], got {self.iou_threshold}")
        if self.top_k < 1 or self.max_detections < 1:
            raise ValueError(f"top_k ({self.top_k}) and max_detections ({self.max_detections}) must be >= 1")

    @classmethod
    def from_spec(cls, spec: ModelSpec, **overrides: float | int | None) -> "PostprocessConfig":
        values = dict(
            score_threshold=spec.score_threshold,
            iou_threshold=spec.iou_threshold,
            top_k=spec.top_k,
            max_detections=spec.max_detections,
            variances=tuple(spec.variances),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def greedy_nms_mask(boxes_xyxy: np.ndarray, valid: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS for G independent groups at once, without a loop over boxes.

    boxes_xyxy (G, K, 4) sorted best first within each group; valid (G, K) marks real
    entries. Returns keep (G, K). A box is kept when no kept, better box of its group
    overlaps it by more than `iou_threshold`; the fixed point of that rule, reached by
    iterating it from "keep all", is exactly the greedy result (the rule decides box j
    from boxes before j only, so it has one fixed point).
    """
    suppresses = np.triu(pairwise_iou(boxes_xyxy, boxes_xyxy) > iou_threshold, k=1)
    suppresses = (suppresses & valid[:, :, None]).astype(np.float32)
    keep = valid.copy()
    while True:
        suppressed = np.matmul(keep[:, None, :].astype(np.float32), suppresses)[:, 0] > 0
        new_keep = valid & ~suppressed
        if np.array_equal(new_keep, keep):
            return keep
        keep = new_keep


def _candidates(scores: np.ndarray, score_threshold: float, top_k: int):
    """Per class, the best `top_k` default boxes over the threshold.

    scores (P, C') for the foreground classes. Returns classes (G,) of the classes
    with candidates, prior_idx (G, K) padded, valid (G, K), sorted best first.
    """
    prior_idx, class_idx = np.nonzero(scores > score_threshold)
    if prior_idx.size == 0:
        return None
    order = np.lexsort((prior_idx, -scores[prior_idx, class_idx], class_idx))
    prior_idx, class_idx = prior_idx[order], class_idx[order]
    rank = np.arange(order.size) - np.searchsorted(class_idx, class_idx, side="left")
    within = rank < top_k
    prior_idx, class_idx, rank = prior_idx[within], class_idx[within], rank[within]
    classes, group = np.unique(class_idx, return_inverse=True)
    padded = np.zeros((classes.size, rank.max() + 1), np.int64)
    valid = np.zeros(padded.shape, bool)
    padded[group, rank] = prior_idx
    valid[group, rank] = True
    return classes, padded, valid


def postprocess_image(
    locs: np.ndarray,
    probs: np.ndarray,
    priors_cxcywh: np.ndarray,
    image_hw: tuple[int, int],
    config: PostprocessConfig,
) -> Detections:
    """Postprocess one image: locs (P, 4) raw regressions, probs (P, C) softmax scores."""
    num_classes = probs.shape[1]
    found = _candidates(probs[:, 1:], config.score_threshold, config.top_k)
    if found is None:
        return Detections.empty(num_classes)
    classes, prior_idx, valid = found
    boxes = np.clip(decode(locs[prior_idx], priors_cxcywh[prior_idx], config.variances), 0.0, 1.0)
    keep = greedy_nms_mask(boxes, valid, config.iou_threshold)
    group, rank = np.nonzero(keep)
    kept_priors = prior_idx[group, rank]
    labels = classes[group] + 1
    scores = probs[kept_priors, labels]
    best = np.lexsort((labels, kept_priors, -scores))[: config.max_detections]
    height, width = image_hw
    scale = np.array([width, height, width, height], np.float32)
    return Detections(
        boxes=(boxes[group[best], rank[best]] * scale).astype(np.float32),
        labels=labels[best].astype(np.int64),
        scores=scores[best].astype(np.float32),
        confs=probs[kept_priors[best]].astype(np.float32),
    )


def postprocess(
    locs: np.ndarray,
    conf_logits: np.ndarray,
    priors_cxcywh: np.ndarray,
    image_sizes: Sequence[tuple[int, int]],
    config: PostprocessConfig,
) -> list[Detections]:
    """Decode + NMS for a batch: locs (B, P, 4), conf_logits (B, P, C) raw network outputs,
    priors (P, 4) normalised cxcywh, image_sizes the (H, W) of each original image."""
    if locs.ndim != 3 or locs.shape[-1] != 4:
        raise ValueError(f"locs must be (B, P, 4), got {locs.shape}")
    if conf_logits.shape[:2] != locs.shape[:2] or locs.shape[1] != priors_cxcywh.shape[0]:
        raise ValueError(
            f"locs {locs.shape}, confs {conf_logits.shape} and priors {priors_cxcywh.shape} disagree on B or P"
        )
    if len(image_sizes) != locs.shape[0]:
        raise ValueError(f"{len(image_sizes)} image sizes for a batch of {locs.shape[0]}")
    probs = softmax(conf_logits.astype(np.float32, copy=False))
    locs = locs.astype(np.float32, copy=False)
    return [postprocess_image(locs[b], probs[b], priors_cxcywh, image_sizes[b], config) for b in range(len(locs))]
