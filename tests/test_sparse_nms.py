"""The fast NumPy postprocessing (prefix of the final order, sparse overlap graph) against
the dense statement of the same rules, exactly: same boxes, labels, scores, bit for bit."""

import importlib

import numpy as np
import pytest

from ssd_edge.runtime.boxes import decode, pairwise_iou
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.postprocess import sparse_nms
from ssd_edge.runtime.postprocess.fast import (
    PREFIX_WORTHWHILE,
    greedy_nms_mask,
    possible_boxes,
    postprocess,
    ranked_candidates,
    softmax,
    top_k_per_class,
)
from ssd_edge.runtime.postprocess.sparse_nms import DENSE_UP_TO, class_edges, overlapping_pairs
from tests.helpers.postprocess_cases import random_outputs, random_priors


def dense_postprocess_image(locs, probs, priors, image_hw, cfg):
    """Per class: threshold, stable sort, top_k, decode, dense greedy NMS; then merge."""
    threshold = np.float32(cfg.score_threshold)
    rows = []
    for c in range(1, probs.shape[1]):
        idx = np.flatnonzero(probs[:, c] > threshold)
        idx = idx[np.argsort(-probs[idx, c], kind="stable")][: cfg.top_k]
        if idx.size == 0:
            continue
        boxes = np.clip(decode(locs[idx], priors[idx], cfg.variances), 0.0, 1.0)
        keep = greedy_nms_mask(boxes[None], np.ones((1, idx.size), bool), cfg.iou_threshold)[0]
        rows += [(probs[p, c], p, c, box) for p, box in zip(idx[keep], boxes[keep])]
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    rows = rows[: cfg.max_detections]
    h, w = image_hw
    scale = np.array([w, h, w, h], np.float32)
    boxes = np.array([r[3] * scale for r in rows], np.float32).reshape(-1, 4)
    return boxes, np.array([r[2] for r in rows], np.int64), np.array([r[0] for r in rows], np.float32)


def assert_identical(ours, dense):
    boxes, labels, scores = dense
    np.testing.assert_array_equal(ours.labels, labels)
    np.testing.assert_array_equal(ours.scores, scores)
    np.testing.assert_array_equal(ours.boxes, boxes)


CASES = [
    # (priors, classes, logit_scale, config)
    (200, 5, 3.0, PostprocessConfig()),
    (400, 8, 1.0, PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=300, max_detections=300)),
    (300, 4, 0.3, PostprocessConfig(score_threshold=0.0, iou_threshold=0.3, top_k=50, max_detections=25)),
    (300, 3, 2.0, PostprocessConfig(score_threshold=0.2, iou_threshold=0.0, top_k=100, max_detections=100)),
    (250, 6, 2.0, PostprocessConfig(score_threshold=0.05, iou_threshold=1.0, top_k=20, max_detections=60)),
    (500, 21, 2.0, PostprocessConfig(score_threshold=0.01, iou_threshold=0.45, top_k=200, max_detections=5)),
]


@pytest.mark.parametrize("num_priors,classes,scale,cfg", CASES)
def test_fast_equals_dense_on_random_outputs(num_priors, classes, scale, cfg):
    rng = np.random.default_rng(num_priors + classes)
    for _ in range(3):
        priors = random_priors(rng, num_priors)
        locs, confs = random_outputs(rng, 2, num_priors, classes, logit_scale=scale)
        probs = softmax(confs)
        for b, det in enumerate(postprocess(locs, confs, priors, [(300, 400)] * 2, cfg)):
            assert_identical(det, dense_postprocess_image(locs[b], probs[b], priors, (300, 400), cfg))


def test_fast_equals_dense_where_the_background_dominates():
    # As in a trained model: at a deployment threshold most default boxes cannot pass and are
    # left out before the softmax (`possible_boxes`); the detections must not change.
    rng = np.random.default_rng(5)
    priors = random_priors(rng, 800)
    locs, confs = random_outputs(rng, 2, 800, 5, logit_scale=2.0)
    confs[..., 0] += 4.0
    for threshold in (0.05, 0.3, 0.6):
        cfg = PostprocessConfig(score_threshold=threshold, iou_threshold=0.5, top_k=100, max_detections=50)
        in_use = possible_boxes(np.ascontiguousarray(confs[0].T), threshold).size < 400
        assert in_use == (threshold > 0.05)  # the filter is used at 0.3 and 0.6, not at 0.05
        for b, det in enumerate(postprocess(locs, confs, priors, [(240, 320)] * 2, cfg)):
            assert len(det.labels) > 0
            assert_identical(det, dense_postprocess_image(locs[b], softmax(confs[b]), priors, (240, 320), cfg))


