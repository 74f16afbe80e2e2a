"""The postprocessing rule, stated plainly: one image, one class, one box at a time.

This is the oracle. The fast NumPy path (`fast.postprocess`) is tested against it on random
and edge-case outputs, the torch `PostProcessor` and the CUDA kernel against the fast path
(the kernel to the bit). It is far too slow to deploy; it exists to be read and trusted:

1. softmax over the classes of each default box;
2. for each class c >= 1: the default boxes whose score is > score_threshold, best first
   (ties: lower default-box index), at most top_k of them;
3. decode those boxes against their default boxes (variances, size clamp), clip to [0, 1];
4. greedy NMS within the class: keep a box unless a kept, better box of the same class
   overlaps it by IoU > iou_threshold; with `agnostic_nms`, across the classes instead:
   the candidates of every class (step 2's) merged in the order of step 5, keep a box
   unless a kept, better box of any class overlaps it by IoU > iou_threshold (a default
   box's own decoded box counts: its candidates in worse classes go);
5. merge the classes, order by score descending (ties: lower default box, then lower
   class), keep max_detections, scale to the image's pixels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssd_edge.runtime.boxes import decode, pairwise_iou
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.postprocess.fast import softmax


def reference_postprocess_image(
    locs: np.ndarray, logits: np.ndarray, priors_cxcywh: np.ndarray, image_hw: tuple[int, int],
    config: PostprocessConfig, class_names: Sequence[str] = (),
) -> Detections:
    """locs (P, 4) raw regressions, logits (P, C), priors (P, 4) normalised cxcywh."""
    probs = softmax(np.asarray(logits, np.float32))
    found = []  # (default box, class, box xyxy in [0, 1])
    for c in range(1, probs.shape[1]):
        ranked = [p for p in range(len(probs)) if probs[p, c] > np.float32(config.score_threshold)]
        ranked.sort(key=lambda p: (-probs[p, c], p))
        ranked = ranked[: config.top_k]
        boxes = {p: np.clip(decode(locs[p][None], priors_cxcywh[p][None], config.variances)[0], 0, 1) for p in ranked}
        if config.agnostic_nms:
            found += [(p, c, boxes[p]) for p in ranked]
            continue
        kept: list[int] = []
        for p in ranked:
            if all(pairwise_iou(boxes[q][None], boxes[p][None])[0, 0] <= config.iou_threshold for q in kept):
                kept.append(p)
        found += [(p, c, boxes[p]) for p in kept]
    found.sort(key=lambda t: (-probs[t[0], t[1]], t[0], t[1]))
    if config.agnostic_nms:
        kept_any: list[tuple] = []
        for entry in found:
            if all(pairwise_iou(q[2][None], entry[2][None])[0, 0] <= config.iou_threshold for q in kept_any):
                kept_any.append(entry)
        found = kept_any
    found = found[: config.max_detections]
    h, w = image_hw
    scale = np.array([w, h, w, h], np.float32)
    return Detections(
        np.array([box * scale for _, _, box in found], np.float32).reshape(-1, 4),
        np.array([c for _, c, _ in found], np.int64),
        np.array([probs[p, c] for p, c, _ in found], np.float32),
        np.array([probs[p] for p, _, _ in found], np.float32).reshape(-1, probs.shape[1]),
        tuple(class_names),
    )


def reference_postprocess(
    locs: np.ndarray, logits: np.ndarray, priors_cxcywh: np.ndarray, image_sizes: Sequence[tuple[int, int]],
    config: PostprocessConfig, class_names: Sequence[str] = (),
) -> list[Detections]:
    """A batch: locs (B, P, 4), logits (B, P, C), one (H, W) per image."""
    return [
        reference_postprocess_image(locs[b], logits[b], priors_cxcywh, image_sizes[b], config, class_names)
        for b in range(len(image_sizes))
    ]
