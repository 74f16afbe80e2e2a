"""Score distributions that used to make decode + NMS fall off a cliff (issue 22 item 12):
every class score tied (an untrained head gives every class 1/C), half of them tied, every
score above the threshold, every class ranking the default boxes alike. The fast path must
give the reference's detections exactly, in the DESIGN's order (score descending, ties by
lower default box, then lower class), and take no more than a prefix of the order when
that is enough."""

import warnings

import numpy as np
import pytest

from ssd_edge.runtime.boxes import decode
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.kernel_cases import huge_logits_case, threshold_boundary_case
from ssd_edge.runtime.postprocess import fast
from ssd_edge.runtime.postprocess.fast import (
    constant_boxes,
    postprocess,
    ranked_candidates,
    screen,
    softmax,
)
from ssd_edge.runtime.postprocess.reference import reference_postprocess_image
from tests.helpers.postprocess_cases import random_outputs, random_priors

PRIORS, CLASSES = 300, 8


def distribution(name: str, rng: np.random.Generator) -> np.ndarray:
    """Logits (1, P, C) of one named score distribution."""
    spread = random_outputs(rng, 1, PRIORS, CLASSES, logit_scale=3.0)[1]
    if name == "spread":
        return spread
    if name == "tied":  # every class 1/C in every default box
        return np.zeros((1, PRIORS, CLASSES), np.float32)
    if name == "half tied":  # every other default box tied
        spread[:, ::2] = 0.0
        return spread
    if name == "all above threshold":  # near-uniform, untied: every score passes 0.001
        return (spread * 0.01).astype(np.float32)
    if name == "same ranking":  # the classes rank the boxes alike: identical candidate lists
        logits = np.zeros((1, PRIORS, CLASSES), np.float32)
        logits[..., 0] = rng.normal(0, 1, (1, PRIORS))
        return logits
    raise ValueError(name)


DISTRIBUTIONS = ["spread", "tied", "half tied", "all above threshold", "same ranking"]
CONFIGS = [
    PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=60, max_detections=30),  # one prefix
    PostprocessConfig(score_threshold=0.001, iou_threshold=0.1, top_k=60, max_detections=60),  # prefixes grow
    PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=40, max_detections=400),  # every candidate
]


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_fast_path_equals_the_reference_on_every_distribution(name, cfg):
    rng = np.random.default_rng(DISTRIBUTIONS.index(name))
    priors = random_priors(rng, PRIORS)
    locs, _ = random_outputs(rng, 1, PRIORS, CLASSES)
    logits = distribution(name, rng)
    det = postprocess(locs, logits, priors, [(240, 320)], cfg)[0]
    ref = reference_postprocess_image(locs[0], logits[0], priors, (240, 320), cfg)
    assert len(ref.labels) > 0
    np.testing.assert_array_equal(det.labels, ref.labels)
    np.testing.assert_array_equal(det.scores, ref.scores)
    np.testing.assert_array_equal(det.confs, ref.confs)  # the same default boxes, in the same order
    np.testing.assert_allclose(det.boxes, ref.boxes, atol=1e-4)


def test_tied_scores_order_by_default_box_then_class():
    rng = np.random.default_rng(3)
    priors = random_priors(rng, PRIORS)
    locs, _ = random_outputs(rng, 1, PRIORS, CLASSES)
    cfg = PostprocessConfig(score_threshold=0.001, iou_threshold=1.0, top_k=PRIORS, max_detections=20)
    det = postprocess(locs, np.zeros((1, PRIORS, CLASSES), np.float32), priors, [(100, 100)], cfg)[0]
    # NMS off: the first 20 entries of the order, box 0 in classes 1..7, box 1 in 1..7, box 2 ...
    assert det.labels.tolist() == [1 + i % (CLASSES - 1) for i in range(20)]
    boxes = np.clip(decode(locs[0, :3], priors[:3], cfg.variances), 0, 1) * 100
    np.testing.assert_allclose(det.boxes, np.repeat(boxes, CLASSES - 1, axis=0)[:20], atol=1e-4)


def test_a_prefix_of_tied_scores_holds_the_count_asked_for():
    # The cliff: with every score tied the prefix used to take the whole tie, every candidate.
    scores = np.full((90, 3234), np.float32(1 / 91))
    prior, group, _, complete = ranked_candidates(scores > 0.001, scores, 300, 2400)
    assert not complete and prior.size == 2400
    assert (prior * 90 + group).tolist() == list(range(2400))  # default box, then class