def test_fast_equals_dense_with_heavy_suppression_and_ties():
    # Many copies of few boxes and quantised scores: long suppression chains, equal scores.
    rng = np.random.default_rng(7)
    base = random_priors(rng, 12)
    priors = np.repeat(base, 30, axis=0) * rng.uniform(0.97, 1.03, (360, 4)).astype(np.float32)
    locs = np.zeros((1, 360, 4), np.float32)
    confs = np.round(rng.normal(0, 1, (1, 360, 4)), 1).astype(np.float32)
    cfg = PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, top_k=200, max_detections=40)
    det = postprocess(locs, confs, priors, [(100, 100)], cfg)[0]
    assert_identical(det, dense_postprocess_image(locs[0], softmax(confs[0]), priors, (100, 100), cfg))


@pytest.mark.parametrize("count", [2, DENSE_UP_TO, DENSE_UP_TO + 1, 400])  # all pairs at once, and the sweep
def test_overlapping_pairs_equals_dense_iou(count):
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 1, (count, 2))
    sizes = np.exp(rng.uniform(np.log(0.01), np.log(0.8), (count, 2)))
    boxes = np.clip(np.concatenate([centres - sizes / 2, centres + sizes / 2], 1), 0, 1).astype(np.float32)
    boxes[::17, 2] = boxes[::17, 0]  # zero-width boxes overlap nothing
    for threshold in (0.0, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0):
        a, b = overlapping_pairs(boxes, threshold)
        assert np.all(a != b) and len(set(zip(np.minimum(a, b), np.maximum(a, b)))) == len(a)  # each pair once
        found = np.zeros((count, count), bool)
        found[a, b] = found[b, a] = True
        dense = pairwise_iou(boxes, boxes) > np.float32(threshold)
        np.fill_diagonal(dense, False)
        np.testing.assert_array_equal(found, dense)


@pytest.mark.parametrize("groups", [1, 3, 4, 9])
def test_class_edges_by_class_equal_the_bitsets(groups, monkeypatch):
    rng = np.random.default_rng(groups)
    boxes_count = 300
    centres = rng.uniform(0, 1, (boxes_count, 2))
    sizes = rng.uniform(0.05, 0.4, (boxes_count, 2))
    boxes = np.clip(np.concatenate([centres - sizes / 2, centres + sizes / 2], 1), 0, 1).astype(np.float32)
    pair_a, pair_b = overlapping_pairs(boxes, 0.3)
    # candidates: each box of one to `groups` classes, numbered in a shuffled final order
    member = rng.random((groups, boxes_count)) < 0.6
    member[rng.integers(0, groups, boxes_count), np.arange(boxes_count)] = True
    group, box_of = np.nonzero(member)
    shuffled = rng.permutation(group.size)
    group, box_of = group[shuffled], box_of[shuffled]
    edges = {}
    for few_groups in (0, 64):  # the bitsets; one class at a time
        monkeypatch.setattr(sparse_nms, "FEW_GROUPS", few_groups)
        better, worse = class_edges(group, box_of, boxes_count, pair_a, pair_b)
        assert np.all(better < worse) and np.all(group[better] == group[worse])
        edges[few_groups] = sorted(zip(better.tolist(), worse.tolist()))
    assert len(edges[0]) > 0 and edges[0] == edges[64]


