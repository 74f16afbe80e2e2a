"""The MOT scorer (runtime/tracking/mot_metrics.py) against motmetrics on real MOT15 files
that motmetrics ships (TUD-Campus and TUD-Stadtmitte: ground truth and one tracker's
result), motmetrics fed the same IoU (its own IoU breaks on NumPy 2), and on small cases
worked by hand."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from ssd_edge.runtime.boxes import pairwise_iou
from ssd_edge.runtime.tracking.mot_format import read_mot
from ssd_edge.runtime.tracking.mot_metrics import MIN_IOU, mot_scores

mm = pytest.importorskip("motmetrics")


def frames_of(gt, result):
    last = int(max(gt.frames.max(), result.frames.max()))
    hyp = dict(result.by_frame(last))
    return [(g.ids, g.boxes, hyp[f].ids, hyp[f].boxes) for f, g in gt.by_frame(last)]


def motmetrics_summary(frames):
    accumulator = mm.MOTAccumulator(auto_id=True)
    for gt_ids, gt_boxes, hyp_ids, hyp_boxes in frames:
        iou = pairwise_iou(np.asarray(gt_boxes).reshape(-1, 4), np.asarray(hyp_boxes).reshape(-1, 4))
        accumulator.update(gt_ids.tolist(), hyp_ids.tolist(), np.where(iou >= MIN_IOU, 1.0 - iou, np.nan))
    names = ["num_objects", "num_predictions", "num_matches", "num_misses", "num_false_positives", "num_switches",
             "mota", "motp", "idf1", "idtp", "mostly_tracked", "mostly_lost"]
    summary = mm.metrics.create().compute(accumulator, metrics=names, name="run")
    return {name: float(summary[name].iloc[0]) for name in names}


@pytest.mark.parametrize("sequence", ["TUD-Campus", "TUD-Stadtmitte"])
def test_scores_agree_with_motmetrics_on_real_files(sequence):
    folder = resources.files("motmetrics") / "data" / sequence
    frames = frames_of(read_mot(folder / "gt.txt"), read_mot(folder / "test.txt"))
    ours, theirs = mot_scores(frames), motmetrics_summary(frames)
    assert ours.objects == theirs["num_objects"] and ours.hypotheses == theirs["num_predictions"]
    # motmetrics counts a match that switched identity as a SWITCH, not as a MATCH
    assert (ours.matches - ours.id_switches, ours.misses, ours.false_positives, ours.id_switches) == (
        theirs["num_matches"], theirs["num_misses"], theirs["num_false_positives"], theirs["num_switches"])
    assert ours.mota == pytest.approx(theirs["mota"]) and ours.idf1 == pytest.approx(theirs["idf1"])
    assert ours.idtp == theirs["idtp"]
    assert 1.0 - ours.motp == pytest.approx(theirs["motp"])
    assert (ours.mostly_tracked, ours.mostly_lost) == (theirs["mostly_tracked"], theirs["mostly_lost"])
    assert ours.id_switches > 0 and ours.false_positives > 0  # a real result, with errors to count


def box(x):
    return [x, 0.0, x + 10.0, 10.0]


def test_hand_worked_switch_and_identity():
    # gt 1 is followed by track 7 for 3 frames, then by track 8 for 2 (one switch); track 8
    # is also a false positive in frame 1.
    frames = [([1], [box(0)], [7, 8], [box(0), box(50)]),
              ([1], [box(1)], [7], [box(1)]),
              ([1], [box(2)], [7], [box(2)]),
              ([1], [box(3)], [8], [box(3)]),
              ([1], [box(4)], [8], [box(4)])]
    scores = mot_scores([(np.array(a), np.array(b), np.array(c), np.array(d)) for a, b, c, d in frames])
    assert (scores.objects, scores.hypotheses, scores.matches) == (5, 6, 5)
    assert (scores.misses, scores.false_positives, scores.id_switches) == (0, 1, 1)
    assert scores.mota == pytest.approx(1 - 2 / 5)
    assert scores.idtp == 3 and scores.idf1 == pytest.approx(6 / 11)
