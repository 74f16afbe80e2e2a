"""Tracker, Kalman filter, association and line counter: synthetic sequences with known
ground truth (crossing paths, occlusion, entering and leaving, a crowd) scored with CLEAR
MOT / IDF1, lifecycle rules, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.runtime.boxes import pairwise_iou
from ssd_edge.runtime.tracking import (
    LineCounter,
    MotionNoise,
    Tracker,
    TrackerConfig,
    TrackingError,
    Tracks,
    Trails,
    parse_line,
)
from ssd_edge.runtime.tracking.association import assign
from ssd_edge.runtime.tracking.kalman import BoxKalman, measure, state_boxes
from tests.helpers.tracking_metrics import evaluate, motmetrics_scores
from tests.helpers.tracking_sequences import CLASS_NAMES, MovingObject, make_detections, random_objects, simulate


def run(tracker, detections, frames=None):
    frames = frames or [None] * len(detections)
    return [tracker.update(d, frame=f) for d, f in zip(detections, frames)]


def ids_per_truth(truth, hypotheses) -> dict[int, set[int]]:
    """For each ground-truth object, the track IDs it was matched to (one-to-one per frame,
    at IoU >= 0.5)."""
    seen: dict[int, set[int]] = {}
    for gt, hyp in zip(truth, hypotheses):
        found = assign(pairwise_iou(gt.boxes, hyp.boxes), 0.5)
        for g, h in found.pairs:
            seen.setdefault(int(gt.ids[g]), set()).add(int(hyp.ids[h]))
    return seen


def one(box, label=1, score=0.9):
    return make_detections([box], [label], [score])


# --- box maths and the assignment ---------------------------------------------------------


def test_assign_with_unique_pairs_equals_plain_assignment():
    # the plain solver maximising the total similarity of the pairs >= 0.2 (a pair under it
    # counts 0, as leaving both unmatched); tests/test_tracking_rules.py checks it by brute force
    rng = np.random.default_rng(3)
    for _ in range(200):
        similarity = rng.random((int(rng.integers(1, 12)), int(rng.integers(1, 12))))
        similarity[rng.random(similarity.shape) < 0.7] = 0.0
        found = assign(similarity, 0.2)
        cost = np.where(similarity >= 0.2, -similarity, 0.0)
        rows, cols = linear_sum_assignment(cost)
        keep = similarity[rows, cols] >= 0.2
        assert len(found.pairs) == keep.sum()
        got = similarity[found.pairs[:, 0], found.pairs[:, 1]].sum()
        assert got == pytest.approx(similarity[rows[keep], cols[keep]].sum())
        assert len(set(found.pairs[:, 0])) == len(found.pairs) == len(set(found.pairs[:, 1]))


# --- Kalman filter ------------------------------------------------------------------------


def test_measurements_and_state_boxes():
    boxes = np.array([[10, 20, 50, 100], [0, 0, 0, 0]], np.float32)
    measured = measure(boxes)
    assert measured.dtype == np.float64
    np.testing.assert_allclose(measured, [[30, 60, 40, 80], [0, 0, 0, 0]])
    states = np.concatenate([measured, np.zeros((2, 4))], axis=1)
    np.testing.assert_allclose(state_boxes(states), boxes)
    states[0, 2] = -6.0  # a predicted width below zero is a zero-width box at the centre
    np.testing.assert_allclose(state_boxes(states)[0], [30, 20, 30, 100])


def test_kalman_learns_a_constant_velocity():
    kalman = BoxKalman()
    box = np.array([[100.0, 100.0, 140.0, 180.0]])
    means, covariances = kalman.initiate(box)
    for step in range(1, 30):
        means, covariances = kalman.predict(means, covariances)
        means, covariances = kalman.update(means, covariances, box + [3 * step, -step, 3 * step, -step])
    np.testing.assert_allclose(means[0, 4:], [3.0, -1.0, 0.0, 0.0], atol=0.05)
    assert np.all(np.linalg.eigvalsh(covariances[0]) > 0)


def test_kalman_predicts_through_skipped_frames():
    kalman = BoxKalman()
    means, covariances = kalman.initiate(np.array([[0.0, 0.0, 10.0, 10.0]]))
    means[0, 4:6] = [2.0, 1.0]
    stepped = (means, covariances)
    for _ in range(3):
        stepped = kalman.predict(*stepped)
    jumped = kalman.predict(means, covariances, steps=3)
    np.testing.assert_allclose(jumped[0], stepped[0])
    assert np.trace(jumped[1][0]) > np.trace(covariances[0])


def test_kalman_survives_zero_size_boxes():
    kalman = BoxKalman(MotionNoise(min_std_px=0.5))
    means, covariances = kalman.initiate(np.zeros((1, 4)))
    means, covariances = kalman.predict(means, covariances)
    means, covariances = kalman.update(means, covariances, np.zeros((1, 4)))
    assert np.isfinite(means).all() and np.isfinite(covariances).all()


# --- synthetic sequences with ground truth ------------------------------------------------


def test_crossing_paths_keep_their_ids():
    # Two squares of the same class cross head-on (overlapping by half their height as they
    # pass) while a circle crosses both at the same spot.
    objects = [
        MovingObject(2, 0, (80, 230, 60, 60), (4.0, 0.0)),
        MovingObject(2, 0, (560, 260, 60, 60), (-4.0, 0.0)),
        MovingObject(1, 0, (320, 20, 50, 50), (0.0, 3.7)),
    ]
    sequence = simulate(objects, 110, noise_px=1.5, seed=1)
    hypotheses = run(Tracker(), sequence.detections)
    scores = evaluate(sequence.truth, hypotheses)
    assert scores.id_switches == 0
    assert all(len(ids) == 1 for ids in ids_per_truth(sequence.truth, hypotheses).values())
    assert scores.mota > 0.95 and scores.idf1 > 0.97


@pytest.mark.parametrize("offset_px", [10, 25])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossing_behind_each_other_keeps_ids(offset_px, seed):
    # Same class, nearly the same line: while they overlap, the detector's NMS keeps one box
    # only, so the one behind has no detection for several frames.
    objects = [MovingObject(2, 0, (80, 240, 60, 60), (4.0, 0.0)),
               MovingObject(2, 0, (560, 240 + offset_px, 60, 60), (-2.0, 0.0))]
    sequence = simulate(objects, 160, noise_px=1.5, seed=seed, nms_iou=0.45)
    assert sum(len(d.boxes) for d in sequence.detections) < 2 * 160  # some were suppressed
    scores = evaluate(sequence.truth, run(Tracker(), sequence.detections))
    assert scores.id_switches == 0 and scores.idf1 > 0.95


def test_object_hidden_for_a_few_frames_keeps_its_id():
    objects = [MovingObject(1, 0, (100, 200, 50, 70), (3.0, 1.0), hidden=frozenset(range(30, 38)))]
    sequence = simulate(objects, 70, seed=2)
    hypotheses = run(Tracker(), sequence.detections)
    assert all(len(h.ids) == 0 for h in hypotheses[30:38])  # lost tracks are not reported
    assert {int(i) for h in hypotheses for i in h.ids} == {1}
    assert len(hypotheses[38].ids) == 1  # found again at once, by its predicted box


def test_partly_hidden_object_is_kept_by_low_score_detections():
    objects = [MovingObject(1, 0, (100, 200, 50, 70), (3.0, 1.0), low_score=frozenset(range(30, 40)))]
    sequence = simulate(objects, 60, seed=3)
    hypotheses = run(Tracker(), sequence.detections)
    assert [h.ids.tolist() for h in hypotheses[1:]] == [[1]] * 59
    assert np.all(np.concatenate([h.scores for h in hypotheses[30:40]]) < 0.5)
    # Without the second association the track is lost (not reported) in those frames.
    no_second = run(Tracker(low_score=0.5), sequence.detections)
    assert all(len(h.ids) == 0 for h in no_second[31:40])
    assert no_second[45].ids.tolist() == [1]  # and found again when the score comes back


def test_objects_entering_and_leaving():
    objects = [
        MovingObject(1, 0, (300, 200, 40, 40), (5.0, 0.0)),  # leaves right at about frame 68
        MovingObject(3, 20, (2, 100, 40, 40), (5.0, 1.0)),  # enters from the left edge
        MovingObject(2, 90, (600, 400, 40, 40), (-3.0, -2.0), last_frame=130),  # appears, vanishes
    ]
    sequence = simulate(objects, 180, seed=4)
    tracker = Tracker(max_misses=10)
    hypotheses = run(tracker, sequence.detections)
    scores = evaluate(sequence.truth, hypotheses)
    assert scores.id_switches == 0 and scores.false_positives == 0
    assert [len(ids) for _, ids in sorted(ids_per_truth(sequence.truth, hypotheses).items())] == [1, 1, 1]
    assert {int(i) for h in hypotheses for i in h.ids} == {1, 2, 3}
    assert tracker.num_tracks == 0  # all three gone and dropped after 10 misses


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_crowd_scores(seed):
    # 30 objects of 3 classes, entering/leaving, some hidden for up to 5 frames or detected
    # with low scores, 2 px box noise, 5% missed detections, ~1 false positive per frame.
    objects = random_objects(30, 300, seed=seed)
    sequence = simulate(objects, 300, seed=seed, noise_px=2.0, miss_rate=0.05, false_positives=1.0, accel_px=0.1)
    scores = evaluate(sequence.truth, run(Tracker(), sequence.detections))
    assert scores.id_switches <= 2
    assert scores.mota >= 0.90
    assert scores.idf1 >= 0.93


def test_own_scores_agree_with_motmetrics():
    pytest.importorskip("motmetrics", reason="the cross-check needs motmetrics (in the dev extra)")
    objects = random_objects(20, 150, seed=7)
    sequence = simulate(objects, 150, seed=7, noise_px=4.0, miss_rate=0.1, false_positives=2.0, accel_px=0.3)
    hypotheses = run(Tracker(min_hits=1, new_track_score=0.3, high_score=0.3), sequence.detections)
    ours = evaluate(sequence.truth, hypotheses)
    theirs = motmetrics_scores(sequence.truth, hypotheses)
    assert ours.false_positives > 0 and ours.misses > 0  # a run with something to count
    # motmetrics' num_matches leaves out the matches that were switches
    assert (ours.matches - ours.id_switches, ours.misses, ours.false_positives, ours.id_switches, ours.idtp) == (
        theirs["num_matches"], theirs["num_misses"], theirs["num_false_positives"], theirs["num_switches"],
        theirs["idtp"])
    assert ours.mota == pytest.approx(theirs["mota"]) and ours.idf1 == pytest.approx(theirs["idf1"])


# --- lifecycle ----------------------------------------------------------------------------


def test_track_is_born_after_min_hits_and_dropped_after_max_misses():
    tracker = Tracker(min_hits=3, max_misses=4)
    tracker.update(make_detections([], [], []))  # the first frame's tracks are confirmed at once
    box = np.array([100.0, 100.0, 150.0, 150.0])
    assert [len(tracker.update(one(box)).ids) for _ in range(3)] == [0, 0, 1]
    for _ in range(4):  # missed 4 times: still alive (lost)
        assert len(tracker.update(make_detections([], [], [])).ids) == 0
    assert tracker.update(one(box)).ids.tolist() == [1]  # the same track comes back
    for _ in range(5):  # missed 5 times: dropped
        tracker.update(make_detections([], [], []))
    assert tracker.num_tracks == 0
    assert [tracker.update(one(box)).ids.tolist() for _ in range(3)] == [[], [], [2]]


def test_tentative_track_dies_at_its_first_miss():
    tracker = Tracker(min_hits=2)
    tracker.update(make_detections([], [], []))  # the first frame's tracks are confirmed at once
    tracker.update(one([0, 0, 20, 20]))
    tracker.update(make_detections([], [], []))
    assert tracker.num_tracks == 0
    assert len(tracker.update(one([0, 0, 20, 20])).ids) == 0  # a new tentative track


def test_min_hits_one_reports_at_once_and_low_scores_start_nothing():
    tracker = Tracker(min_hits=1)
    found = tracker.update(make_detections([[0, 0, 20, 20], [50, 50, 90, 90]], [1, 1], [0.9, 0.4]))
    assert found.ids.tolist() == [1] and tracker.num_tracks == 1


def test_skipped_frames_are_predicted_through_and_count_as_misses():
    tracker = Tracker(max_misses=5)
    frames = list(range(0, 20)) + list(range(24, 40))  # frames 20-23 dropped by the reader
    boxes = [[10 + 4 * f, 100, 50 + 4 * f, 140] for f in frames]
    results = [tracker.update(one(b), frame=f) for b, f in zip(boxes, frames)]
    assert {int(i) for r in results for i in r.ids} == {1}
    assert results[20].ids.tolist() == [1]  # frame 24: found where the filter predicted it
    tracker.update(one([0, 0, 1, 1], label=2), frame=46)  # 6 frames without our object
    assert 1 not in tracker._table.ids


def test_tracks_fields():
    detections = make_detections([[0, 0, 20, 20], [100, 100, 130, 160], [50, 0, 60, 10]], [1, 3, 2],
                                 [0.9, 0.8, 0.05])
    tracker = Tracker(min_hits=1)
    found = tracker.update(detections)
    assert isinstance(found, Tracks)
    assert found.ids.dtype == np.int64 and found.labels.dtype == np.int64 and found.ages.dtype == np.int64
    assert found.boxes.dtype == np.float32 and found.boxes.shape == (2, 4) and found.scores.dtype == np.float32
    np.testing.assert_array_equal(found.scores, detections.scores[found.detection_index])
    np.testing.assert_array_equal(found.labels, detections.labels[found.detection_index])
    assert found.names == ["circle", "triangle"]
    shifted = make_detections(detections.boxes[:2] + 2, [1, 3], [0.9, 0.8])
    later = tracker.update(shifted)
    assert later.ids.tolist() == [1, 2] and later.ages.tolist() == [1, 1]
    assert np.all(np.abs(later.boxes - shifted.boxes) < 2.0)  # filtered, close to the measurement


def test_per_class_matching_and_class_agnostic_mode():
    box = [100, 100, 150, 150]
    flicker = [one(box, label=1 + (i % 2)) for i in range(10)]  # the detector wavers between 2 classes
    per_class = run(Tracker(min_hits=1), flicker)
    assert len({int(i) for r in per_class for i in r.ids}) == 2  # one track per class
    agnostic = run(Tracker(min_hits=1, class_agnostic=True), flicker)
    assert {int(i) for r in agnostic for i in r.ids} == {1}
    assert [int(r.labels[0]) for r in agnostic[:3]] == [1, 2, 1]  # the latest label
    both = Tracker(min_hits=1).update(make_detections([box, box], [1, 2], [0.9, 0.9]))
    assert both.ids.tolist() == [1, 2]  # two classes at one place: two objects


# --- bad input ----------------------------------------------------------------------------


def test_empty_detections():
    tracker = Tracker()
    empty = make_detections([], [], [])
    result = tracker.update(empty)
    assert result.ids.shape == (0,) and result.boxes.shape == (0, 4)
    tracker.update(one([0, 0, 10, 10]))
    tracker.update(one([1, 0, 11, 10]))
    assert len(tracker.update(empty).ids) == 0 and tracker.num_tracks == 1
    plain = make_detections([], [], [])._replace(boxes=np.zeros((0,)))  # a flat empty array
    assert len(tracker.update(plain).ids) == 0


def test_errors_are_the_projects():
    assert issubclass(TrackingError, SSDEdgeError) and issubclass(TrackingError, ValueError)
    with pytest.raises(TrackingError, match="MotionNoise.velocity must be a positive number, got -1"):
        MotionNoise(velocity=-1)
    with pytest.raises(TrackingError, match="at least 2 points, got length=1"):
        Trails(length=1)


def test_nan_box_is_a_clear_error():
    detections = make_detections([[0, 0, 10, 10], [np.nan, 0, 10, 10]], [1, 1], [0.9, 0.9])
    with pytest.raises(TrackingError, match=r"detection 1 is not finite.*nan"):
        Tracker().update(detections)
    with pytest.raises(ValueError):  # TrackingError is a ValueError too
        Tracker().update(make_detections([[0, 0, 10, 10]], [1], [np.inf]))


@pytest.mark.parametrize("change, message", [
    (dict(boxes=np.zeros((2, 5), np.float32)), r"shape \(2, 5\); expected \(N, 4\)"),
    (dict(labels=np.array([1], np.int64)), r"2 boxes but 1 labels"),
    (dict(boxes=np.array([[10, 0, 0, 10], [0, 0, 1, 1]], np.float32)), r"detection 0 has x2 < x1"),
    (dict(labels=np.array([1.5, 2.0])), r"labels must be integers"),
])
def test_malformed_detections(change, message):
    detections = make_detections([[0, 0, 10, 10], [5, 5, 20, 20]], [1, 2], [0.9, 0.9])._replace(**change)
    with pytest.raises(TrackingError, match=message):
        Tracker().update(detections)


def test_not_detections():
    with pytest.raises(TrackingError, match="need boxes, labels and scores"):
        Tracker().update(np.zeros((3, 4)))


def test_unseen_class_is_tracked():
    tracker = Tracker(min_hits=1)
    tracker.update(one([0, 0, 10, 10], label=1))
    found = tracker.update(make_detections([[0, 0, 10, 10], [50, 50, 80, 80]], [1, 17], [0.9, 0.9]))
    assert found.ids.tolist() == [1, 2] and found.names == ["circle", "17"]


def test_frames_out_of_order():
    tracker = Tracker()
    tracker.update(one([0, 0, 10, 10]), frame=5)
    with pytest.raises(TrackingError, match="frame 5 is not after the previous frame 5"):
        tracker.update(one([0, 0, 10, 10]), frame=5)
    with pytest.raises(TrackingError, match="frame 3 is not after the previous frame 5"):
        tracker.update(one([0, 0, 10, 10]), frame=3)
    with pytest.raises(TrackingError, match="integer frame index"):
        tracker.update(one([0, 0, 10, 10]), frame=6.0)
    tracker.update(one([0, 0, 10, 10]))  # None: the next frame
    assert tracker.frame == 6
    tracker.reset()
    tracker.update(one([0, 0, 10, 10]), frame=0)
    assert tracker.frame == 0


@pytest.mark.parametrize("settings, message", [
    (dict(min_hits=0), "min_hits must be at least 1"),
    (dict(low_score=0.6, high_score=0.5), "low_score <= high_score"),
    (dict(match_similarity=0.0), r"match_similarity must lie in \(0, 1\]"),
    (dict(max_age=3), r"unknown tracker setting\(s\) \['max_age'\]"),
])
def test_bad_settings(settings, message):
    with pytest.raises(TrackingError, match=message):
        Tracker(**settings)


def test_config_and_settings_combine():
    tracker = Tracker(TrackerConfig(min_hits=4), max_misses=7)
    assert (tracker.config.min_hits, tracker.config.max_misses) == (4, 7)


# --- line counting ------------------------------------------------------------------------


def tracks_at(points, ids, labels, size=10.0):
    """Tracks whose boxes have their bottom centre at each (x, y)."""
    points = np.asarray(points, float).reshape(-1, 2)
    boxes = np.stack([points[:, 0] - size / 2, points[:, 1] - size, points[:, 0] + size / 2, points[:, 1]], axis=1)
    n = len(points)
    return Tracks(np.asarray(ids, np.int64), boxes.astype(np.float32), np.asarray(labels, np.int64),
                  np.ones(n, np.float32), np.zeros(n, np.int64), np.arange(n), CLASS_NAMES)


def test_line_counter_directions_and_classes():
    counter = LineCounter((0, 100), (200, 100))  # drawn left to right: its right side is below
    path_down = [(50, y) for y in range(80, 121, 5)]
    path_up = [(150, y) for y in range(120, 79, -5)]
    crossings = []
    for down, up in zip(path_down, path_up):
        crossings += counter.update(tracks_at([down, up], [1, 2], [1, 3]))
    assert [(c.track_id, c.label, c.direction) for c in crossings] == [(1, 1, "top_to_bottom"),
                                                                      (2, 3, "bottom_to_top")]
    assert counter.counts == {(1, "top_to_bottom"): 1, (3, "bottom_to_top"): 1}
    assert counter.counts_by_name(CLASS_NAMES) == {"circle": {"top_to_bottom": 1, "bottom_to_top": 0},
                                                   "triangle": {"top_to_bottom": 0, "bottom_to_top": 1}}


def test_line_counter_ignores_jitter_and_passes_beyond_the_ends():
    counter = LineCounter((0, 100), (200, 100), margin_px=3)
    for y in [90, 99, 101, 98, 102, 99, 101, 110, 101, 99, 102, 115]:  # wobbles on the line, crosses once
        counter.update(tracks_at([(50, y)], [1], [1]))
    for y in [90, 110, 90]:  # beyond the segment's right end
        counter.update(tracks_at([(300, y)], [2], [1]))
    assert counter.counts == {(1, "top_to_bottom"): 1}


def test_line_counter_with_the_tracker():
    objects = [MovingObject(1, 0, (100, 40, 40, 40), (0.0, 4.0)), MovingObject(2, 0, (300, 440, 40, 40), (0.0, -4.0))]
    sequence = simulate(objects, 110, seed=5)
    tracker, counter = Tracker(), LineCounter(*parse_line("0,240,640,240"), anchor="center")
    for detections in sequence.detections:
        counter.update(tracker.update(detections))
    assert counter.counts == {(1, "top_to_bottom"): 1, (2, "bottom_to_top"): 1}


def test_line_counter_bad_input():
    with pytest.raises(TrackingError, match="x1,y1,x2,y2"):
        parse_line("1,2,3")
    with pytest.raises(TrackingError, match="x1,y1,x2,y2"):
        parse_line("1,2,3,nan")
    with pytest.raises(TrackingError, match="zero length"):
        LineCounter((5, 5), (5, 5))
    with pytest.raises(TrackingError, match="unknown anchor"):
        LineCounter((0, 0), (5, 5), anchor="left")
    assert parse_line(" 10, 20,30,40.5") == ((10.0, 20.0), (30.0, 40.5))


# --- demo helpers -------------------------------------------------------------------------


def test_tracks_records_and_trails():
    tracker, trails = Tracker(min_hits=1), Trails(length=3, forget_after=2)
    for step in range(5):
        found = tracker.update(one([10 * step, 0, 10 * step + 20, 20], label=2, score=0.87654))
        shown = trails.update(found)
    record = found.to_records()
    assert json.loads(json.dumps(record)) == [{"id": 1, "box": record[0]["box"], "label": 2, "name": "square",
                                               "score": 0.87654, "age": 4, "detection": 0}]
    assert np.allclose(record[0]["box"], found.boxes[0], atol=0.005)
    assert shown[1].shape == (3, 2) and shown[1][-1, 0] > shown[1][0, 0]  # oldest first
    for _ in range(3):
        trails.update(Tracks.empty())
    assert trails._points == {}
