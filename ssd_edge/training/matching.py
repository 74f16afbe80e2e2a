"""Assigning ground-truth boxes to default boxes, before the loss (it runs in the data pipeline).

The one-to-one step, which gives every ground-truth box a default box of its own, is
solved exactly with the Hungarian algorithm (scipy's `linear_sum_assignment`, maximising
total IoU). The greedy argmax that torchvision and most SSD code use lets two objects
pick the same default box, and the loser may then get no default box at all.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from ssd_edge.common.errors import SSDEdgeError, UsageError
from ssd_edge.runtime.boxes import cxcywh_to_xyxy, encode, pairwise_iou

MATCHERS = ("hungarian_iou", "hungarian", "greedy_iou")


class MatchingError(SSDEdgeError, ValueError):
    """Ground truth that cannot be matched (a degenerate box, mismatched arrays)."""


def check_boxes(gt_boxes_xyxy: np.ndarray, gt_labels: np.ndarray) -> None:
    if gt_boxes_xyxy.ndim != 2 or gt_boxes_xyxy.shape[1] != 4:
        raise MatchingError(f"ground-truth boxes must be (G, 4) xyxy, got shape {gt_boxes_xyxy.shape}")
    if len(gt_labels) != len(gt_boxes_xyxy):
        raise MatchingError(f"{len(gt_labels)} labels for {len(gt_boxes_xyxy)} ground-truth boxes")
    widths = gt_boxes_xyxy[:, 2] - gt_boxes_xyxy[:, 0]
    heights = gt_boxes_xyxy[:, 3] - gt_boxes_xyxy[:, 1]
    bad = np.flatnonzero(~((widths > 0) & (heights > 0)))
    if bad.size:
        i = int(bad[0])
        raise MatchingError(
            f"ground-truth box {i} {gt_boxes_xyxy[i].tolist()} has x2 <= x1 or y2 <= y1 ({bad.size} such boxes)"
        )
    if gt_labels.size and gt_labels.min() < 1:
        raise MatchingError("ground-truth labels must be >= 1 (0 is the background)")


def assign(
    gt_boxes_xyxy: np.ndarray,
    priors_cxcywh: np.ndarray,
    matcher: str = "hungarian_iou",
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Index of the ground truth each default box is assigned to, -1 for background: (P,).

    hungarian_iou: every ground truth gets its own default box (Hungarian, exact), and
        every default box with IoU >= iou_threshold to some ground truth takes its best one.
    hungarian: the one-to-one assignment alone.
    greedy_iou: torchvision's SSD matcher: each ground truth forces its argmax default
        box (a later one overwrites an earlier one on a collision), then the IoU rule.
    """
    if matcher not in MATCHERS:
        raise UsageError(f"unknown matcher {matcher!r}; choose from {', '.join(MATCHERS)}")
    assigned = np.full(len(priors_cxcywh), -1, np.int64)
    if len(gt_boxes_xyxy) == 0:
        return assigned
    iou = pairwise_iou(gt_boxes_xyxy.astype(np.float32), cxcywh_to_xyxy(priors_cxcywh))  # (G, P)
    if matcher != "hungarian":
        best_iou, best_gt = iou.max(axis=0), iou.argmax(axis=0)
        above = best_iou >= iou_threshold
        assigned[above] = best_gt[above]
    if matcher == "greedy_iou":
        assigned[iou.argmax(axis=1)] = np.arange(len(gt_boxes_xyxy))
    else:
        gt_idx, prior_idx = linear_sum_assignment(iou, maximize=True)
        assigned[prior_idx] = gt_idx
    return assigned


def match(
    gt_boxes_xyxy: np.ndarray,
    gt_labels: np.ndarray,
    priors_cxcywh: np.ndarray,
    matcher: str = "hungarian_iou",
    iou_threshold: float = 0.5,
    variances: tuple[float, float] = (0.1, 0.2),
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets for one image.

    gt_boxes_xyxy (G, 4) normalised to [0, 1]; gt_labels (G,) in 1..C-1;
    priors (P, 4) normalised cxcywh. Returns target_locs (P, 4) float32 (zeros on
    background) and target_labels (P,) int64 (0 = background).
    """
    gt_boxes_xyxy = np.asarray(gt_boxes_xyxy, np.float32).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    check_boxes(gt_boxes_xyxy, gt_labels)
    assigned = assign(gt_boxes_xyxy, priors_cxcywh, matcher, iou_threshold)
    positive = assigned >= 0
    target_labels = np.zeros(len(priors_cxcywh), np.int64)
    target_labels[positive] = gt_labels[assigned[positive]]
    target_locs = np.zeros((len(priors_cxcywh), 4), np.float32)
    target_locs[positive] = encode(gt_boxes_xyxy[assigned[positive]], priors_cxcywh[positive], variances)
    return target_locs, target_labels


def target_encoder(
    priors_cxcywh: np.ndarray, matcher: str = "hungarian_iou", variances: tuple[float, float] = (0.1, 0.2)
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`match` for these default boxes, matcher and variances: the dataset's target encoder,
    (gt_boxes_xyxy, gt_labels) -> (target_locs, target_labels). Picklable for DataLoader workers."""
    return functools.partial(match, priors_cxcywh=priors_cxcywh, matcher=matcher, variances=variances)
