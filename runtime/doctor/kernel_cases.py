"""Raw network outputs on which the CUDA decode + NMS must agree with the NumPy reference,
and the comparison rule itself (`kernel_difference`); ssd-doctor runs them on the user's
GPU, the tests on the CPU emulations of the kernel.

Random outputs at batch 1 and 8 under varied thresholds, and the edge cases: no box
above the threshold, every box above it with NMS off, identical boxes and scores (ties
broken by default-box index, then class), an SSDLite-sized model (3234 default boxes,
91 classes), and the edges of the kernel's prefilter (scores at the threshold, logits at
`possible_box_bound`, ties, huge and non-finite logits), and NMS across the classes
(`agnostic_nms`). The test suite runs the same cases on the CPU emulation of the kernel.
Shapes: priors (P, 4) cxcywh in [0, 1], locs (B, P, 4), confs (B, P, C) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.postprocess.fast import (
    possible_box_bound,
    possible_boxes,
    postprocess,
    postprocess_image,
    softmax,
)

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


def random_outputs(rng: np.random.Generator, batch: int, priors: int, classes: int, logit_scale: float = 3.0):
    """locs (B, P, 4) ~ N(0, 1) and confs (B, P, C) logits ~ N(0, logit_scale), float32."""
    locs = rng.normal(0, 1, (batch, priors, 4)).astype(np.float32)
    confs = rng.normal(0, logit_scale, (batch, priors, classes)).astype(np.float32)
    return locs, confs


def random_image_sizes(rng: np.random.Generator, batch: int) -> list[tuple[int, int]]:
    """(H, W) per image, 60 to 1299 pixels each."""
    return [(int(h), int(w)) for h, w in rng.integers(60, 1300, (batch, 2))]


def ssdlite_case(batch: int, seed: int = 0) -> KernelCase:
    """SSDLite320-COCO-sized outputs (3234 boxes, 91 classes) with the default config."""
    rng = np.random.default_rng(seed)
    locs, confs = random_outputs(rng, batch, SSDLITE_PRIORS, COCO_CLASSES, 2.0)
    return KernelCase(f"ssdlite-b{batch}", random_priors(rng, SSDLITE_PRIORS), locs, confs,
                      random_image_sizes(rng, batch), PostprocessConfig())


def kernel_cases(seed: int = 0) -> list[KernelCase]:
    """The random cases at batch 1 and 8, the edge cases, the SSDLite-sized ones, and the
    cases at the edges of the kernel's prefilter (two images each), and the class-agnostic ones."""
    rng = np.random.default_rng(seed)
    configs = (PostprocessConfig(),
               PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=300, max_detections=300),
               PostprocessConfig(score_threshold=0.2, iou_threshold=0.3, top_k=40, max_detections=30))
    cases = []
    for batch in (1, 8):
        for i, config in enumerate(configs):
            locs, confs = random_outputs(rng, batch, 300, 6 + 5 * i, float(rng.uniform(0.5, 4)))
            cases.append(KernelCase(f"random-b{batch}-{i}", random_priors(rng, 300), locs, confs,
                                    random_image_sizes(rng, batch), config, reference=batch == 1 and i != 1))
    for batch in (1, 8):
        priors = random_priors(rng, 200)
        locs, _ = random_outputs(rng, batch, 200, 4, 1.0)
        background = np.zeros((batch, 200, 4), np.float32)
        background[..., 0] = 12.0
        cases.append(KernelCase(f"no-box-above-threshold-b{batch}", priors, locs, background,
                                random_image_sizes(rng, batch), PostprocessConfig(score_threshold=0.05),
                                reference=True))
        locs, confs = random_outputs(rng, batch, 200, 3, 1.0)
        cases.append(KernelCase(f"every-box-above-threshold-b{batch}", priors, locs, confs,
                                random_image_sizes(rng, batch),
                                PostprocessConfig(score_threshold=0.0, iou_threshold=1.0, top_k=200,
                                                  max_detections=350)))
        same = np.repeat(random_priors(rng, 10), 20, axis=0)  # 20 identical copies of 10 boxes
        cases.append(KernelCase(f"identical-boxes-and-scores-b{batch}", same, np.zeros((batch, 200, 4), np.float32),
                                np.zeros((batch, 200, 5), np.float32), random_image_sizes(rng, batch),
                                PostprocessConfig(score_threshold=0.1, iou_threshold=0.5, top_k=50,
                                                  max_detections=40), reference=True))
        cases.append(ssdlite_case(batch, seed=batch))
    return cases + prefilter_cases() + agnostic_cases()


