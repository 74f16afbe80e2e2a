"""Tracking scores of a sequence against its ground truth: CLEAR MOT counts (matches,
misses, false positives, ID switches, MOTA) and the identity scores (IDF1), with a box
pair counting as a match at IoU >= 0.5. Written out here because motmetrics 1.4 breaks on
NumPy 2 (`np.asfarray` in its IoU), and as a cross-check of motmetrics where it works.

CLEAR MOT (Bernardin & Stiefelhagen 2008): a ground-truth object matched to a hypothesis
in the previous frame keeps it while their IoU stays >= 0.5; the rest are matched by a
minimum-cost assignment; a new match whose object was last matched to another hypothesis
is an ID switch. IDF1 (Ristani et al. 2016): one global one-to-one matching of
ground-truth trajectories to hypothesis trajectories maximising the frames they agree on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ssd_edge.runtime.boxes import pairwise_iou

MIN_IOU = 0.5


@dataclass
class MotScores:
    frames: int = 0
    objects: int = 0  # ground-truth boxes, all frames
    hypotheses: int = 0  # tracker boxes, all frames
    matches: int = 0
    misses: int = 0
    false_positives: int = 0
    id_switches: int = 0
    idtp: int = 0

    @property
    def mota(self) -> float:
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / max(self.objects, 1)

    @property
    def idf1(self) -> float:
        return 2.0 * self.idtp / max(self.objects + self.hypotheses, 1)


def evaluate(truth, hypotheses) -> MotScores:
    """truth / hypotheses: per frame (ids (G,), boxes (G, 4) xyxy) pairs (anything with
    `.ids` and `.boxes`)."""
    scores = MotScores()
    last_match: dict[int, int] = {}  # gt id -> hypothesis id it was last matched to
    current: dict[int, int] = {}  # matches of the previous frame
    agree: dict[tuple[int, int], int] = {}  # (gt id, hyp id) -> frames at IoU >= MIN_IOU
    gt_lengths: dict[int, int] = {}
    hyp_lengths: dict[int, int] = {}
    for gt, hyp in zip(truth, hypotheses):
        gt_ids, hyp_ids = list(np.asarray(gt.ids).tolist()), list(np.asarray(hyp.ids).tolist())
        iou = pairwise_iou(np.asarray(gt.boxes).reshape(-1, 4), np.asarray(hyp.boxes).reshape(-1, 4))
        valid = iou >= MIN_IOU
        for g, h in zip(*np.nonzero(valid)):
            agree[(gt_ids[g], hyp_ids[h])] = agree.get((gt_ids[g], hyp_ids[h]), 0) + 1
        for i in gt_ids:
            gt_lengths[i] = gt_lengths.get(i, 0) + 1
        for i in hyp_ids:
            hyp_lengths[i] = hyp_lengths.get(i, 0) + 1
        matched: dict[int, int] = {}
        gt_free, hyp_free = np.ones(len(gt_ids), bool), np.ones(len(hyp_ids), bool)
        for g, gid in enumerate(gt_ids):  # keep last frame's matches that are still valid
            if gid in current and current[gid] in hyp_ids:
                h = hyp_ids.index(current[gid])
                if valid[g, h] and hyp_free[h]:
                    matched[gid] = current[gid]
                    gt_free[g] = hyp_free[h] = False
        rows, cols = np.flatnonzero(gt_free), np.flatnonzero(hyp_free)
        if len(rows) and len(cols):
            cost = np.where(valid[np.ix_(rows, cols)], 1.0 - iou[np.ix_(rows, cols)], 1e6)
            for r, c in zip(*linear_sum_assignment(cost)):
                if cost[r, c] < 1e6:
                    gid, hid = gt_ids[rows[r]], hyp_ids[cols[c]]
                    if gid in last_match and last_match[gid] != hid:
                        scores.id_switches += 1
                    matched[gid] = hid
        for gid, hid in matched.items():
            last_match[gid] = hid
        current = matched
        scores.frames += 1
        scores.objects += len(gt_ids)
        scores.hypotheses += len(hyp_ids)
        scores.matches += len(matched)
        scores.misses += len(gt_ids) - len(matched)
        scores.false_positives += len(hyp_ids) - len(matched)
    scores.idtp = _identity_true_positives(agree, list(gt_lengths), list(hyp_lengths))
    return scores


def _identity_true_positives(agree: dict[tuple[int, int], int], gt_ids: list[int], hyp_ids: list[int]) -> int:
    if not gt_ids or not hyp_ids:
        return 0
    table = np.zeros((len(gt_ids), len(hyp_ids)))
    g_index = {g: i for i, g in enumerate(gt_ids)}
    h_index = {h: i for i, h in enumerate(hyp_ids)}
    for (g, h), frames in agree.items():
        table[g_index[g], h_index[h]] = frames
    rows, cols = linear_sum_assignment(-table)
    return int(table[rows, cols].sum())


def motmetrics_scores(truth, hypotheses) -> dict[str, float]:
    """The same scores from motmetrics (IoU computed here: its own breaks on NumPy 2)."""
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=True)
    for gt, hyp in zip(truth, hypotheses):
        iou = pairwise_iou(np.asarray(gt.boxes).reshape(-1, 4), np.asarray(hyp.boxes).reshape(-1, 4))
        distance = np.where(iou >= MIN_IOU, 1.0 - iou, np.nan)
        accumulator.update(np.asarray(gt.ids).tolist(), np.asarray(hyp.ids).tolist(), distance)
    metrics = ["num_matches", "num_misses", "num_false_positives", "num_switches", "mota", "idf1", "idtp"]
    summary = mm.metrics.create().compute(accumulator, metrics=metrics, name="run")
    return {name: float(summary[name].iloc[0]) for name in metrics}
