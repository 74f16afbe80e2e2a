"""Raw network outputs on which the CUDA decode + NMS must equal the NumPy reference, and
the comparison itself; ssd-doctor runs them on the user's GPU.

Random outputs at batch 1 and 8 under varied thresholds, and the edge cases: no box
above the threshold, every box above it with NMS off, identical boxes and scores (ties
broken by default-box index, then class), and an SSDLite-sized model (3234 default boxes,
91 classes). Shapes: priors (P, 4) cxcywh in [0, 1], locs (B, P, 4), confs (B, P, C) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd_edge.runtime.detections import Detections, PostprocessConfig

SSDLITE_PRIORS, COCO_CLASSES = 3234, 91


@dataclass(frozen=True)
class KernelCase:
    name: str
    priors: np.ndarray  # (P, 4) cxcywh
    locs: np.ndarray  # (B, P, 4)
    confs: np.ndarray  # (B, P, C) logits
    image_sizes: list  # (H, W) per image
    config: PostprocessConfig
    reference: bool = False  # small enough for the one-box-at-a-time reference (seconds)


def random_priors(rng: np.random.Generator, count: int) -> np.ndarray:
    centres = rng.uniform(0.05, 0.95, (count, 2))
    sizes = rng.uniform(0.05, 0.5, (count, 2))
    return np.concatenate([centres, sizes], axis=1).astype(np.float32)


def _outputs(rng: np.random.Generator, batch: int, priors: int, classes: int, scale: float):
    locs = rng.normal(0, 1, (batch, priors, 4)).astype(np.float32)
    confs = rng.normal(0, scale, (batch, priors, classes)).astype(np.float32)
    return locs, confs


def _sizes(rng: np.random.Generator, batch: int) -> list[tuple[int, int]]:
    return [(int(h), int(w)) for h, w in rng.integers(60, 1300, (batch, 2))]


def ssdlite_case(batch: int, seed: int = 0) -> KernelCase:
    """SSDLite320-COCO-sized outputs (3234 boxes, 91 classes) with the default config."""
    rng = np.random.default_rng(seed)
    locs, confs = _outputs(rng, batch, SSDLITE_PRIORS, COCO_CLASSES, 2.0)
    return KernelCase(f"ssdlite-b{batch}", random_priors(rng, SSDLITE_PRIORS), locs, confs, _sizes(rng, batch),
                      PostprocessConfig())


def kernel_cases(seed: int = 0) -> list[KernelCase]:
    """The random cases at batch 1 and 8, the edge cases, and the SSDLite-sized ones."""
    rng = np.random.default_rng(seed)
    configs = (PostprocessConfig(),
               PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=300, max_detections=300),
               PostprocessConfig(score_threshold=0.2, iou_threshold=0.3, top_k=40, max_detections=30))
    cases = []
    for batch in (1, 8):
        for i, config in enumerate(configs):
            locs, confs = _outputs(rng, batch, 300, 6 + 5 * i, float(rng.uniform(0.5, 4)))
            cases.append(KernelCase(f"random-b{batch}-{i}", random_priors(rng, 300), locs, confs,
                                    _sizes(rng, batch), config, reference=batch == 1 and i != 1))
    for batch in (1, 8):
        priors = random_priors(rng, 200)
        locs, _ = _outputs(rng, batch, 200, 4, 1.0)
        background = np.zeros((batch, 200, 4), np.float32)
        background[..., 0] = 12.0
        cases.append(KernelCase(f"no-box-above-threshold-b{batch}", priors, locs, background, _sizes(rng, batch),
                                PostprocessConfig(score_threshold=0.05), reference=True))
        locs, confs = _outputs(rng, batch, 200, 3, 1.0)
        cases.append(KernelCase(f"every-box-above-threshold-b{batch}", priors, locs, confs, _sizes(rng, batch),
                                PostprocessConfig(score_threshold=0.0, iou_threshold=1.0, top_k=200,
                                                  max_detections=350)))
        same = np.repeat(random_priors(rng, 10), 20, axis=0)  # 20 identical copies of 10 boxes
        cases.append(KernelCase(f"identical-boxes-and-scores-b{batch}", same, np.zeros((batch, 200, 4), np.float32),
                                np.zeros((batch, 200, 5), np.float32), _sizes(rng, batch),
                                PostprocessConfig(score_threshold=0.1, iou_threshold=0.5, top_k=50,
                                                  max_detections=40), reference=True))
        cases.append(ssdlite_case(batch, seed=batch))
    return cases


def first_difference(got: list[Detections], expected: list[Detections]) -> str | None:
    """Where two batches of detections differ, or None when they agree: labels exactly,
    scores and softmax vectors to float32 rounding (rtol 1e-6), boxes within 1e-4 px."""
    if len(got) != len(expected):
        return f"{len(got)} images, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        if g.labels.tolist() != e.labels.tolist():
            return f"image {i}: {len(g.labels)} detections with labels {g.labels[:8].tolist()}..., " \
                   f"expected {len(e.labels)} with {e.labels[:8].tolist()}..."
        for what, a, b, rtol, atol in (("scores", g.scores, e.scores, 1e-6, 0.0),
                                       ("boxes", g.boxes, e.boxes, 0.0, 1e-4),
                                       ("softmax vectors", g.confs, e.confs, 1e-6, 1e-30)):
            if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
                worst = float(np.abs(a.astype(np.float64) - b).max()) if a.shape == b.shape else float("nan")
                return f"image {i}: {what} differ (largest difference {worst:.3g}, shapes {a.shape} vs {b.shape})"
    return None