def test_ranked_candidates_prefix_follows_the_final_order():
    scores = np.array([[0.5, 0.2], [0.5, 0.9], [0.1, 0.5]], np.float32)
    # ten more default boxes scoring 0.16 in both classes, so that a prefix of 2 is worth taking
    scores = np.vstack([scores, np.full((10, 2), 0.16, np.float32)])
    scores = scores.T  # classes first, as the postprocessing holds them
    candidates = scores > np.float32(0.15)
    prior, group, score, complete = ranked_candidates(candidates, scores, 100, None)
    assert list(zip(prior, group))[:6] == [(1, 1), (0, 0), (1, 0), (2, 1), (0, 1), (3, 0)] and complete
    assert len(prior) == 25
    prior, group, score, complete = ranked_candidates(candidates, scores, 100, 2)
    # the cut falls inside the tie at 0.5: the tie is cut by default box, then class (taking
    # the whole tie made all-tied scores cost every candidate: issue 22 item 12)
    assert list(zip(prior, group)) == [(1, 1), (0, 0)] and not complete
    prior, group, score, complete = ranked_candidates(candidates, scores, 100, 3)
    assert list(zip(prior, group)) == [(1, 1), (0, 0), (1, 0)] and not complete


def test_ranked_candidates_takes_every_entry_when_top_k_bounds_them_within_a_prefix_worth_taking():
    # 3 classes x top_k 4 = 12 entries at most: no prefix of 3 is worth taking, however many
    # candidates there are (200 here, over PREFIX_WORTHWHILE x 3), so every entry comes at once.
    rng = np.random.default_rng(11)
    scores = rng.uniform(0.2, 1.0, (3, 200)).astype(np.float32)
    scores[:, 50:60] = np.float32(0.9)  # ties across classes and default boxes
    candidates = scores > np.float32(0.1)
    assert np.count_nonzero(candidates) > PREFIX_WORTHWHILE * 3 and 3 * 4 <= PREFIX_WORTHWHILE * 3
    prior, group, score, complete = ranked_candidates(candidates, scores, 4, 3)
    every = ranked_candidates(candidates, scores, 4, None)
    assert complete and len(prior) == 12
    for ours, expected in zip((prior, group, score), every[:3]):
        np.testing.assert_array_equal(ours, expected)
    # top_k 5 (15 entries) is over 4 x 3: a prefix of 3 again
    assert ranked_candidates(candidates, scores, 5, 3)[3] is False


def test_top_k_per_class_breaks_ties_by_lower_default_box_and_ignores_nan():
    scores = np.array(  # classes first: (classes, default boxes)
        [[0.2, 0.5, 0.5, 0.7, 0.5, 0.05], [0.9, np.nan, 0.1, np.nan, 0.8, 0.3]], np.float32
    )
    over = scores > np.float32(0.1)
    chosen = top_k_per_class(over, scores, top_k=3)
    # class 0: 0.7, then two of the three tied 0.5s (lowest default boxes 1 and 2)
    assert np.flatnonzero(chosen[0]).tolist() == [1, 2, 3]
    # class 1: NaN never counts; 0.9, 0.8, 0.3 (0.1 is not over the threshold)
    assert np.flatnonzero(chosen[1]).tolist() == [0, 4, 5]
    # uncrowded classes keep everything over the threshold
    assert np.array_equal(top_k_per_class(over, scores, top_k=10), over)


@pytest.mark.parametrize("threshold", [0.001, 0.3, 0.6])
def test_small_candidate_sets_take_the_pairwise_path_with_the_same_result(threshold, monkeypatch):
    module = importlib.import_module("ssd_edge.runtime.postprocess.fast")  # the package's `postprocess` is the function
    sweep_module = importlib.import_module("ssd_edge.runtime.postprocess.sparse_nms")

    rng = np.random.default_rng(17)
    priors = random_priors(rng, 300)
    locs, confs = random_outputs(rng, 2, 300, 4, logit_scale=2.0)
    confs[..., 0] += 3.0
    cfg = PostprocessConfig(score_threshold=threshold, iou_threshold=0.5, top_k=100, max_detections=50)
    results = {}
    for dense_up_to in (0, 1000):  # every set through the sweep; every set pairwise
        monkeypatch.setattr(module, "PAIRWISE_UP_TO", dense_up_to)
        monkeypatch.setattr(sweep_module, "DENSE_UP_TO", dense_up_to)
        results[dense_up_to] = postprocess(locs, confs, priors, [(240, 320)] * 2, cfg)
    for sweep, pairwise in zip(results[0], results[1000]):
        assert len(sweep.labels) > 0
        assert_identical(sweep, (pairwise.boxes, pairwise.labels, pairwise.scores))