def agnostic_cases(seed: int = 14) -> list[KernelCase]:
    """Class-agnostic NMS (the kernel's ssd_class_top_k, ssd_agnostic_nms, ssd_pack): random
    outputs at batch 1 (small enough for the reference) and 8, with more default boxes taking
    part than one chunk of ssd_agnostic_nms holds at the lower threshold; and 20 identical
    copies of 10 boxes whose classes all tie (the lower default box, then the lower class, wins)."""
    rng = np.random.default_rng(seed)
    configs = (PostprocessConfig(score_threshold=0.05, iou_threshold=0.45, top_k=100, max_detections=100,
                                 agnostic_nms=True),
               PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=100, max_detections=300,
                                 agnostic_nms=True))
    cases = []
    for batch, config in zip((1, 8), configs):
        locs, confs = random_outputs(rng, batch, 300, 8, 2.0)
        cases.append(KernelCase(f"agnostic-random-b{batch}", random_priors(rng, 300), locs, confs,
                                random_image_sizes(rng, batch), config, reference=batch == 1))
    same = np.repeat(random_priors(rng, 10), 20, axis=0)
    cases.append(KernelCase("agnostic-identical-boxes-and-scores-b2", same, np.zeros((2, 200, 4), np.float32),
                            np.zeros((2, 200, 5), np.float32), random_image_sizes(rng, 2),
                            PostprocessConfig(score_threshold=0.1, iou_threshold=0.5, top_k=50, max_detections=40,
                                              agnostic_nms=True), reference=True))
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


def threshold_boundary_case(threshold: float) -> KernelCase:
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
    return KernelCase(f"threshold-boundary-{threshold}", random_priors(rng, 200), locs, confs,
                      random_image_sizes(rng, 2),
                      PostprocessConfig(score_threshold=threshold, iou_threshold=1.0, top_k=200, max_detections=150))


def huge_logits_case() -> KernelCase:
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
    return KernelCase("huge-logits", random_priors(rng, 200), locs, confs, random_image_sizes(rng, 2),
                PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, top_k=100, max_detections=100))


def prefilter_cases() -> list[KernelCase]:
    """Cases at the edges of the rule that decides which default boxes get the
    softmax (`possible_box_bound`): scores at the threshold and logits at the bound, all
    scores tied, every box possible by the bound (not by a threshold <= 0), a
    background-only model, huge and non-finite logits, more classes than the kernel keeps
    exponentials of in registers (C > 128)."""
    rng = np.random.default_rng(13)
    cases = [threshold_boundary_case(0.3), threshold_boundary_case(0.001)]
    priors = random_priors(rng, 200)
    locs = rng.normal(0, 1, (2, 200, 4)).astype(np.float32)
    cases.append(KernelCase("all-tied-21-classes", priors, locs, np.zeros((2, 200, 21), np.float32),
                            random_image_sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.001, iou_threshold=0.5, top_k=60, max_detections=100)))
    _, confs = random_outputs(rng, 2, 200, 4, logit_scale=1.0)
    cases.append(KernelCase("every-box-possible-by-the-bound", priors, locs, confs, random_image_sizes(rng, 2),
                      PostprocessConfig(score_threshold=1e-6, iou_threshold=0.6, top_k=200, max_detections=300)))
    for threshold in (0.01, 0.0):
        _, confs = random_outputs(rng, 2, 200, 1)
        cases.append(KernelCase(f"background-only-t{threshold}", priors, locs, confs, random_image_sizes(rng, 2),
                          PostprocessConfig(score_threshold=threshold)))
    cases.append(huge_logits_case())
    locs, confs = random_outputs(rng, 2, 100, 150, logit_scale=2.0)  # classes past the kernel's kept exponentials
    confs[:, :, 0] -= 3.0
    cases.append(KernelCase("150-classes", priors[:100], locs, confs, random_image_sizes(rng, 2),
                      PostprocessConfig(score_threshold=0.02, iou_threshold=0.5, top_k=50, max_detections=100)))
    return cases


