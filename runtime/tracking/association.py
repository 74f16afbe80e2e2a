"""Matching tracks to detections: IoU between boxes (the runtime's `pairwise_iou`) and a
one-to-one assignment.

The assignment maximises the summed similarity of the pairs it keeps, among pairs whose
similarity is at least the threshold; it does not try to make as many pairs as it can (one
0.9 pair beats two 0.25 pairs). It is scipy's `linear_sum_assignment` (an exact
minimum-cost matching) with cost = -similarity, a pair under the threshold costing 0, the
same as leaving both unmatched, so it is never preferred and is dropped afterwards. Pairs
that are each other's only candidate (most pairs, when objects are apart) are matched
directly first, which gives the same result and keeps the solver's problem small.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ssd_edge.common.errors import require
from ssd_edge.runtime.boxes import pairwise_iou

# SciPy is in the runtime and jetson extras for this one function.
linear_sum_assignment = require("scipy.optimize", "runtime", "Tracking").linear_sum_assignment


class Matches(NamedTuple):
    """Result of one association: `pairs` (K, 2) int64 rows (track i, detection j) indexing
    the arrays that were given; the unmatched track and detection indices."""

    pairs: np.ndarray
    unmatched_tracks: np.ndarray
    unmatched_detections: np.ndarray


def _matches(pairs: list[np.ndarray], num_tracks: int, num_detections: int) -> Matches:
    """Matches from (K, 2) pair blocks; the rows and columns in none of them are unmatched."""
    matched = np.concatenate(pairs).astype(np.int64).reshape(-1, 2) if pairs else np.zeros((0, 2), np.int64)
    track_free = np.ones(num_tracks, bool)
    track_free[matched[:, 0]] = False
    detection_free = np.ones(num_detections, bool)
    detection_free[matched[:, 1]] = False
    return Matches(matched, np.flatnonzero(track_free), np.flatnonzero(detection_free))


def _unique_pairs(feasible: np.ndarray) -> np.ndarray:
    """Mask of pairs that are each other's only feasible candidate."""
    only_in_row = feasible & (feasible.sum(axis=1, keepdims=True) == 1)
    only_in_col = feasible & (feasible.sum(axis=0, keepdims=True) == 1)
    return only_in_row & only_in_col


def assign(similarity: np.ndarray, min_similarity: float) -> Matches:
    """One-to-one matching of rows to columns of `similarity` (T, D) maximising the summed
    similarity of the pairs kept, every kept pair having similarity >= `min_similarity`."""
    num_tracks, num_detections = similarity.shape
    feasible = similarity >= min_similarity
    if not feasible.any():
        return Matches(np.zeros((0, 2), np.int64), np.arange(num_tracks), np.arange(num_detections))
    unique = _unique_pairs(feasible)
    rows, cols = np.nonzero(unique)
    pairs = [np.stack([rows, cols], axis=1)]
    rest_rows = np.flatnonzero(feasible.any(axis=1) & ~unique.any(axis=1))
    rest_cols = np.flatnonzero(feasible.any(axis=0) & ~unique.any(axis=0))
    if len(rest_rows) and len(rest_cols):
        block = similarity[np.ix_(rest_rows, rest_cols)]
        block_feasible = feasible[np.ix_(rest_rows, rest_cols)]
        cost = np.where(block_feasible, -block, 0.0)  # under the threshold: no better than unmatched
        solved_rows, solved_cols = linear_sum_assignment(cost)
        kept = block_feasible[solved_rows, solved_cols]
        pairs.append(np.stack([rest_rows[solved_rows[kept]], rest_cols[solved_cols[kept]]], axis=1))
    return _matches(pairs, num_tracks, num_detections)


def _similarity(track_boxes_xyxy: np.ndarray, det_boxes_xyxy: np.ndarray, det_scores: np.ndarray,
                fuse_score: bool) -> np.ndarray:
    similarity = pairwise_iou(track_boxes_xyxy, det_boxes_xyxy)
    if fuse_score:
        similarity *= det_scores[None, :]
    return similarity


def associate(track_boxes_xyxy: np.ndarray, track_labels: np.ndarray, det_boxes_xyxy: np.ndarray,
              det_labels: np.ndarray, det_scores: np.ndarray, min_similarity: float,
              fuse_score: bool, same_class: bool) -> Matches:
    """Match tracks (T, 4) xyxy with labels (T,) to detections (D, 4) xyxy with labels and
    scores (D,). Similarity is the IoU, times the detection's score when `fuse_score`
    (ByteTrack's setting except on MOT20: a confident detection wins a contested track). With
    `same_class`, pairs of different labels never match, so each class is its own, smaller
    problem."""
    num_tracks, num_dets = len(track_boxes_xyxy), len(det_boxes_xyxy)
    if num_tracks == 0 or num_dets == 0:
        return Matches(np.zeros((0, 2), np.int64), np.arange(num_tracks), np.arange(num_dets))
    lowest, highest = min(track_labels.min(), det_labels.min()), max(track_labels.max(), det_labels.max())
    if not same_class or lowest == highest:  # one class on both sides: nothing to split
        return assign(_similarity(track_boxes_xyxy, det_boxes_xyxy, det_scores, fuse_score), min_similarity)
    pairs = []
    for label in np.intersect1d(track_labels, det_labels):
        rows, cols = np.flatnonzero(track_labels == label), np.flatnonzero(det_labels == label)
        found = assign(_similarity(track_boxes_xyxy[rows], det_boxes_xyxy[cols], det_scores[cols], fuse_score),
                       min_similarity)
        pairs.append(np.stack([rows[found.pairs[:, 0]], cols[found.pairs[:, 1]]], axis=1))
    return _matches(pairs, num_tracks, num_dets)
