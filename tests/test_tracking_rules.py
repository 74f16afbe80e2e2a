"""The tracker's rules stated on their own, each against an independent oracle: the
assignment (max total similarity among pairs above the threshold, checked by brute force),
the Kalman filter's noise (the formula in kalman's docstring) and its multi-frame
prediction, the first frame, and the named presets."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.tracking import MotionNoise, Tracker, TrackerConfig, TrackingError
from ssd_edge.runtime.tracking.association import assign
from ssd_edge.runtime.tracking.kalman import BoxKalman
from ssd_edge.runtime.tracking.presets import PRESETS, config_record, load_tracker_config, tracker_config


def best_total(similarity: np.ndarray, threshold: float) -> float:
    """Brute force: the largest sum of similarities over one-to-one pairs, each >= threshold."""
    rows, cols = similarity.shape
    best = 0.0
    for k in range(min(rows, cols) + 1):
        for chosen_rows in itertools.combinations(range(rows), k):
            for chosen_cols in itertools.permutations(range(cols), k):
                values = similarity[list(chosen_rows), list(chosen_cols)]
                if np.all(values >= threshold):
                    best = max(best, float(values.sum()))
    return best


def test_assign_prefers_one_strong_pair_to_two_weak_ones():
    found = assign(np.array([[0.9, 0.25], [0.25, 0.0]]), 0.2)
    assert found.pairs.tolist() == [[0, 0]]
    assert found.unmatched_tracks.tolist() == [1] and found.unmatched_detections.tolist() == [1]


def test_assign_maximises_total_similarity_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(300):
        similarity = rng.random((int(rng.integers(1, 5)), int(rng.integers(1, 5))))
        similarity[rng.random(similarity.shape) < 0.3] = 0.0
        threshold = float(rng.choice([0.1, 0.2, 0.5]))
        found = assign(similarity, threshold)
        got = similarity[found.pairs[:, 0], found.pairs[:, 1]]
        assert np.all(got >= threshold)
        assert len(set(found.pairs[:, 0])) == len(found.pairs) == len(set(found.pairs[:, 1]))
        assert got.sum() == pytest.approx(best_total(similarity, threshold))


def test_process_and_measurement_noise_follow_the_stated_formula():
    noise = MotionNoise()
    kalman = BoxKalman(noise)
    widths = np.array([4.0, 10.0, 40.0, 100.0, 159.0, 300.0])
    heights = 2.5 * widths
    boxes = np.stack([np.zeros_like(widths), np.zeros_like(widths), widths, heights], axis=1)
    means, covariances = kalman.initiate(boxes)
    floor = noise.min_std_px / noise.position  # the size floor: 20 px at the defaults
    w, h = np.maximum(widths, floor), np.maximum(heights, floor)
    size = np.stack([w, h, w, h], axis=1)
    # initial covariance
    expected_initial = np.concatenate([noise.initial_position * size, noise.initial_velocity * size], axis=1) ** 2
    np.testing.assert_allclose(np.diagonal(covariances, axis1=1, axis2=2), expected_initial)
    # process noise Q: predicted covariance = F P F^T + Q
    predicted_means, predicted = kalman.predict(means, covariances)
    transition = np.eye(8)
    transition[:4, 4:] = np.eye(4)
    q = predicted - transition @ covariances @ transition.T
    expected_q = np.concatenate([noise.position * size, noise.velocity * size], axis=1) ** 2
    np.testing.assert_allclose(np.diagonal(q, axis1=1, axis2=2), expected_q, rtol=1e-9)
    np.testing.assert_allclose(q - np.eye(8) * np.diagonal(q, axis1=1, axis2=2)[:, None, :], 0.0, atol=1e-9)
    # the velocity noise keeps its stated ratio to the position noise for every box size
    ratio = np.sqrt(expected_q[:, 4:] / expected_q[:, :4])
    np.testing.assert_allclose(np.sqrt(np.diagonal(q, axis1=1, axis2=2)[:, 4:]
                                       / np.diagonal(q, axis1=1, axis2=2)[:, :4]),
                               ratio)
    np.testing.assert_allclose(ratio, noise.velocity / noise.position)
    # measurement noise R, read off a Kalman update: S = H P H^T + R, K = P H^T S^-1
    box = predicted_means[:, :4].copy()
    measured = np.stack([box[:, 0] - box[:, 2] / 2, box[:, 1] - box[:, 3] / 2,
                         box[:, 0] + box[:, 2] / 2, box[:, 1] + box[:, 3] / 2], axis=1)
    _, updated = kalman.update(predicted_means, predicted, measured)
    for i in range(len(widths)):
        p_hh = predicted[i, :4, :4]
        r = np.diag((noise.measurement * size[i]) ** 2)
        gain = predicted[i, :, :4] @ np.linalg.inv(p_hh + r)
        np.testing.assert_allclose(updated[i], predicted[i] - gain @ (p_hh + r) @ gain.T, rtol=1e-7, atol=1e-9)
    assert np.all(np.sqrt(np.diagonal(q, axis1=1, axis2=2)[:, :4]) >= noise.min_std_px - 1e-12)


def test_a_gap_of_k_frames_is_k_predicted_steps():
    kalman = BoxKalman()
    means, covariances = kalman.initiate(np.array([[0.0, 0.0, 30.0, 70.0], [5.0, 5.0, 300.0, 200.0]]))
    means[:, 4:] = [[2.0, 1.0, 0.5, 0.2], [-1.0, 0.0, 1.0, 0.0]]
    stepped = (means, covariances)
    for _ in range(4):
        stepped = kalman.predict(*stepped)
    jumped = kalman.predict(means, covariances, steps=4)
    np.testing.assert_allclose(jumped[0], stepped[0])
    np.testing.assert_allclose(jumped[1], stepped[1])
    with pytest.raises(TrackingError, match="steps >= 1"):
        kalman.predict(means, covariances, steps=0)


def detections(boxes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(boxes, np.ones(len(boxes), np.int64), scores, np.zeros((len(boxes), 2), np.float32))


def test_first_frame_reports_tracks_as_bytetrack_does():
    tracker = Tracker()  # min_hits=2
    first = tracker.update(detections([[10, 10, 50, 90], [100, 10, 140, 90]]))
    assert first.ids.tolist() == [1, 2]
    later = tracker.update(detections([[11, 10, 51, 90], [101, 10, 141, 90], [300, 10, 340, 90]]))
    assert later.ids.tolist() == [1, 2]  # the third is born tentative: after the first frame
    tracker.reset()
    assert tracker.update(detections([[10, 10, 50, 90]]), frame=7).ids.tolist() == [1]


class BoxesLabelsScores:
    """Anything with boxes, labels and scores: no confs, no class names."""

    def __init__(self, boxes, labels, scores):
        self.boxes, self.labels, self.scores = boxes, labels, scores


def test_tracker_takes_any_object_with_boxes_labels_scores():
    tracker = Tracker()
    found = tracker.update(BoxesLabelsScores([[0, 0, 10, 20]], [3], [0.8]))
    assert found.ids.tolist() == [1] and found.labels.tolist() == [3] and found.class_names == ()


def test_presets_are_bytetracks_published_settings(tmp_path):
    assert PRESETS["bytetrack-demo"] == TrackerConfig()
    mot17 = PRESETS["bytetrack-mot17"]
    assert (mot17.high_score, mot17.new_track_score, mot17.match_similarity, mot17.max_misses) == (
        0.6, 0.7, pytest.approx(0.1), 30)
    assert PRESETS["bytetrack-mot20"].fuse_score is False
    assert tracker_config("bytetrack-mot17", max_misses=60).max_misses == 60
    with pytest.raises(TrackingError, match="unknown tracker preset 'mot99'"):
        tracker_config("mot99")
    with pytest.raises(TrackingError, match="unknown tracker setting"):
        tracker_config(buffer=3)
    path = tmp_path / "tracker.json"
    path.write_text(json.dumps({"preset": "bytetrack-mot20", "max_misses": 14}))
    config = load_tracker_config(path, high_score=0.55)
    assert (config.max_misses, config.high_score, config.fuse_score) == (14, 0.55, False)
    path.write_text(json.dumps(config_record(config)))
    assert load_tracker_config(path) == config
    path.write_text("{oops")
    with pytest.raises(TrackingError, match=f"{path}: not valid JSON at line 1"):
        load_tracker_config(path)
    path.write_text(json.dumps({"low_score": 0.9}))
    with pytest.raises(TrackingError, match=f"{path}: need 0 <= low_score <= high_score"):
        load_tracker_config(path)