def test_huge_logits_postprocess_without_warnings():
    # Issue 27: -3e38 - 3e38 overflows to -inf in the softmax (exp 0: the right score); no
    # NumPy warning may reach the user, and the detections are the reference's.
    case = huge_logits_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config)
    for b, det in enumerate(found):
        with np.errstate(all="ignore"):
            ref = reference_postprocess_image(case.locs[b], case.confs[b], case.priors, case.image_sizes[b],
                                              case.config)
        np.testing.assert_array_equal(det.labels, ref.labels)
        np.testing.assert_array_equal(det.scores, ref.scores)


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.6])
def test_float32_screen_keeps_every_box_that_can_pass(threshold):
    # Issue 22 item 12 at a deployment threshold: boxes left out by a float32 softmax must be
    # boxes where no class passes exactly; near-uniform 91-class scores and scores placed a
    # few float32 steps around the threshold.
    rng = np.random.default_rng(int(threshold * 100))
    logits = rng.normal(0, 1.5, (91, 4000)).astype(np.float32)
    t = float(np.float32(threshold))
    # class 1 of the first 1000 boxes: logit such that its score lies within a few ulp of t
    others = np.log(np.exp(logits[np.arange(91) != 1, :1000].astype(np.float64)).sum(axis=0))
    target = np.log(t / (1 - t)) + others
    logits[1, :1000] = (target + rng.integers(-3, 4, 1000) * np.abs(target) * 1.2e-7).astype(np.float32)
    probs = softmax(logits, axis=0)
    passing = np.flatnonzero((probs[1:] > np.float32(threshold)).any(axis=0))
    kept = screen(logits, threshold, None)[0]
    assert np.isin(passing, kept).all()
    assert 0 < passing.size and kept.size < 2 * passing.size + 50  # and it does leave boxes out


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_fast_path_with_the_screen_equals_the_reference(threshold):
    rng = np.random.default_rng(2)
    priors = random_priors(rng, 300)
    locs, logits = random_outputs(rng, 1, 300, 30, logit_scale=2.5)
    logits[..., 0] -= 1.0
    cfg = PostprocessConfig(score_threshold=threshold, iou_threshold=0.5, top_k=100, max_detections=100)
    det = postprocess(locs, logits, priors, [(240, 320)], cfg)[0]
    ref = reference_postprocess_image(locs[0], logits[0], priors, (240, 320), cfg)
    assert len(ref.labels) > 0
    np.testing.assert_array_equal(det.labels, ref.labels)
    np.testing.assert_array_equal(det.scores, ref.scores)
    np.testing.assert_array_equal(det.confs, ref.confs)
    case = threshold_boundary_case(0.3)  # scores one float32 step around the threshold
    for b, det in enumerate(postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config)):
        ref = reference_postprocess_image(case.locs[b], case.confs[b], case.priors, case.image_sizes[b], case.config)
        np.testing.assert_array_equal(det.scores, ref.scores)
        np.testing.assert_array_equal(det.labels, ref.labels)


def permuted_logits(rng: np.random.Generator, priors: int, classes: int) -> np.ndarray:
    """Logits (priors, classes): every default box has the same logits in another class
    order, the largest on a foreground class. The exact scores of those largest are tied in
    every box; their float32 softmax is not (the float32 sum adds the classes in another order
    in each box), so a float32 ranking cut without a margin would leave some of the tie out."""
    values = rng.normal(0, 1, classes).astype(np.float32)
    logits = np.empty((priors, classes), np.float32)
    for p in range(priors):
        logits[p] = values[rng.permutation(classes)]
        top = int(np.argmax(logits[p]))
        if top == 0:
            other = int(rng.integers(1, classes))
            logits[p, [0, other]] = logits[p, [other, 0]]
    return logits


def first_in_final_order(scores: np.ndarray, count: int) -> np.ndarray:
    """(G, P) bool: the first `count` entries of scores (G, P) in the final order (score
    descending, then default box, then class), computed plainly."""
    groups, priors = scores.shape
    group, prior = np.divmod(np.arange(scores.size), priors)
    first = np.lexsort((group, prior, -scores.ravel()))[:count]
    mask = np.zeros(scores.size, bool)
    mask[first] = True
    return mask.reshape(groups, priors)