def first_difference(got: list[Detections], expected: list[Detections]) -> str | None:
    """Where two batches of detections differ, or None when they agree: labels exactly,
    scores and softmax vectors to float32 rounding (rtol 1e-6), boxes within 1e-4 px; NaN
    equals NaN (a NaN regression decodes to a NaN box on both paths)."""
    if len(got) != len(expected):
        return f"{len(got)} images, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        if g.labels.tolist() != e.labels.tolist():
            return f"image {i}: {len(g.labels)} detections with labels {g.labels[:8].tolist()}..., " \
                   f"expected {len(e.labels)} with {e.labels[:8].tolist()}..."
        for what, a, b, rtol, atol in (("scores", g.scores, e.scores, 1e-6, 0.0),
                                       ("boxes", g.boxes, e.boxes, 0.0, 1e-4),
                                       ("softmax vectors", g.confs, e.confs, 1e-6, 1e-30)):
            if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
                worst = float(np.nanmax(np.abs(a.astype(np.float64) - b))) if a.shape == b.shape else float("nan")
                return f"image {i}: {what} differ (largest difference {worst:.3g}, shapes {a.shape} vs {b.shape})"
    return None


# ---------------------------------------------------------------- the float32 kernel's rule
# The kernel's softmax runs in float32 (CUDA's expf, a fixed-order sum, IEEE division), so
# its scores are not the float64 reference's to the bit; everything after the softmax is
# exact. `kernel_difference` holds a kernel run to that, in three parts:
#   1. its scores: within rtol 1e-6 / atol 1e-30 of the float64 softmax, on exactly the
#      default boxes that `possible_boxes` keeps;
#   2. its detections: NumPy's own threshold, top-k, decode, NMS and merge run on the
#      kernel's scores give them exactly (labels, order, scores, boxes, softmax vectors);
#   3. end to end against the float64 NumPy path, tie-aware: with tau = 1e-6 s, a detection
#      clearly above the threshold and the top-k / max-detections cuts (by more than tau) is
#      in both, each one found in both has its score and softmax vector within 1e-6 and the
#      very same box, and the order differs only inside near-tie clusters (|ds| <= 2 tau).

PROBABILITY_RTOL, PROBABILITY_ATOL = 1e-6, 1e-30
TIE_RTOL = 1e-6


