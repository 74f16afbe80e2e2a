"""The NumPy reference against a literal reading of the design, the torch PostProcessor
and torchvision's own SSD postprocessing."""

import numpy as np
import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import batched_nms, clip_boxes_to_image

from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.models.postprocessor import PostProcessor
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.postprocess.fast import possible_boxes, postprocess, softmax
from ssd_edge.runtime.postprocess.reference import reference_postprocess_image
from ssd_edge.runtime.priors import default_boxes
from tests.helpers.postprocess_cases import random_outputs, random_priors


def assert_same(ours, boxes, labels, scores, box_atol=1e-4):
    np.testing.assert_array_equal(ours.labels, labels)
    np.testing.assert_allclose(ours.scores, scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.boxes, boxes, atol=box_atol)


def run_torch(locs, logits, priors, sizes, cfg):
    out = PostProcessor(cfg)(torch.from_numpy(locs), torch.from_numpy(logits), torch.from_numpy(priors), sizes)
    return [tuple(t[b].numpy() for t in out) for b in range(len(locs))]


CONFIGS = [
    PostprocessConfig(),
    PostprocessConfig(score_threshold=0.3, iou_threshold=0.3, top_k=5, max_detections=7),
    PostprocessConfig(score_threshold=0.001, iou_threshold=0.7, top_k=50, max_detections=20),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_fast_path_equals_the_plain_reference(cfg):
    rng = np.random.default_rng(0)
    priors = random_priors(rng, 60)
    locs, logits = random_outputs(rng, 3, 60, 4)
    sizes = [(480, 640), (100, 100), (300, 200)]
    for b, det in enumerate(postprocess(locs, logits, priors, sizes, cfg)):
        ref = reference_postprocess_image(locs[b], logits[b], priors, sizes[b], cfg)
        assert_same(det, ref.boxes, ref.labels, ref.scores)
        np.testing.assert_array_equal(det.confs, ref.confs)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_torch_postprocessor_equals_numpy(cfg):
    rng = np.random.default_rng(1)
    priors = random_priors(rng, 500)
    locs, logits = random_outputs(rng, 4, 500, 6)
    sizes = [(320, 320), (480, 640), (720, 1280), (50, 80)]
    reference = postprocess(locs, logits, priors, sizes, cfg)
    for ref, (boxes, labels, scores, kept_confs) in zip(reference, run_torch(locs, logits, priors, sizes, cfg)):
        assert_same(ref, boxes, labels, scores)
        np.testing.assert_allclose(ref.confs, kept_confs, rtol=1e-6, atol=1e-7)


def test_confs_are_the_softmax_rows_of_the_kept_boxes():
    rng = np.random.default_rng(2)
    priors = random_priors(rng, 100)
    locs, logits = random_outputs(rng, 1, 100, 5)
    det = postprocess(locs, logits, priors, [(10, 10)], PostprocessConfig(score_threshold=0.2))[0]
    probs = softmax(logits[0])
    assert len(det.scores) > 0
    rows = [np.flatnonzero(np.all(np.isclose(probs, row), axis=1))[0] for row in det.confs]
    np.testing.assert_allclose(det.scores, probs[rows, det.labels])
    np.testing.assert_allclose(det.confs.sum(axis=1), 1.0, rtol=1e-5)


def test_no_box_above_threshold():
    rng = np.random.default_rng(3)
    priors = random_priors(rng, 50)
    locs, _ = random_outputs(rng, 2, 50, 3)
    logits = np.zeros((2, 50, 3), np.float32)
    logits[..., 0] = 10.0  # everything is background
    cfg = PostprocessConfig(score_threshold=0.5)
    for det in postprocess(locs, logits, priors, [(10, 10)] * 2, cfg):
        assert det.boxes.shape == (0, 4) and det.labels.shape == (0,) and det.confs.shape == (0, 3)
    for boxes, labels, scores, kept in run_torch(locs, logits, priors, [(10, 10)] * 2, cfg):
        assert boxes.shape == (0, 4) and labels.shape == (0,) and kept.shape == (0, 3)


def test_every_box_above_threshold_and_max_detections_cut():
    rng = np.random.default_rng(4)
    priors = random_priors(rng, 300)
    locs, logits = random_outputs(rng, 2, 300, 3, logit_scale=2.0)
    cfg = PostprocessConfig(score_threshold=0.0, iou_threshold=1.0, top_k=1000, max_detections=450)
    dets = postprocess(locs, logits, priors, [(100, 100)] * 2, cfg)
    # NMS at IoU 1.0 suppresses nothing: every (box, class) pair survives, then the cut.
    assert all(len(d.scores) == 450 for d in dets)
    for d, b in zip(dets, range(2)):
        all_scores = np.sort(softmax(logits[b])[:, 1:].ravel())[::-1]
        np.testing.assert_allclose(d.scores, all_scores[:450])
    for ref, torch_out in zip(dets, run_torch(locs, logits, priors, [(100, 100)] * 2, cfg)):
        assert_same(ref, *torch_out[:3])


def test_identical_scores_order_by_prior_then_class():
    priors = np.array([[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]], np.float32)
    locs = np.zeros((1, 3, 4), np.float32)
    logits = np.zeros((1, 3, 3), np.float32)  # all classes equally likely: every score is 1/3
    cfg = PostprocessConfig(score_threshold=0.1)
    det = postprocess(locs, logits, priors, [(100, 100)], cfg)[0]
    assert det.labels.tolist() == [1, 2, 1, 2, 1, 2]
    np.testing.assert_allclose(det.boxes[::2, 0], [15, 45, 75], rtol=1e-5)
    boxes, labels, scores, _ = run_torch(locs, logits, priors, [(100, 100)], cfg)[0]
    assert_same(det, boxes, labels, scores)


def test_identical_scores_within_a_class_keep_the_lower_prior():
    # Two identical boxes with identical scores: NMS keeps the one with the lower index.
    priors = np.array([[0.5, 0.5, 0.2, 0.2]] * 2 + [[0.1, 0.1, 0.05, 0.05]], np.float32)
    locs = np.zeros((1, 3, 4), np.float32)
    logits = np.array([[[0, 2], [0, 2], [0, 1]]], np.float32)
    det = postprocess(locs, logits, priors, [(1, 1)], PostprocessConfig())[0]
    np.testing.assert_allclose(det.boxes, [[0.4, 0.4, 0.6, 0.6], [0.075, 0.075, 0.125, 0.125]], atol=1e-6)
    torch_boxes = run_torch(locs, logits, priors, [(1, 1)], PostprocessConfig())[0][0]
    np.testing.assert_allclose(torch_boxes, det.boxes, atol=1e-6)


def torchvision_postprocess(locs, logits, priors_cxcywh, image_hw, cfg):
    """torchvision's SSD.postprocess_detections, at the same thresholds, on our priors."""
    h, w = image_hw
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    anchors = torch.cat([priors_cxcywh[:, :2] - priors_cxcywh[:, 2:] / 2,
                         priors_cxcywh[:, :2] + priors_cxcywh[:, 2:] / 2], 1)
    coder = det_utils.BoxCoder(weights=(1 / cfg.variances[0],) * 2 + (1 / cfg.variances[1],) * 2)
    boxes = clip_boxes_to_image(coder.decode_single(locs, anchors * scale), (h, w))
    scores = torch.softmax(logits, -1)
    all_boxes, all_scores, all_labels = [], [], []
    for label in range(1, scores.shape[1]):
        score = scores[:, label]
        keep = score > cfg.score_threshold
        score, box = score[keep], boxes[keep]
        score, idx = score.topk(min(cfg.top_k, score.numel()))
        all_boxes.append(box[idx])
        all_scores.append(score)
        all_labels.append(torch.full_like(score, label, dtype=torch.int64))
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    keep = batched_nms(boxes, scores, labels, cfg.iou_threshold)[: cfg.max_detections]
    return boxes[keep].numpy(), labels[keep].numpy(), scores[keep].numpy()


def test_numpy_equals_torchvision_on_model_outputs():
    torch.manual_seed(0)
    model = calibrate_batchnorm(build_model("mobilenetv3_ssd", 21), torch.rand(4, 3, 320, 320))
    with torch.no_grad():
        locs, logits = model.raw(torch.rand(2, 3, 320, 320))
    priors = default_boxes(model.spec)
    cfg = model.spec.postprocess.replace(score_threshold=0.1)
    sizes = [(480, 640), (320, 320)]
    ours = postprocess(locs.numpy(), logits.numpy(), priors, sizes, cfg)
    for b, det in enumerate(ours):
        boxes, labels, scores = torchvision_postprocess(locs[b], logits[b], torch.from_numpy(priors), sizes[b], cfg)
        assert len(scores) > 10
        assert_same(det, boxes, labels, scores, box_atol=2e-3)


def test_possible_boxes_keeps_every_box_that_can_pass():
    # Thresholds one float32 step below real scores: those boxes pass by the smallest margin.
    rng = np.random.default_rng(11)
    logits = (rng.normal(0, 4, (3000, 6)) + rng.normal(0, 20, (3000, 1))).astype(np.float32)
    logits[::97] = np.float32(np.nan)
    logits[5, 2] = np.float32(np.inf)
    probs = softmax(logits)
    for score in rng.choice(probs[:, 1:][np.isfinite(probs[:, 1:])], 40):
        threshold = np.nextafter(np.float32(score), np.float32(-np.inf))
        passing = np.flatnonzero((probs[:, 1:] > threshold).any(axis=1))
        kept = possible_boxes(np.ascontiguousarray(logits.T), float(threshold))
        assert set(passing) <= set(kept)
        assert not np.isin(np.arange(0, 3000, 97), kept).any() and 5 not in kept  # NaN scores never pass
        assert kept.size < 3000 or threshold <= 0
    # a useful filter: where the background dominates, no box is left at a deployment threshold
    background = np.concatenate([np.full((3000, 1), 8.0), rng.normal(0, 1, (3000, 5))], 1).astype(np.float32)
    assert possible_boxes(np.ascontiguousarray(background.T), 0.25).size == 0
    assert possible_boxes(np.ascontiguousarray(logits.T), 0.0).size == 3000


# 21 logits (background first) for which summing the softmax denominator pairwise instead of
# class by class changes class 1's float32 score by one step (found by a review of the code).
SUM_ORDER_LOGITS = np.array(
    [0.0, -1.0, -6.163806438446045, -2.7474472522735596, -6.03713846206665, -4.603662967681885,
     -1.134839653968811, -1.2683995962142944, -2.9264705181121826, -4.211411952972412, -6.061761379241943,
     -6.875435829162598, -1.2105220556259155, -4.387519836425781, -7.188940525054932, -3.6355717182159424,
     -2.563218116760254, -3.708976984024048, -1.578916072845459, -11.499279022216797, -24.018796920776367],
    np.float32,
)


def class_by_class_softmax(logits):
    """One box, as the CUDA kernel computes it: float64 exponentials added in class order."""
    shifted = logits - logits.max()
    total = 0.0
    for value in shifted:
        total += np.exp(np.float64(value))
    return np.array([np.exp(np.float64(v)) / total for v in shifted], np.float32)


@pytest.mark.parametrize("other_boxes_pass", [False, True])
def test_scores_add_the_denominator_class_by_class_whatever_survives_the_box_filter(other_boxes_pass):
    expected = class_by_class_softmax(SUM_ORDER_LOGITS)
    exp = np.exp(np.float64(SUM_ORDER_LOGITS))
    assert not np.array_equal((exp / np.sum(exp)).astype(np.float32), expected)  # NumPy's pairwise sum differs
    logits = np.zeros((1, 4, 21), np.float32)
    logits[0, :, 0] = 50.0  # background only: the box filter leaves these out
    logits[0, 0] = SUM_ORDER_LOGITS
    if other_boxes_pass:
        logits[0, 1] = SUM_ORDER_LOGITS
    priors = np.array(
        [[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.2, 0.1, 0.1], [0.2, 0.8, 0.1, 0.1]], np.float32
    )
    cfg = PostprocessConfig(score_threshold=0.1, top_k=10, max_detections=10)
    found = postprocess(np.zeros((1, 4, 4), np.float32), logits, priors, [(100, 100)], cfg)[0]
    assert found.labels[0] == 1 and found.scores[0] == expected[1]
    np.testing.assert_array_equal(found.confs[0], expected)
    np.testing.assert_array_equal(softmax(SUM_ORDER_LOGITS[None])[0], expected)  # a lone box through softmax() too


def test_a_background_only_model_detects_nothing():
    cfg = PostprocessConfig(score_threshold=0.2)
    found = postprocess(np.zeros((1, 5, 4), np.float32), np.zeros((1, 5, 1), np.float32),
                        np.full((5, 4), 0.5, np.float32), [(10, 10)], cfg)[0]
    assert found.boxes.shape == (0, 4) and found.confs.shape == (0, 1)
