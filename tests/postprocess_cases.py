"""Raw SSD outputs for postprocessing tests, and a literal (slow, loop-based) reading of
DESIGN.md's postprocessing used as an independent oracle."""

import numpy as np

from ssd_edge.runtime.boxes import decode, pairwise_iou
from ssd_edge.runtime.postprocess.fast import softmax


def random_priors(rng, count):
    centres = rng.uniform(0.05, 0.95, (count, 2))
    sizes = rng.uniform(0.05, 0.5, (count, 2))
    return np.concatenate([centres, sizes], axis=1).astype(np.float32)


def random_outputs(rng, batch, priors, classes, logit_scale=3.0):
    locs = rng.normal(0, 1, (batch, priors, 4)).astype(np.float32)
    confs = rng.normal(0, logit_scale, (batch, priors, classes)).astype(np.float32)
    return locs, confs


def literal_postprocess(locs, conf_logits, priors, image_hw, cfg):
    """One image, one box at a time, exactly as DESIGN.md words it."""
    probs = softmax(conf_logits.astype(np.float32))
    candidates = []
    for c in range(1, probs.shape[1]):
        idx = [p for p in range(len(probs)) if probs[p, c] > cfg.score_threshold]
        idx.sort(key=lambda p: (-probs[p, c], p))
        idx = idx[: cfg.top_k]
        boxes = {p: np.clip(decode(locs[p], priors[p], cfg.variances), 0, 1) for p in idx}
        kept = []
        for p in idx:
            if all(pairwise_iou(boxes[q][None], boxes[p][None])[0, 0] <= cfg.iou_threshold for q in kept):
                kept.append(p)
        candidates += [(p, c, boxes[p]) for p in kept]
    candidates.sort(key=lambda t: (-probs[t[0], t[1]], t[0], t[1]))
    candidates = candidates[: cfg.max_detections]
    h, w = image_hw
    scale = np.array([w, h, w, h], np.float32)
    boxes = np.array([b * scale for _, _, b in candidates], np.float32).reshape(-1, 4)
    labels = np.array([c for _, c, _ in candidates], np.int64)
    scores = np.array([probs[p, c] for p, c, _ in candidates], np.float32)
    return boxes, labels, scores
