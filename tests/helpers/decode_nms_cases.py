"""Raw outputs and configs on which the CUDA decode + NMS must equal the NumPy reference,
shared by the CPU emulation test and the GPU tests, and the comparison itself."""

from __future__ import annotations

import numpy as np

from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.kernel_cases import KernelCase as Case
from ssd_edge.runtime.doctor.kernel_cases import first_difference, prefilter_cases, random_outputs, random_priors
from ssd_edge.runtime.doctor.kernel_cases import random_image_sizes as _sizes
from tests.helpers.postprocess_cases import AGNOSTIC_CONFIGS, AGNOSTIC_KINDS, agnostic_outputs

__all__ = ["Case", "agnostic_cases", "agnostic_edge_cases", "assert_same_detections", "edge_cases", "model_case",
           "prefilter_cases", "random_batches"]


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


# The configs of tests/test_agnostic_nms.py, and one whose candidates fill several chunks of
# ssd_agnostic_nms (chunk 256 here; up to 600 default boxes' best candidates take part) with
# many kept.
KERNEL_AGNOSTIC_CONFIGS = [
    *AGNOSTIC_CONFIGS,
    PostprocessConfig(score_threshold=0.001, iou_threshold=0.7, top_k=300, max_detections=500, agnostic_nms=True),
]


def agnostic_cases(seed: int = 11) -> list[Case]:
    """NMS across the classes: every score distribution of tests/test_agnostic_nms.py (spread
    logits; all tied, so that every class of a default box ties; every other default box
    tied; near-uniform) under each of KERNEL_AGNOSTIC_CONFIGS, two images of 150 default boxes
    and 6 classes (600 and 9 for the several-chunks config)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i, config in enumerate(KERNEL_AGNOSTIC_CONFIGS):
        priors, classes = (600, 9) if config.max_detections == 500 else (150, 6)
        for kind in AGNOSTIC_KINDS:
            locs, confs = agnostic_outputs(kind, rng, 2, priors, classes)
            cases.append(Case(f"agnostic-{kind}-{i}", random_priors(rng, priors), locs, confs, _sizes(rng, 2), config))
    return cases


def agnostic_edge_cases(seed: int = 12) -> list[Case]:
    """NMS across the classes at the edges: one default box in two classes (the better class
    stays; a tie keeps the lower), identical boxes and scores, NaN and infinite regressions and
    empty boxes (every class of such a box is kept),
    a batch of 5 with very different counts (the packing), a background-only model."""
    rng = np.random.default_rng(seed)
    cases = []
    priors = np.array([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]], np.float32)
    logits = np.array([[[0.0, 2.0, 3.0], [0.0, 1.0, 1.0]]], np.float32)  # box 1 ties classes 1 and 2
    cases.append(Case("agnostic-one-box-two-classes", priors, np.zeros((1, 2, 4), np.float32), logits, [(10, 10)],
                      PostprocessConfig(score_threshold=0.1, iou_threshold=0.5, agnostic_nms=True)))
    same = np.repeat(random_priors(rng, 10), 20, axis=0)
    cases.append(Case("agnostic-identical-scores-and-boxes", same, np.zeros((2, 200, 4), np.float32),
                      np.zeros((2, 200, 5), np.float32), _sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.1, agnostic_nms=True)))
    priors = random_priors(rng, 200)
    locs, confs = random_outputs(rng, 4, 200, 5, logit_scale=2.0)
    wild = locs.copy()
    wild[0, :20, 2:] = 40.0  # sizes past the log clamp
    wild[1, :5] = np.inf
    wild[2, 5:9] = np.nan
    wild[3, 10:30, 0] = 200.0  # centres far right: clipped to empty boxes, which overlap nothing, not even themselves
    confs = confs.copy()
    confs[3, 10:30, 1:3] = 5.0  # ... in two classes
    cases.append(Case("agnostic-wild-regressions", priors, wild, confs, _sizes(rng, 4),
                      PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, top_k=50, max_detections=100,
                                        agnostic_nms=True)))
    locs, confs = random_outputs(rng, 5, 200, 4, logit_scale=2.0)
    confs[1, :, 0] += 9.0  # few candidates
    confs[3, :, 0] += 30.0  # none
    cases.append(Case("agnostic-batch-5", priors, locs, confs, _sizes(rng, 5),
                      PostprocessConfig(score_threshold=0.02, iou_threshold=0.45, top_k=80, max_detections=60,
                                        agnostic_nms=True)))
    _, confs = random_outputs(rng, 2, 200, 1)
    cases.append(Case("agnostic-background-only", priors, locs[:2], confs, _sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.01, agnostic_nms=True)))
    return cases


def model_case(locs: np.ndarray, confs: np.ndarray, priors: np.ndarray, config: PostprocessConfig) -> Case:
    rng = np.random.default_rng(2)
    return Case(f"model-b{len(locs)}", priors, locs, confs, _sizes(rng, len(locs)), config)


def assert_same_detections(got, reference, what: str) -> None:
    """Same detections in the same order: labels exactly, scores and softmax vectors to
    float32 rounding (they are computed identically, in practice bit for bit), boxes within
    1e-4 px (the rule ssd-doctor applies on the user's GPU)."""
    difference = first_difference(got, reference)
    assert difference is None, f"{what}: {difference}"