def float64_softmax(confs: np.ndarray) -> np.ndarray:
    """(B, C, P) float64 softmax of logits (B, P, C): the float32 differences l_c - max that
    the kernel and the NumPy path exponentiate, then exp, sum and division in float64,
    not rounded."""
    logits = np.asarray(confs, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, -3e38 - 3e38: as on the GPU
        d = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(d, dtype=np.float64)
        probs = e / e.sum(axis=-1, keepdims=True)
    return np.ascontiguousarray(probs.transpose(0, 2, 1))


def prefilter_difference(case: KernelCase, possible: np.ndarray) -> str | None:
    """The kernel's possible default boxes (B, P) against `possible_boxes`."""
    for b, (image, mine) in enumerate(zip(case.confs, possible)):
        with np.errstate(over="ignore", invalid="ignore"):
            logits = np.ascontiguousarray(np.asarray(image, np.float32).T)
            expected = possible_boxes(logits, case.config.score_threshold)
        found = np.flatnonzero(mine)
        if found.tolist() != expected.tolist():
            extra, missing = np.setdiff1d(found, expected), np.setdiff1d(expected, found)
            return (f"image {b}: the kernel took the softmax of {found.size} default boxes, possible_boxes keeps "
                    f"{expected.size} (extra {extra[:5].tolist()}, missing {missing[:5].tolist()})")
    return None


def probability_difference(case: KernelCase, probs: np.ndarray, possible: np.ndarray) -> str | None:
    """The kernel's scores (B, C, P) on its possible default boxes against the float64
    softmax: within rtol 1e-6 / atol 1e-30, NaN where the reference is NaN."""
    reference = float64_softmax(case.confs)
    for b in range(len(probs)):
        columns = np.flatnonzero(possible[b])
        got, expected = probs[b][:, columns].astype(np.float64), reference[b][:, columns]
        close = np.isclose(got, expected, rtol=PROBABILITY_RTOL, atol=PROBABILITY_ATOL, equal_nan=True)
        if not close.all():
            c, j = np.argwhere(~close)[0]
            with np.errstate(invalid="ignore", divide="ignore"):
                relative = np.nanmax(np.abs(got - expected)[~close] / np.abs(expected[~close]))
            return (f"image {b}: {int((~close).sum())} scores off the float64 softmax by more than rtol "
                    f"{PROBABILITY_RTOL:g} (largest relative {relative:.3g}; class {c}, default box {columns[j]}: "
                    f"{got[c, j]!r} vs {expected[c, j]!r})")
    return None


def numpy_on_kernel_scores(case: KernelCase, probs: np.ndarray, possible: np.ndarray) -> list[Detections]:
    """NumPy's threshold, top-k, decode, NMS and merge (runtime.postprocess.fast) run on the
    kernel's scores of its possible default boxes."""
    found = []
    priors = np.asarray(case.priors, np.float32)
    for b in range(len(probs)):
        boxes = np.flatnonzero(possible[b])
        scores = np.ascontiguousarray(probs[b][:, boxes])
        found.append(postprocess_image(np.asarray(case.locs[b], np.float32)[boxes], scores, priors[boxes],
                                       case.image_sizes[b], case.config))
    return found


def exact_difference(got: list[Detections], expected: list[Detections]) -> str | None:
    """Where two batches of detections differ at all (NaN equals NaN), or None."""
    if len(got) != len(expected):
        return f"{len(got)} images, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        for what, a, b in (("labels", g.labels, e.labels), ("scores", g.scores, e.scores),
                           ("boxes", g.boxes, e.boxes), ("softmax vectors", g.confs, e.confs)):
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                if a.shape != b.shape:
                    return f"image {i}: {what} shaped {a.shape}, expected {b.shape}"
                at = np.argwhere(~((a == b) | (np.isnan(a) & np.isnan(b))))[0]
                return f"image {i}: {what} differ first at {tuple(at.tolist())}: {a[tuple(at)]!r} vs {b[tuple(at)]!r}"
    return None


def _box_key(label: int, box: np.ndarray) -> tuple:
    canonical = np.where(np.isnan(box), np.float32(np.nan), box).astype(np.float32)
    return int(label), canonical.tobytes()


