"""Raw outputs and configs on which the CUDA decode + NMS must equal the NumPy reference,
shared by the CPU emulation test and the GPU tests, and the comparison itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postprocess_cases import random_outputs, random_priors
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.postprocess.fast import possible_box_bound


@dataclass
class Case:
    name: str
    priors: np.ndarray  # (P, 4) cxcywh
    locs: np.ndarray  # (B, P, 4)
    confs: np.ndarray  # (B, P, C)
    image_sizes: list
    config: PostprocessConfig


def _sizes(rng, batch):
    return [(int(h), int(w)) for h, w in rng.integers(60, 1300, (batch, 2))]


def random_batches(seed: int = 0, batches=(1, 2, 3, 5, 8, 16, 32), priors: int = 300, classes: int = 6) -> list[Case]:
    """Random outputs at many batch sizes, under varied thresholds."""
    rng = np.random.default_rng(seed)
    configs = [
        PostprocessConfig(),
        PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=300, max_detections=300),
        PostprocessConfig(score_threshold=0.2, iou_threshold=0.3, top_k=40, max_detections=30),
        PostprocessConfig(score_threshold=0.05, iou_threshold=0.7, top_k=100, max_detections=100),
    ]
    cases = []
    for i, batch in enumerate(batches):
        prior_boxes = random_priors(rng, priors)
        locs, confs = random_outputs(rng, batch, priors, classes, logit_scale=float(rng.uniform(0.5, 4)))
        cases.append(Case(f"random-b{batch}", prior_boxes, locs, confs, _sizes(rng, batch), configs[i % len(configs)]))
    return cases


def edge_cases(seed: int = 1) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    priors = random_priors(rng, 200)
    locs, _ = random_outputs(rng, 3, 200, 4)
    background = np.zeros((3, 200, 4), np.float32)
    background[..., 0] = 12.0
    cases.append(Case("no-box-above-threshold", priors, locs, background, _sizes(rng, 3),
                      PostprocessConfig(score_threshold=0.05)))

    locs, confs = random_outputs(rng, 2, 200, 3, logit_scale=1.0)
    cases.append(Case("every-box-above-threshold", priors, locs, confs, _sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.0, iou_threshold=1.0, top_k=1000, max_detections=350)))

    same = np.repeat(random_priors(rng, 10), 20, axis=0)  # 20 identical copies of 10 boxes
    cases.append(Case("identical-scores-and-boxes", same, np.zeros((2, 200, 4), np.float32),
                      np.zeros((2, 200, 5), np.float32), _sizes(rng, 2), PostprocessConfig(score_threshold=0.1)))

    locs, confs = random_outputs(rng, 4, 200, 5, logit_scale=2.0)
    cases.append(Case("max-detections-cut", priors, locs, confs, _sizes(rng, 4),
                      PostprocessConfig(score_threshold=0.01, iou_threshold=0.5, top_k=200, max_detections=7)))

    quantised = np.round(confs * 2) / 2  # many equal logits across boxes and classes
    cases.append(Case("tied-scores", priors, locs, quantised.astype(np.float32), _sizes(rng, 4),
                      PostprocessConfig(score_threshold=0.02, iou_threshold=0.45, top_k=30, max_detections=60)))

    wild = locs.copy()
    wild[0, :20, 2:] = 40.0  # sizes past the log clamp
    wild[1, :5] = np.inf
    wild[2, 5:9] = np.nan
    cases.append(Case("wild-regressions", priors, wild, confs, _sizes(rng, 4),
                      PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, top_k=50, max_detections=100)))

    chained = np.repeat(random_priors(rng, 8), 40, axis=0) * rng.uniform(0.96, 1.04, (320, 4)).astype(np.float32)
    locs, confs = random_outputs(rng, 2, 320, 3, logit_scale=1.5)
    cases.append(Case("suppression-chains", chained, locs * 0.05, confs, _sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.01, iou_threshold=0.5, top_k=320, max_detections=400)))
    return cases


def _float32_steps(centre: float, steps: int) -> np.ndarray:
    """The 2 * steps + 1 float32 values nearest `centre`, adjacent, ascending."""
    middle = np.float32(centre)
    below = [middle]
    above = []
    for _ in range(steps):
        below.append(np.nextafter(below[-1], np.float32(-np.inf)))
        above.append(np.nextafter((above or [middle])[-1], np.float32(np.inf)))
    return np.array(below[::-1] + above, np.float32)


def threshold_boundary_case(threshold: float) -> Case:
    """Three classes, background logit 0. Rows 0-120: class 1 walks adjacent float32 logits
    across logit(threshold), so its scores fall just below, exactly on (not a candidate) and
    just above the threshold; class 2 is far below. Rows 121-199: class 2 walks adjacent
    float32 logits across `possible_box_bound(threshold)`, the prefilter's own boundary.
    The second image has the same rows in another order; IoU threshold 1 suppresses nothing,
    so every candidate is a detection."""
    rng = np.random.default_rng(11)
    t = float(np.float32(threshold))
    logits = np.full((200, 3), -100.0, np.float32)
    logits[:, 0] = 0.0
    logits[:121, 1] = _float32_steps(np.log(t / (1 - t)), 60)
    logits[121:, 2] = _float32_steps(float(possible_box_bound(threshold)), 39)
    confs = np.stack([logits, logits[rng.permutation(200)]])
    locs = rng.normal(0, 1, (2, 200, 4)).astype(np.float32)
    return Case(f"threshold-boundary-{threshold}", random_priors(rng, 200), locs, confs, _sizes(rng, 2),
                PostprocessConfig(score_threshold=threshold, iou_threshold=1.0, top_k=200, max_detections=150))


def huge_logits_case() -> Case:
    """Logits at the ends of float32: a difference that overflows to -inf, equal huge logits,
    +inf and -inf (NaN scores), NaN, a large logit with a coarse float32 spacing, and rows of
    saturated softmaxes."""
    rng = np.random.default_rng(12)
    confs = rng.normal(0, 50, (2, 200, 5)).astype(np.float32)
    big = np.float32(3e38)
    confs[:, 0] = [big, -big, 0, 0, 0]  # fl(-3e38 - 3e38) = -inf: not possible
    confs[:, 1] = [1e30, 1e30, 1e30, -1e30, 0]  # ties at the top: d = 0
    confs[:, 2] = [0, np.inf, 0, 0, 0]  # inf - inf: NaN scores
    confs[:, 3] = -np.inf
    confs[:, 4] = [np.nan, 5, 0, 0, 0]
    confs[:, 5] = [-big, big, -big, -big, -big]  # score 1 for class 1, 0 for the others
    confs[:, 6] = [1e8, 1e8 - 8, 1e8 - 16, 1e8 - 64, 1e8]  # spacing 8 at 1e8
    locs = rng.normal(0, 1, (2, 200, 4)).astype(np.float32)
    return Case("huge-logits", random_priors(rng, 200), locs, confs, _sizes(rng, 2),
                PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, top_k=100, max_detections=100))


def prefilter_cases() -> list[Case]:
    """Cases at the edges of the rule that decides which default boxes get the exact
    softmax (`possible_box_bound`): scores at the threshold and logits at the bound, all
    scores tied, every box possible by the bound (not by a threshold <= 0), a
    background-only model, huge and non-finite logits, more classes than the kernel keeps
    exponentials of in registers (C > 128)."""
    rng = np.random.default_rng(13)
    cases = [threshold_boundary_case(0.3), threshold_boundary_case(0.001)]
    priors = random_priors(rng, 200)
    locs = rng.normal(0, 1, (2, 200, 4)).astype(np.float32)
    cases.append(Case("all-tied-21-classes", priors, locs, np.zeros((2, 200, 21), np.float32), _sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.001, iou_threshold=0.5, top_k=60, max_detections=100)))
    _, confs = random_outputs(rng, 2, 200, 4, logit_scale=1.0)
    cases.append(Case("every-box-possible-by-the-bound", priors, locs, confs, _sizes(rng, 2),
                      PostprocessConfig(score_threshold=1e-6, iou_threshold=0.6, top_k=200, max_detections=300)))
    for threshold in (0.01, 0.0):
        _, confs = random_outputs(rng, 2, 200, 1)
        cases.append(Case(f"background-only-t{threshold}", priors, locs, confs, _sizes(rng, 2),
                          PostprocessConfig(score_threshold=threshold)))
    cases.append(huge_logits_case())
    locs, confs = random_outputs(rng, 2, 100, 150, logit_scale=2.0)  # classes past the kernel's kept exponentials
    confs[:, :, 0] -= 3.0
    cases.append(Case("150-classes", priors[:100], locs, confs, _sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.02, iou_threshold=0.5, top_k=50, max_detections=100)))
    return cases


def model_case(locs: np.ndarray, confs: np.ndarray, priors: np.ndarray, config: PostprocessConfig) -> Case:
    rng = np.random.default_rng(2)
    return Case(f"model-b{len(locs)}", priors, locs, confs, _sizes(rng, len(locs)), config)


def assert_same_detections(got, reference, what: str) -> None:
    """Same detections in the same order: labels exactly, scores and softmax vectors to
    float32 rounding (they are computed identically, in practice bit for bit), boxes within
    1e-4 px."""
    assert len(got) == len(reference), f"{what}: {len(got)} images, reference {len(reference)}"
    for i, (g, r) in enumerate(zip(got, reference)):
        where = f"{what}, image {i}"
        assert g.labels.tolist() == r.labels.tolist(), f"{where}: labels differ"
        np.testing.assert_allclose(g.scores, r.scores, rtol=1e-6, atol=0, err_msg=where)
        np.testing.assert_allclose(g.boxes, r.boxes, rtol=0, atol=1e-4, err_msg=where)
        np.testing.assert_allclose(g.confs, r.confs, rtol=1e-6, atol=1e-30, err_msg=where)