@pytest.mark.parametrize("count", [50, 100, 200])
def test_float32_screen_keeps_the_whole_first_prefix_of_the_order(count, monkeypatch):
    # Issue 22 item 12 at 0.001: the exact softmax is taken only of the boxes that hold the
    # first `count` entries of the order by a float32 ranking, with a margin. Exact ties whose
    # float32 scores differ by a few steps straddle that ranking's cut: all of them must stay.
    rng = np.random.default_rng(count)
    logits = np.ascontiguousarray(permuted_logits(rng, 400, 31).T)
    scores = softmax(logits, axis=0)[1:]
    needed = first_in_final_order(scores, count)

    def kept_by_screen():
        columns, entries, certified_from = screen(logits, 0.001, count)
        assert entries is not None  # the cut by rank was made, not only the threshold's
        kept = np.zeros(scores.shape, bool)
        kept[:, columns] = entries
        return kept, certified_from

    kept, certified_from = kept_by_screen()
    assert not (needed & ~kept).any()
    assert certified_from <= np.sort(scores.ravel())[-count]  # a lower bound of the count-th best
    assert kept.sum() < scores.size // 4  # and it does leave most entries out
    # Without the margin the float32 ranking drops part of the tie: the test can tell.
    monkeypatch.setattr(fast, "screen_margin", lambda classes: 0.0)
    monkeypatch.setattr(fast, "_PRODUCT_SLACK", 1.0)
    kept, _ = kept_by_screen()
    assert (needed & ~kept).any()


@pytest.mark.parametrize("max_detections", [20, 50, 150])
@pytest.mark.parametrize("iou", [1.0, 0.3])
def test_fast_path_through_the_screen_equals_the_reference_on_tied_float32_scores(max_detections, iou):
    rng = np.random.default_rng(max_detections)
    priors = random_priors(rng, 400)
    locs, _ = random_outputs(rng, 1, 400, 31)
    logits = permuted_logits(rng, 400, 31)[None]
    cfg = PostprocessConfig(score_threshold=0.001, iou_threshold=iou, top_k=20, max_detections=max_detections)
    det = postprocess(locs, logits, priors, [(100, 100)], cfg)[0]
    ref = reference_postprocess_image(locs[0], logits[0], priors, (100, 100), cfg)
    assert len(ref.labels) == max_detections
    np.testing.assert_array_equal(det.labels, ref.labels)
    np.testing.assert_array_equal(det.scores, ref.scores)
    np.testing.assert_array_equal(det.confs, ref.confs)
    np.testing.assert_allclose(det.boxes, ref.boxes, atol=1e-4)


def test_exact_scores_of_constant_boxes_equal_the_softmax_bit_for_bit():
    # Default boxes whose classes all share one logit (an untrained head) get the scores of a
    # column of zeros, computed once; non-finite constants and mixed boxes go the plain way.
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2, (91, 64)).astype(np.float32)
    logits[:, :40] = rng.normal(0, 50, 40).astype(np.float32)  # constant boxes, each its own value
    logits[:, 40] = 0.0
    logits[:, 41] = np.inf
    logits[:, 42] = -np.inf
    logits[:, 43] = np.nan
    logits[:, 44] = np.float32(3e38)
    logits[5, 45] = np.nan
    constant = constant_boxes(logits)
    assert constant.sum() == 42 and not constant[41:44].any()
    with np.errstate(invalid="ignore"):
        expected = softmax(logits, axis=0)
    assert (constant.sum() >= fast.CONSTANT_BOXES_WORTHWHILE * constant.size)  # the path under test
    np.testing.assert_array_equal(fast._exact_scores(logits, constant), expected)


# One float32 step below 1/91: every uniform box passes, where the bound is an equality.
BELOW_UNIFORM = float(np.nextafter(np.float32(1 / 91), np.float32(0)))


@pytest.mark.parametrize("threshold", [0.05, 0.3, BELOW_UNIFORM])
def test_mean_bound_keeps_every_box_that_can_pass(threshold):
    # The bound by the mean logit (no exponentials) at deployment thresholds: boxes it leaves
    # out must be boxes where no class passes exactly. Near-uniform boxes are where it is
    # tight (every logit equal: equality), so some boxes are uniform up to a few float32
    # steps with scores around the threshold; others have -inf, huge or spread logits.
    rng = np.random.default_rng(int(threshold * 1000))
    logits = rng.normal(0, 1.0, (91, 3000)).astype(np.float32)
    logits[:, :1000] = (rng.normal(0, 1e-6, (91, 1000)) + rng.normal(0, 3, 1000)).astype(np.float32)
    logits[:, :300] = rng.normal(0, 3, 300).astype(np.float32)  # uniform: every score 1/91
    logits[:, :100] = 0.0  # uniform at 0: no rounding to allow for, only the margin
    t = float(np.float32(threshold))
    others = np.log(np.exp(logits[np.arange(91) != 1, 1000:2000].astype(np.float64)).sum(axis=0))
    target = np.log(t / (1 - t)) + others  # class 1 of these boxes scores within a few float32 steps of t
    logits[1, 1000:2000] = (target + rng.integers(-3, 4, 1000) * np.abs(target) * 1.2e-7).astype(np.float32)
    logits[5, 2000:2100] = -np.inf
    logits[:, 2100:2200] *= np.float32(1e30)
    with np.errstate(all="ignore"):
        passing = (softmax(logits, axis=0)[1:] > np.float32(threshold)).any(axis=0)
    kept = fast.mean_bound_boxes(logits, threshold)
    assert passing.sum() > 50 and not (passing & ~kept).any()
    assert passing[:300].all() == (threshold == BELOW_UNIFORM)
    assert kept[2000:2100].all()  # a -inf logit: outside the bound's terms
    if threshold >= 0.05:
        assert kept.sum() < 0.8 * kept.size  # and it does leave boxes out