def tie_aware_difference(got: list[Detections], expected: list[Detections], config: PostprocessConfig,
                         reference_scores: np.ndarray | None = None) -> str | None:
    """End to end against the float64 NumPy path (`expected`), tie-aware (rule 3 above).
    A detection is the same in both when its label and box are (the boxes are exact);
    one found in one list only must be borderline: within tau of the threshold, within 2 tau
    of the other list's max-detections cut (when that list is full), of its class's top-k
    cut (the top_k-th best score in `reference_scores` (B, C, P), when given), or of another
    detection of its class, of any class with agnostic_nms (greedy NMS keeps one of a near-tied
    overlapping pair)."""
    if len(got) != len(expected):
        return f"{len(got)} images, expected {len(expected)}"
    threshold = float(np.float32(config.score_threshold))
    for i, (g, e) in enumerate(zip(got, expected)):
        lists = {"kernel": g, "reference": e}
        keyed: dict[tuple, dict[str, list[int]]] = {}
        for side, d in lists.items():
            for j in range(len(d.labels)):
                keyed.setdefault(_box_key(d.labels[j], d.boxes[j]), {"kernel": [], "reference": []})[side].append(j)
        pairs, lonely = [], []
        for key, sides in keyed.items():
            mine = sorted(sides["kernel"], key=lambda j: -float(g.scores[j]))
            theirs = sorted(sides["reference"], key=lambda j: -float(e.scores[j]))
            pairs += list(zip(mine, theirs))
            lonely += [("kernel", j) for j in mine[len(theirs):]] + [("reference", j) for j in theirs[len(mine):]]
        for a, b in pairs:
            sa, sb = float(g.scores[a]), float(e.scores[b])
            if not abs(sa - sb) <= TIE_RTOL * abs(sb):
                return f"image {i}: detection {b} (label {e.labels[b]}) scores {sa!r} on the kernel, {sb!r} in float64"
            if not np.allclose(g.confs[a], e.confs[b], rtol=PROBABILITY_RTOL, atol=PROBABILITY_ATOL, equal_nan=True):
                return f"image {i}: detection {b} (label {e.labels[b]}): softmax vectors differ by more than 1e-6"
        for side, j in lonely:
            d, other = lists[side], lists["reference" if side == "kernel" else "kernel"]
            s, label = float(d.scores[j]), int(d.labels[j])
            tau = TIE_RTOL * abs(s)
            borderline = s <= threshold + tau
            if len(other.scores) >= config.max_detections and len(other.scores):
                borderline |= s <= float(other.scores.min()) + 2 * tau
            if reference_scores is not None:
                column = reference_scores[i, label]
                candidates = np.sort(column[column > np.float32(threshold)])[::-1]
                if len(candidates) > config.top_k:
                    borderline |= s <= float(candidates[config.top_k - 1]) + 2 * tau
            for d2 in lists.values():
                rival = np.ones(len(d2.labels), bool) if config.agnostic_nms else d2.labels == label
                same = rival & (np.abs(d2.scores.astype(np.float64) - s) <= 2 * tau)
                borderline |= int(same.sum()) > (1 if d2 is d else 0)
            if not borderline:
                return (f"image {i}: a detection (label {label}, score {s!r}) only in the {side} output, clearly "
                        f"above the threshold and the cuts and not near-tied with another of its class")
        if pairs:
            order = np.array(sorted(pairs), dtype=np.intp)  # by position in the kernel's output
            theirs = order[:, 1]
            scores = e.scores[theirs].astype(np.float64)
            inverted = np.triu(theirs[:, None] > theirs[None, :], k=1)
            tau2 = 2 * TIE_RTOL * np.maximum(scores[:, None], scores[None, :])
            apart = np.abs(scores[:, None] - scores[None, :]) > tau2
            bad = np.argwhere(inverted & apart)
            if bad.size:
                a, b = bad[0]
                return (f"image {i}: the kernel orders scores {scores[a]!r} (label {e.labels[theirs[a]]}) and "
                        f"{scores[b]!r} (label {e.labels[theirs[b]]}) the other way round; they are not near-tied")
    return None


def kernel_difference(case: KernelCase, got: list[Detections], probs: np.ndarray, possible: np.ndarray) -> str | None:
    """Where a kernel run on `case` breaks the float32 kernel's rule (see above), or None.
    got: its detections; probs (B, C, P) float32 and possible (B, P) bool: its scores and
    the default boxes it took the softmax of (read back from its workspace)."""
    for what, difference in (("prefilter", lambda: prefilter_difference(case, possible)),
                             ("scores", lambda: probability_difference(case, probs, possible)),
                             ("NumPy on the kernel's scores", lambda: exact_difference(
                                 got, numpy_on_kernel_scores(case, probs, possible))),
                             ("float64 NumPy, tie-aware", lambda: _end_to_end(case, got))):
        found = difference()
        if found is not None:
            return f"{what}: {found}"
    return None


def _end_to_end(case: KernelCase, got: list[Detections]) -> str | None:
    with np.errstate(over="ignore", invalid="ignore"):  # huge logits: a float32 difference overflowing is meant
        expected = postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config)
        scores = softmax(np.asarray(case.confs, np.float32)).transpose(0, 2, 1)
    return tie_aware_difference(got, expected, case.config, scores)
