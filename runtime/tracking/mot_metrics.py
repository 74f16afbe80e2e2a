"""Tracking scores with the standard definitions: CLEAR MOT (MOTA, MOTP, ID switches,
fragmentations, mostly tracked / lost) and the identity scores (IDF1, IDP, IDR), a
ground-truth box and a track box matching at IoU >= 0.5 (MOTChallenge's 2D criterion).

CLEAR MOT (Bernardin & Stiefelhagen 2008, as motmetrics and MOTChallenge's devkit compute
it): in each frame a ground-truth object keeps the track it was last matched to while
their IoU stays >= 0.5; the objects and tracks left are matched by a minimum
total distance (1 - IoU) assignment; a match whose object was last matched (in any earlier
frame) to another track is an ID switch. Unmatched objects are misses (FN), unmatched tracks
false positives (FP). MOTA = 1 - (FN + FP + IDSW) / objects.

IDF1 (Ristani et al. 2016): one global one-to-one matching of ground-truth trajectories to
track trajectories maximising IDTP, the frames in which a matched pair overlaps at IoU >=
0.5; IDF1 = 2 IDTP / (objects + track boxes).

Written out because motmetrics 1.4 fails on NumPy 2 (`np.asfarray` in its IoU); the tests
cross-check it against motmetrics fed with the same IoU, and benchmarks/bench_mot.py
against SORT's published MOT15 table.

    frames = [(gt_ids, gt_boxes_xyxy, track_ids, track_boxes_xyxy), ...]   # one per frame
    scores = mot_scores(frames)
    scores.mota, scores.idf1, scores.id_switches
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ssd_edge.common.errors import require
from ssd_edge.runtime.boxes import pairwise_iou

linear_sum_assignment = require("scipy.optimize", "runtime", "Tracking scores").linear_sum_assignment

MIN_IOU = 0.5


@dataclass
class MotScores:
    """Counts over a sequence (or several, added with `+`) and the scores they give."""

    frames: int = 0
    objects: int = 0  # ground-truth boxes
    hypotheses: int = 0  # track boxes
    matches: int = 0
    misses: int = 0
    false_positives: int = 0
    id_switches: int = 0
    fragmentations: int = 0
    iou_sum: float = 0.0
    idtp: int = 0
    mostly_tracked: int = 0
    mostly_lost: int = 0
    trajectories: int = 0
    sequences: list[str] = field(default_factory=list)

    @property
    def mota(self) -> float:
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / max(self.objects, 1)

    @property
    def motp(self) -> float:
        """Mean IoU of the matched pairs (MOTChallenge's MOTP for boxes)."""
        return self.iou_sum / max(self.matches, 1)

    @property
    def idf1(self) -> float:
        return 2.0 * self.idtp / max(self.objects + self.hypotheses, 1)

    @property
    def idp(self) -> float:
        return self.idtp / max(self.hypotheses, 1)

    @property
    def idr(self) -> float:
        return self.idtp / max(self.objects, 1)

    @property
    def recall(self) -> float:
        return self.matches / max(self.objects, 1)

    @property
    def precision(self) -> float:
        return self.matches / max(self.hypotheses, 1)

    def __add__(self, other: "MotScores") -> "MotScores":
        summed = {name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__}
        return MotScores(**summed)


def _ids(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1).tolist()]


def mot_scores(frames: Iterable[tuple[Any, Any, Any, Any]], name: str = "") -> MotScores:
    """Scores of one sequence: `frames` yields (gt_ids (G,), gt_boxes (G, 4) xyxy,
    track_ids (K,), track_boxes (K, 4) xyxy) per frame, every frame of the sequence in order
    (frames with neither included, so that gaps are seen)."""
    scores = MotScores(sequences=[name] if name else [])
    last_match: dict[int, int] = {}  # gt id -> track id it was last matched to, any frame
    tracked_before: dict[int, bool] = {}  # gt id -> matched in the previous frame it was present
    agree: dict[tuple[int, int], int] = {}
    gt_length: dict[int, int] = {}
    gt_matched: dict[int, int] = {}
    for gt_ids, gt_boxes, hyp_ids, hyp_boxes in frames:
        gt_ids, hyp_ids = _ids(gt_ids), _ids(hyp_ids)
        iou = pairwise_iou(np.asarray(gt_boxes, np.float64).reshape(-1, 4),
                           np.asarray(hyp_boxes, np.float64).reshape(-1, 4))
        valid = iou >= MIN_IOU
        for g, h in zip(*np.nonzero(valid)):
            agree[(gt_ids[g], hyp_ids[h])] = agree.get((gt_ids[g], hyp_ids[h]), 0) + 1
        scores.frames += 1
        scores.objects += len(gt_ids)
        scores.hypotheses += len(hyp_ids)
        for i in gt_ids:
            gt_length[i] = gt_length.get(i, 0) + 1
        matched: dict[int, int] = {}
        gt_free, hyp_free = np.ones(len(gt_ids), bool), np.ones(len(hyp_ids), bool)
        hyp_row = {h: k for k, h in enumerate(hyp_ids)}
        for g, gid in enumerate(gt_ids):  # keep last frame's matches that still overlap
            h = hyp_row.get(last_match.get(gid, -10**18))
            if h is not None and valid[g, h] and hyp_free[h]:
                matched[g] = h
                gt_free[g] = hyp_free[h] = False
        rows, cols = np.flatnonzero(gt_free), np.flatnonzero(hyp_free)
        if len(rows) and len(cols):
            block = valid[np.ix_(rows, cols)]
            cost = np.where(block, 1.0 - iou[np.ix_(rows, cols)], 1e9)
            for r, c in zip(*linear_sum_assignment(cost)):
                if block[r, c]:
                    matched[int(rows[r])] = int(cols[c])
        current: dict[int, int] = {}
        for g, h in sorted(matched.items()):
            gid, hid = gt_ids[g], hyp_ids[h]
            if gid in last_match and last_match[gid] != hid:
                scores.id_switches += 1
            if gid in tracked_before and not tracked_before[gid]:
                scores.fragmentations += 1
            last_match[gid] = hid
            current[gid] = hid
            scores.iou_sum += float(iou[g, h])
            gt_matched[gid] = gt_matched.get(gid, 0) + 1
        for gid in gt_ids:
            if gid in last_match or gid in current:
                tracked_before[gid] = gid in current
        scores.matches += len(matched)
        scores.misses += len(gt_ids) - len(matched)
        scores.false_positives += len(hyp_ids) - len(matched)
    scores.idtp = _idtp(agree)
    scores.trajectories = len(gt_length)
    ratios = [gt_matched.get(gid, 0) / length for gid, length in gt_length.items()]
    scores.mostly_tracked = sum(r >= 0.8 for r in ratios)
    scores.mostly_lost = sum(r < 0.2 for r in ratios)
    return scores


def _idtp(agree: dict[tuple[int, int], int]) -> int:
    """The largest total agreement of a one-to-one matching of gt to track trajectories."""
    if not agree:
        return 0
    gts = sorted({g for g, _ in agree})
    hyps = sorted({h for _, h in agree})
    g_row, h_col = {g: i for i, g in enumerate(gts)}, {h: j for j, h in enumerate(hyps)}
    weight = np.zeros((len(gts), len(hyps)))
    for (g, h), count in agree.items():
        weight[g_row[g], h_col[h]] = count
    rows, cols = linear_sum_assignment(-weight)
    return int(weight[rows, cols].sum())