@pytest.mark.parametrize("shape", [(3234, 91), (1, 21), (7, 1), (0, 5)])
def test_classes_first_is_the_transpose(shape):
    logits = np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)
    if logits.size:
        logits.flat[:3] = [np.nan, np.inf, -np.inf][: logits.size]
    got = fast.classes_first(logits)
    assert got.shape == shape[::-1] and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, logits.T)


def test_float32_exponentials_of_the_screen_are_within_four_float32_steps():
    # The screen's margin assumes its float32 exp (OpenCV's where there is OpenCV) within 4
    # float32 steps of the exact exponential above underflow, and exact at the special values.
    x = np.linspace(-87, 0, 1_000_001, dtype=np.float32)
    logits = np.stack([np.zeros_like(x), x])  # differences from the max: x
    exp, total = fast._float32_exponentials(logits)
    exact = np.exp(x.astype(np.float64))
    steps = np.abs(exp[1].astype(np.float64) - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert steps.max() <= 4
    special = np.array([[0, 0, 0, 0], [np.nan, -np.inf, -200, 0]], np.float32)
    exp, _ = fast._float32_exponentials(special)
    np.testing.assert_array_equal(exp[1], [np.nan, 0, 0, 1])


def test_box_best_from_the_threshold_equals_the_masked_maximum():
    rng = np.random.default_rng(11)
    logits = rng.normal(0, 2, (21, 500)).astype(np.float32)
    logits[:, :50] = 0.0  # tied boxes
    logits[3, 60] = np.nan  # a NaN box: NaN throughout
    with np.errstate(invalid="ignore"):
        scores = softmax(logits, axis=0)[1:]
    for threshold in (0.001, 1 / 21, 0.3, 0.9):
        candidates = scores > np.float32(threshold)
        np.testing.assert_array_equal(fast.box_best_candidates(candidates, scores, threshold),
                                      fast.box_best_candidates(candidates, scores))


@pytest.mark.parametrize("case", ["max tied in every other box", "max tied, some not candidates", "spread",
                                  "ties at a lower score"])
@pytest.mark.parametrize("count", [7, 90, 181, 400])
def test_first_prefix_is_the_first_entries_of_the_order(case, count):
    # _best_in_final_order against the plain sort, where the count-th best is the best score
    # itself (tied boxes with gaps between them, candidates masked) and where it is not.
    rng = np.random.default_rng(count)
    scores = rng.uniform(0.01, 0.5, (9, 300)).astype(np.float32)
    candidates = np.ones(scores.shape, bool)
    if case.startswith("max tied"):
        scores[:, ::2] = np.float32(0.6)
        scores[:, 1::2] = rng.uniform(0.01, 0.5, (9, 150)).astype(np.float32)
        if case.endswith("not candidates"):
            candidates = rng.random(scores.shape) > 0.3
    elif case == "ties at a lower score":
        scores[:, 100:] = np.float32(0.005)
        scores[:, :100] = rng.uniform(0.01, 0.011, (9, 100)).astype(np.float32)
        scores[:, :100:3] = np.float32(0.0105)
    masked = np.where(candidates, scores, -np.inf)
    expected = first_in_final_order(masked, count) & candidates
    prior, group, _, complete = ranked_candidates(candidates, scores, 1000, count)
    if not complete:
        got = np.zeros(scores.shape, bool)
        got[group, prior] = True
        np.testing.assert_array_equal(got, expected)
    index = fast._best_in_final_order(candidates, scores, count)
    got = np.zeros(scores.size, bool)
    got[index] = True
    np.testing.assert_array_equal(got.reshape(scores.shape), expected)
    assert np.all(np.diff(index) > 0)
