"""The float32 CUDA kernel's comparison rule (runtime/doctor/kernel_cases.py,
kernel_difference and its parts), on NumPy alone: it passes the NumPy path itself and
catches each kind of disagreement it is there for, and lets through only what near-ties
and borderline scores allow."""

from __future__ import annotations

import numpy as np

from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.doctor import kernel_cases as kc
from ssd_edge.runtime.postprocess.fast import possible_boxes, postprocess, softmax


def numpy_as_kernel(case):
    """NumPy's fast path in a kernel's place: its detections, float32 scores (B, C, P) and
    possible boxes (B, P)."""
    scores = softmax(case.confs).transpose(0, 2, 1).copy()
    possible = np.zeros((len(case.confs), case.confs.shape[1]), bool)
    for b, image in enumerate(case.confs):
        possible[b, possible_boxes(np.ascontiguousarray(image.T), case.config.score_threshold)] = True
    return postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config), scores, possible


def a_case():
    return next(c for c in kc.kernel_cases() if c.name == "random-b8-0")


def replaced(detections: Detections, **fields) -> Detections:
    return detections._replace(**fields)


def test_the_numpy_path_passes_its_own_rule():
    case = a_case()
    assert kc.kernel_difference(case, *numpy_as_kernel(case)) is None


def test_scores_off_by_more_than_1e_6_are_caught():
    case = a_case()
    got, scores, possible = numpy_as_kernel(case)
    column = np.flatnonzero(possible[0])[3]
    scores[0, 2, column] *= np.float32(1 + 3e-6)
    assert kc.kernel_difference(case, got, scores, possible).startswith("scores: image 0:")
    scores[0, 2, column] /= np.float32(1 + 3e-6)
    scores[0, 2, column] = np.nextafter(scores[0, 2, column], np.float32(1))  # one float32 step: allowed
    assert kc.probability_difference(case, scores, possible) is None


def test_a_prefilter_that_differs_is_caught():
    case = a_case()
    got, scores, possible = numpy_as_kernel(case)
    possible[1, np.flatnonzero(~possible[1])[0]] = True
    assert kc.kernel_difference(case, got, scores, possible).startswith("prefilter: image 1:")


def test_detections_not_those_of_numpy_on_the_kernels_scores_are_caught():
    case = a_case()
    got, scores, possible = numpy_as_kernel(case)
    boxes = got[2].boxes.copy()
    boxes[0, 0] = np.nextafter(boxes[0, 0], np.float32(np.inf))  # one float32 step off: decode is exact
    got[2] = replaced(got[2], boxes=boxes)
    assert kc.kernel_difference(case, got, scores, possible).startswith("NumPy on the kernel's scores: image 2: boxes")


def tie_case():
    """One image, two classes, candidates with chosen scores; boxes far apart."""
    config = PostprocessConfig(score_threshold=0.3, iou_threshold=0.5, top_k=10, max_detections=3)
    return config


def detections(scores, labels):
    n = len(scores)
    boxes = np.array([[10 * i, 0, 10 * i + 5, 5] for i in range(n)], np.float32)
    confs = np.full((n, 3), 0.1, np.float32)
    return Detections(boxes=boxes, labels=np.array(labels, np.int64), scores=np.array(scores, np.float32),
                      confs=confs, class_names=())


def test_tie_aware_order_and_borderline_rules():
    config = tie_case()
    expected = [detections([0.9, 0.8, 0.5], [1, 2, 1])]
    assert kc.tie_aware_difference(expected, expected, config) is None
    swapped = detections([0.8, 0.9, 0.5], [2, 1, 1])  # the first two in the other order: not near-tied
    swapped = replaced(swapped, boxes=expected[0].boxes[[1, 0, 2]])
    assert "other way round" in kc.tie_aware_difference([swapped], expected, config)
    near = [detections([0.9, 0.9 * (1 - 1e-7), 0.5], [1, 2, 1])]  # within 2 tau: either order
    near_swapped = replaced(near[0], boxes=near[0].boxes[[1, 0, 2]], labels=near[0].labels[[1, 0, 2]],
                            scores=near[0].scores[[1, 0, 2]])
    assert kc.tie_aware_difference([near_swapped], near, config) is None
    missing = detections([0.9, 0.8], [1, 2])  # 0.5 is clearly above 0.3 and the list is not cut
    assert "only in the reference output" in kc.tie_aware_difference([missing], expected, config)
    at_threshold = [detections([0.9, 0.8, 0.3000001], [1, 2, 1])]  # within tau of 0.3: may be out
    assert kc.tie_aware_difference([missing], at_threshold, config) is None
    off = replaced(expected[0], scores=np.array([0.9, 0.8, 0.5 * (1 + 5e-6)], np.float32))
    assert "scores" in kc.tie_aware_difference([off], expected, config)
