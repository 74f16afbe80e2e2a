"""Decode + NMS in NumPy, fast: the CPU path of every Detector.

It computes the rule that `reference.py` states plainly (softmax; per class c >= 1 the
boxes over score_threshold, the top_k best; decode and clip; greedy NMS per class at
iou_threshold, or across the classes with `agnostic_nms`; merge, keep max_detections;
order by score descending, ties by lower default-box index, then lower class), and is
tested against it. It gets its speed from leaving out default boxes no class of which
can pass the threshold before the softmax (a log bound, then a float32 softmax with a
margin, which also leaves out the candidates that cannot be among the first prefix of the
order: the exact float64 softmax is taken of the few boxes that hold it, see `screen`),
scores of boxes whose classes all tie computed once, prefixes of the final order cut at
exactly the count asked for (scores tied at the cut by default box, then class: all-tied
scores cost no more than spread ones), per-class top_k before any global sort, and sparse
NMS (`sparse_nms.py`).

Thresholds are compared in float32. Exponentials (softmax and box sizes) are computed in
float64 and rounded once to float32, so the result does not depend on the platform's
float32 `exp` and the CUDA kernel (`cuda/decode_nms.cu`), doing the same, agrees with this
path to the bit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

try:  # OpenCV (the runtime's image reading and preprocessing) transposes faster than NumPy
    import cv2
except ImportError:  # pragma: no cover - NumPy does the same, slower
    cv2 = None

from ssd_edge.runtime.boxes import decode, pairwise_iou
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.postprocess.sparse_nms import agnostic_keep, class_edges, greedy_keep, overlapping_pairs

# Candidates taken in the first prefix, per detection to keep. On SSDLite320 outputs at
# 0.001, NMS keeps 75-85% of a prefix of spread scores and ~40% of all-tied ones: 2x settles
# spread scores in one pass (8x made NMS sort out four times what it needs), all-tied in two
# (cheap since constant boxes are); 2x was 1.3-2x faster than 8x per image over the four
# score distributions of benchmarks/postprocess_cliff.py and bench_postprocess's outputs.
FIRST_PREFIX = 2
PREFIX_WORTHWHILE = 4
# Up to this many candidates, NMS takes every pair at once (one IoU matrix, a same-class
# mask): far fewer NumPy calls than the sweep, and each call after the network runs on cold
# caches.
PAIRWISE_UP_TO = 64
# Margin of `possible_boxes` in log space: generous (the error it covers is about 1e-16).
_LOG_MARGIN = 1e-3
# From this many possible default boxes on, `screen` leaves out, through a float32 softmax,
# the default boxes the exact (float64) one would give no candidate (at a deployment
# threshold an untrained or uncertain head leaves most boxes possible by the bound of
# `possible_boxes`) and, when there are many candidates (threshold 0.001), the candidates
# that cannot be among the first prefix of the order: float64 exponentials cost 4-5x float32
# ones, and only the boxes holding that prefix need them.
SCREEN_FROM_BOXES = 64
# Below this threshold the screen is not used: its error bound is relative, and float32
# exponentials lose their relative accuracy near underflow (1e-38).
_SCREEN_FLOOR = 1e-30
# From this share of default boxes with every class's logit equal on (an untrained head's
# "all tied" scores), their scores are computed once (`_exact_scores`), and the float32
# screen, which could not leave them out, is not used.
CONSTANT_BOXES_WORTHWHILE = 0.25
SCREEN_UP_TO_CONSTANT = 0.75
# The screen compares exp(d) with score x sum, a few float32 steps more loosely than
# exp(d) / sum >= score would (the margin covers the float32 softmax's error besides).
_PRODUCT_SLACK = 1.0 - 1e-6
# From this threshold on, `mean_bound_boxes` leaves out boxes before the float32 screen
# (no exponentials): below it the bound leaves out too few to pay for itself.
MEAN_BOUND_FROM = 0.05


def screen_margin(classes: int) -> float:
    """Relative margin of the float32 screen for `classes` classes: the float32 softmax is
    within (classes + 10) float32 steps (2^-24) of the exact score relatively (exp within
    4 steps, NumPy's and OpenCV's float32 exp measure within 2.6 above underflow; a sum of
    `classes` positive terms within classes - 1, the division and the exact score's own
    rounding 1 each); the margin is 64x that, and at least 1e-3."""
    return max(1e-3, 64.0 * (classes + 10) * 2.0**-24)


def _softmax_classes_first(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 (classes first). The max is subtracted in the input precision;
    exponentials and the normalisation run in float64 and are rounded once (to float32 for
    float32 input). The denominator adds the classes one after another, in order, as the
    CUDA kernel does: NumPy's own reductions add pairwise in some layouts (a single default
    box, for one), which can move a score by one float32 step."""
    # inf - inf: NaN scores, which never pass a threshold. A difference beyond float32's range
    # (-3e38 - 3e38) rounds to -inf, whose exponential is 0: the score's correct limit, as in
    # the CUDA kernel. Both are expected here, not worth a warning.
    with np.errstate(invalid="ignore", over="ignore"):
        exp = np.exp(logits - logits.max(axis=0), dtype=np.float64)
    total = exp[0].copy()
    for row in exp[1:]:
        total += row
    exp /= total
    return exp.astype(np.promote_types(logits.dtype, np.float32), copy=False)


def _exact_scores(logits: np.ndarray, constant: np.ndarray | None = None) -> np.ndarray:
    """`_softmax_classes_first` of float32 logits (C, N), bit for bit, faster when many
    default boxes have every class's logit equal (an untrained head; `constant`, (N,)
    bool, marks them): d = l - max is then exactly 0 for every class (finite l), so their
    scores are those of a column of zeros, computed once; the float64 exponentials are
    taken of the other boxes only."""
    if constant is None or np.count_nonzero(constant) < CONSTANT_BOXES_WORTHWHILE * constant.size:
        return _softmax_classes_first(logits)
    probs = np.empty(logits.shape, np.float32)
    probs[:] = _softmax_classes_first(np.zeros((logits.shape[0], 1), np.float32))
    varying = np.flatnonzero(~constant)
    if varying.size:
        probs[:, varying] = _softmax_classes_first(np.take(logits, varying, axis=1))
    return probs


def constant_boxes(logits: np.ndarray, statistics=None) -> np.ndarray:
    """(N,) bool: the default boxes of logits (C, N) whose classes all have the same finite
    logit (every score exactly that of a column of zeros). statistics: the logits'
    `_box_statistics`, when already computed."""
    top, low, _ = _box_statistics(logits) if statistics is None else statistics
    return (top == low) & np.isfinite(top)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax over `axis` (see `_softmax_classes_first`), same layout as `logits`.

    The work runs with `axis` moved to the front: NumPy works over a short last axis (SSD's
    few classes) several times slower than over the first.
    """
    logits = np.asarray(logits)
    classes_first = np.ascontiguousarray(np.moveaxis(logits, axis, 0))
    return np.ascontiguousarray(np.moveaxis(_softmax_classes_first(classes_first), 0, axis))


def greedy_nms_mask(boxes_xyxy: np.ndarray, valid: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS for G independent groups at once, dense: the plain statement of the rule
    that `sparse_nms` computes faster (kept as its cross-check).

    boxes_xyxy (G, K, 4) sorted best first within each group; valid (G, K) marks real
    entries. Returns keep (G, K). A box is kept when no kept, better box of its group
    overlaps it by more than `iou_threshold`; the fixed point of that rule, reached by
    iterating it from "keep all", is exactly the greedy result (the rule decides box j
    from boxes before j only, so it has one fixed point).
    """
    suppresses = np.triu(pairwise_iou(boxes_xyxy, boxes_xyxy) > np.float32(iou_threshold), k=1)
    suppresses = (suppresses & valid[:, :, None]).astype(np.float32)
    keep = valid.copy()
    while True:
        suppressed = np.matmul(keep[:, None, :].astype(np.float32), suppresses)[:, 0] > 0
        new_keep = valid & ~suppressed
        if np.array_equal(new_keep, keep):
            return keep
        keep = new_keep


def top_k_per_class(candidates: np.ndarray, scores: np.ndarray, top_k: int) -> np.ndarray:
    """Of candidates (G, P) bool over scores (G, P), one row per class, at most the `top_k`
    best of each row in the final order (score descending, then lower default box)."""
    crowded = np.flatnonzero(np.count_nonzero(candidates, axis=1) > top_k)
    if crowded.size == 0:
        return candidates
    # The top_k-th best of a crowded row is a candidate (over the threshold); NaN never is.
    rows = np.where(candidates[crowded], scores[crowded], -np.inf)
    cut = rows.shape[1] - top_k
    kth_best = np.partition(rows, cut, axis=1)[:, cut : cut + 1]
    chosen = rows > kth_best
    # Entries tied with the top_k-th best fill the rest, lower default boxes first.
    tied = rows == kth_best
    room = top_k - np.count_nonzero(chosen, axis=1, keepdims=True)
    chosen |= tied & (np.cumsum(tied, axis=1) <= room)
    candidates = candidates.copy()
    candidates[crowded] = chosen
    return candidates


def final_order(prior: np.ndarray, group: np.ndarray, values: np.ndarray, groups: int) -> np.ndarray:
    """The permutation sorting entries by score descending, then default box, then group."""
    by_box = np.argsort(prior * groups + group)
    return by_box[np.argsort(-values[by_box], kind="stable")]


def ranked_candidates(candidates: np.ndarray, scores: np.ndarray, top_k: int, count: int | None,
                      box_best: np.ndarray | None = None):
    """The candidates (G, P) bool of scores (G, P) in the final order (score descending,
    then default box, then group), at most `top_k` of each group. With `count`, only the
    first `count` entries of that order (every entry when there are at most
    PREFIX_WORTHWHILE * count) are returned: scores tied at the cut are cut by default box,
    then group, so that tied scores (an untrained head gives every class 1/C) cost no more
    than spread ones.

    box_best: optional (P,), each default box's best candidate score (-inf for none), as
    `box_best_candidates` gives it.

    Returns prior (N,), group (N,), score (N,) and whether that is every candidate.
    """
    groups, priors = scores.shape
    complete = _takes_every_entry(candidates, top_k, count)
    if complete:  # top_k per class first: at most G * top_k entries to sort
        index = np.flatnonzero(top_k_per_class(candidates, scores, top_k))  # group-major
    else:
        index = _best_in_final_order(candidates, scores, count, box_best)
    values = scores.ravel()[index]
    group, prior = np.divmod(index, priors)
    order = final_order(prior, group, values, groups)
    prior, group, values = prior[order], group[order], values[order]
    if not complete:  # a prefix holds every better entry of its groups: ranks within it are final
        within = rank_within_groups(group) < top_k
        prior, group, values = prior[within], group[within], values[within]
    return prior, group, values, complete


def _takes_every_entry(candidates: np.ndarray, top_k: int, count: int | None) -> bool:
    """Whether `ranked_candidates` takes every entry of candidates (G, P) bool at once,
    rather than a prefix of `count`."""
    # A prefix of a quarter of the entries or more is not worth it: when it keeps too few, the
    # complete second pass costs more than the prefix saved. Then take every entry at once.
    # top_k per class bounds the entries too (G x top_k): 3 classes x 300 against a first prefix
    # of 600 gain nothing from a prefix, which a trained head's dense overlaps make fail anyway.
    return count is None or min(np.count_nonzero(candidates), len(candidates) * top_k) <= PREFIX_WORTHWHILE * count


def box_best_candidates(candidates: np.ndarray, scores: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """(P,): each default box's best candidate score of candidates (G, P) over scores
    (G, P), -inf where it has none. With `threshold`, candidates must be exactly the scores
    over it (a column's best score is then its best candidate when it passes: faster)."""
    if threshold is None or not len(scores):
        return np.max(scores, axis=0, where=candidates, initial=-np.inf)
    top = scores.max(axis=0)  # NaN columns are NaN throughout (softmax), and never pass
    return np.where(top > np.float32(threshold), top, -np.inf)


def _best_in_final_order(candidates: np.ndarray, scores: np.ndarray, count: int,
                         box_best: np.ndarray | None = None) -> np.ndarray:
    """The first `count` of the candidates (G, P) bool of scores (G, P) in the final order,
    as group-major indices into (G, P), ascending: every candidate scoring over the
    count-th best, and of those tied with it the ones of lowest (default box, group).
    Works on the (G, P) masks: no array of every candidate's index is made."""
    # Each default box holds its own best candidate: the count-th best of those bounds the
    # count-th best entry from below, and only the entries from there on are ranked. When it
    # is the best score itself (tied scores), it is the count-th best entry.
    if box_best is None:
        box_best = box_best_candidates(candidates, scores)
    floor = np.partition(box_best, box_best.size - count)[box_best.size - count] if box_best.size >= count else -np.inf
    if floor == box_best.max():
        # The best score is the count-th best (tied scores): nothing scores over it, and the
        # first `count` default boxes holding it hold the entries taken (each holds one or more):
        # only the columns up to the last of those are looked at.
        end = int(np.flatnonzero(box_best == floor)[:count][-1]) + 1
        tied = (scores[:, :end] == floor) & candidates[:, :end]
        chosen_index, room = np.zeros(0, np.intp), count
    else:
        values = scores[candidates & (scores >= floor)]
        kth_best = np.partition(values, values.size - count)[values.size - count]
        chosen = (scores > kth_best) & candidates
        tied = (scores == kth_best) & candidates
        chosen_index = np.flatnonzero(chosen)
        room = count - chosen_index.size
    per_box = tied.view(np.uint8).sum(axis=0, dtype=np.intp)  # np.count_nonzero(axis=0), faster
    through = np.cumsum(per_box)
    if through[-1] <= room:
        group, column = divmod(np.flatnonzero(tied), tied.shape[1])
    else:
        # The tied entries of the lowest default boxes, of the last one the lowest groups: found
        # in the columns up to that box only (all of them are tied when every score is).
        last = int(np.searchsorted(through, room))  # the column where the room runs out
        group, column = np.nonzero(tied[:, : last + 1])  # group-major
        at_last = column == last
        taken = ~at_last | (np.cumsum(at_last) <= room - (int(through[last - 1]) if last else 0))
        group, column = group[taken], column[taken]
    index = np.concatenate([chosen_index, group * scores.shape[1] + column])
    index.sort()
    return index


def rank_within_groups(group: np.ndarray) -> np.ndarray:
    """For a sequence of group ids, how many earlier entries share each entry's group."""
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    rank = np.empty(group.size, np.intp)
    rank[order] = np.arange(group.size) - np.searchsorted(sorted_group, sorted_group, side="left")
    return rank


def _greedy_prefix(locs, scores, candidates, priors_cxcywh, config: PostprocessConfig, count: int | None,
                   box_best: np.ndarray | None = None):
    """Greedy NMS on the best `count` candidates (G, P) bool of scores (G, P), in the
    final order.

    A candidate's fate depends only on better candidates of its class (of any class with
    `agnostic_nms`), all of which lie in
    any prefix of the order that contains it, so decisions made on a prefix are final.
    Returns (prior, label, score, box) of the kept candidates in the final order, and
    whether the prefix was every candidate.
    """
    prior, group, score, complete = ranked_candidates(candidates, scores, config.top_k, count, box_best)
    if config.agnostic_nms:  # across the classes: NMS on each box's best candidate, in effect
        box_priors, box_of = np.unique(prior, return_inverse=True)
        boxes = np.clip(decode(locs[box_priors], priors_cxcywh[box_priors], config.variances), 0.0, 1.0)
        kept = np.flatnonzero(agnostic_keep(box_of.reshape(-1), boxes, config.iou_threshold))
        return prior[kept], group[kept] + 1, score[kept], boxes[box_of.reshape(-1)[kept]], complete
    if prior.size <= PAIRWISE_UP_TO:
        # A handful (a deployment threshold): one box per candidate, so an overlapping pair of
        # the same class is an edge as it stands; fewer NumPy calls than the mapping below.
        boxes = np.clip(decode(locs[prior], priors_cxcywh[prior], config.variances), 0.0, 1.0)
        pair_a, pair_b = overlapping_pairs(boxes, config.iou_threshold)
        same_class = group[pair_a] == group[pair_b]
        pair_a, pair_b = pair_a[same_class], pair_b[same_class]
        better, worse = np.minimum(pair_a, pair_b), np.maximum(pair_a, pair_b)  # the better comes first
        box_of = np.arange(prior.size)
    else:
        # Decode each default box once, whatever the number of classes it is a candidate of.
        box_priors, box_of = np.unique(prior, return_inverse=True)
        boxes = np.clip(decode(locs[box_priors], priors_cxcywh[box_priors], config.variances), 0.0, 1.0)
        pair_a, pair_b = overlapping_pairs(boxes, config.iou_threshold)
        better, worse = class_edges(group, box_of, box_priors.size, pair_a, pair_b)
    kept = np.flatnonzero(greedy_keep(group.size, better, worse))
    return prior[kept], group[kept] + 1, score[kept], boxes[box_of[kept]], complete


def postprocess_image(
    locs: np.ndarray,
    probs: np.ndarray,
    priors_cxcywh: np.ndarray,
    image_hw: tuple[int, int],
    config: PostprocessConfig,
    class_names: tuple[str, ...] = (),
    candidates: np.ndarray | None = None,
) -> Detections:
    """Postprocess one image: locs (P, 4) float32 raw regressions, probs (C, P) float32
    softmax scores (classes first, contiguous), priors (P, 4) normalised cxcywh, image_hw
    the original (H, W); candidates (C - 1, P) bool, when given, replaces the scores over
    the threshold (`_postprocess_one` passes a screened subset of them).

    Only max_detections survive, and every candidate's fate is settled by better ones, so
    the candidates are taken best first in growing prefixes until enough are kept.
    """
    scores = probs[1:]
    count = FIRST_PREFIX * config.max_detections
    threshold = None  # of given candidates: not the scores over the threshold
    if candidates is None:
        candidates = scores > np.float32(config.score_threshold)
        threshold = config.score_threshold
    box_best = None
    # Each default box's best candidate, which every prefix starts from, is found once for all
    # passes, and only when the first pass takes a prefix (no pass comes after a complete one).
    if not _takes_every_entry(candidates, config.top_k, count):
        box_best = box_best_candidates(candidates, scores, threshold)
    while True:
        prior, labels, kept_scores, boxes, complete = _greedy_prefix(
            locs, scores, candidates, priors_cxcywh, config, count, box_best
        )
        if complete or len(prior) >= config.max_detections:
            break
        # At least 2x, more when few were kept (agnostic NMS over tied scores keeps one class of
        # a box): about twice what the rate so far needs, so that one more pass usually does.
        count *= max(2, -(-2 * config.max_detections // max(len(prior), 1)))
    best = slice(0, config.max_detections)
    height, width = image_hw
    scale = np.array([width, height, width, height], np.float32)
    return Detections(
        boxes=(boxes[best] * scale).astype(np.float32),
        labels=labels[best].astype(np.int64),
        scores=kept_scores[best].astype(np.float32),
        confs=probs[:, prior[best]].T.astype(np.float32),
        class_names=tuple(class_names),
    )


def postprocess(
    locs: np.ndarray,
    logits: np.ndarray,
    priors_cxcywh: np.ndarray,
    image_sizes: Sequence[tuple[int, int]],
    config: PostprocessConfig,
    class_names: Sequence[str] = (),
) -> list[Detections]:
    """Decode + NMS for a batch: locs (B, P, 4) raw regressions and logits (B, P, C) raw class
    logits (the network outputs), priors (P, 4) normalised cxcywh, image_sizes the (H, W) of
    each original image; class_names (optional) is carried into each Detections."""
    if locs.ndim != 3 or locs.shape[-1] != 4:
        raise ValueError(f"locs must be (B, P, 4), got {locs.shape}")
    if logits.shape[:2] != locs.shape[:2] or locs.shape[1] != priors_cxcywh.shape[0]:
        raise ValueError(
            f"locs {locs.shape}, logits {logits.shape} and priors {priors_cxcywh.shape} disagree on B or P"
        )
    if len(image_sizes) != locs.shape[0]:
        raise ValueError(f"{len(image_sizes)} image sizes for a batch of {locs.shape[0]}")
    # Classes before default boxes (B, C, P): per-class work then runs over contiguous rows.
    logits = logits.astype(np.float32, copy=False)
    locs = locs.astype(np.float32, copy=False)
    priors_cxcywh = priors_cxcywh.astype(np.float32, copy=False)
    names = tuple(class_names)
    return [
        _postprocess_one(locs[b], classes_first(logits[b]), priors_cxcywh, image_sizes[b], config, names)
        for b in range(len(locs))
    ]


def _opencv_takes(array: np.ndarray) -> bool:
    """Whether OpenCV is here and takes `array` as a matrix: 2-D, not empty, each side under 2^31."""
    return cv2 is not None and array.ndim == 2 and array.size > 0 and max(array.shape) < 2**31


def classes_first(logits: np.ndarray) -> np.ndarray:
    """logits (P, C) transposed to (C, P), contiguous: with OpenCV's transpose where there is
    OpenCV (cache-blocked: a third of NumPy's copy time on an SSDLite output fresh from the
    network, 0.25 against 0.77 ms), else NumPy's."""
    logits = np.ascontiguousarray(logits)
    if _opencv_takes(logits):
        return cv2.transpose(logits)
    return np.ascontiguousarray(logits.T)


def _postprocess_one(locs, logits, priors_cxcywh, image_hw, config: PostprocessConfig, names):
    """One image: locs (P, 4), logits (C, P) contiguous, both float32."""
    # Default boxes no class of which can pass the threshold change nothing: leave them out
    # (`possible_boxes`, and from MEAN_BOUND_FROM on `mean_bound_boxes`, on shared statistics).
    threshold = config.score_threshold
    statistics = _box_statistics(logits)
    constant = constant_boxes(logits, statistics)
    boxes = possible_boxes(logits, threshold, statistics)
    if boxes.size and threshold >= MEAN_BOUND_FROM:
        boxes = boxes[mean_bound_boxes(logits, threshold, statistics)[boxes]]
    if (boxes.size >= SCREEN_FROM_BOXES and threshold >= _SCREEN_FLOOR
            and np.count_nonzero(constant) < SCREEN_UP_TO_CONSTANT * constant.size):
        columns, entries, certified_from = screen(
            logits if boxes.size == len(priors_cxcywh) else np.take(logits, boxes, axis=1),
            threshold, FIRST_PREFIX * config.max_detections)
        found = _detections_of(locs, logits, priors_cxcywh, image_hw, config, names, boxes[columns], constant,
                               entries)
        if certified_from is None or (
                len(found.scores) >= config.max_detections and float(found.scores[-1]) >= certified_from):
            return found
        # The screened candidates did not settle max_detections: every candidate, then.
    return _detections_of(locs, logits, priors_cxcywh, image_hw, config, names, boxes, constant, None)


def _detections_of(locs, logits, priors_cxcywh, image_hw, config: PostprocessConfig, names, boxes, constant,
                   entries):
    """The detections of the default boxes `boxes` (indices into P) of one image (as
    `_postprocess_one` takes it); constant (P,) bool, `constant_boxes`; entries, when not
    None, a (C - 1, boxes.size) mask that the candidates are limited to (`screen`)."""
    image_logits, image_locs, image_priors = logits, locs, priors_cxcywh
    if entries is not None or boxes.size < len(priors_cxcywh) // 2:  # leaving out fewer does not pay for the copies
        image_logits = np.take(logits, boxes, axis=1)  # contiguous rows, unlike [:, boxes]
        image_locs, image_priors, constant = locs[boxes], priors_cxcywh[boxes], constant[boxes]
    probs = _exact_scores(image_logits, constant)
    candidates = None
    if entries is not None:
        candidates = (probs[1:] > np.float32(config.score_threshold)) & entries
    return postprocess_image(image_locs, probs, image_priors, image_hw, config, names, candidates)


def possible_box_bound(score_threshold: float) -> np.float32 | None:
    """The float32 bound of `possible_boxes`: a default box may pass the threshold only if
    max_{c >= 1} fl32(l_c - max_c' l_c') exceeds it; None when every box may (threshold
    <= 0 after rounding to float32). The CUDA kernel applies the same bound, so both paths
    take the exact softmax of the same boxes; see `possible_boxes` for why it is safe."""
    threshold = float(np.float32(score_threshold))
    if threshold <= 0.0:
        return None
    return np.float32(np.log(threshold) - _LOG_MARGIN)


def possible_boxes(logits: np.ndarray, score_threshold: float, statistics=None) -> np.ndarray:
    """Default boxes (indices into P) of which some class c >= 1 may score over the
    threshold, from logits (C, P): every box that can, and few that cannot. statistics:
    the logits' `_box_statistics`, when already computed.

    A softmax score is exp(l_c - max) / sum with sum >= 1, so it exceeds t only if
    l_c - max > log t. l_c - max is the very float32 difference the softmax exponentiates,
    and rounding to float32 is monotonic, so only the float64 error of the exponential and
    the division (about 1e-16) needs a margin: _LOG_MARGIN is a deliberately generous one.
    NaN or infinite logits give NaN scores, which never pass.
    """
    bound = possible_box_bound(score_threshold)
    if logits.shape[0] < 2:  # background only: nothing to detect
        return np.zeros(0, np.intp)
    if bound is None:
        return np.arange(logits.shape[1])
    # max_c fl(l_c - max), as rounding is monotonic; NaN and -inf (overflow) never pass.
    _, _, best_foreground = _box_statistics(logits) if statistics is None else statistics
    return np.flatnonzero(best_foreground > bound)


def _float32_exponentials(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp(l - max) of logits (C, N) in float32 (one fresh array, worked in place: fresh
    arrays of this size cost page faults) and their sum over the classes."""
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        exp = np.subtract(logits, logits.max(axis=0))  # the very float32 differences of the exact softmax
        if _opencv_takes(exp):
            cv2.exp(exp, exp)  # 3x NumPy's float32 exp, as accurate (both within 2.6 float32 steps)
        else:
            np.exp(exp, out=exp)
        return exp, exp.sum(axis=0)


def _box_statistics(logits: np.ndarray):
    """Over the classes of logits (C, N), per default box: the largest logit, the smallest,
    and max_{c >= 1} fl32(l_c - largest) (the softmax's own float32 differences)."""
    with np.errstate(invalid="ignore", over="ignore"):
        top = logits.max(axis=0)
        best_foreground = logits[1:].max(axis=0) - top if len(logits) > 1 else np.full_like(top, -np.inf)
        return top, logits.min(axis=0), best_foreground


def mean_bound_boxes(logits: np.ndarray, score_threshold: float, statistics=None) -> np.ndarray:
    """(N,) bool over logits (C, N): the default boxes of which some class c >= 1 may score
    over the threshold by the bound of the mean: every box that can, and (at a deployment
    threshold, for an uncertain head) few that cannot; no exponential is taken.

    The softmax's sum of exponentials is at least C exp(mean_j d_j) (the exponential is
    convex) and at least 1, so a score exp(d_c) / sum exceeds t only if
    d_c - max(0, log C + mean_j d_j) > log t. d_c is the float32 difference `possible_boxes`
    takes; mean_j d_j is taken from the logits' mean (a float32 sum), off from the float32
    differences' by less than 2^-24 (max - min) plus the float32 sum's C 2^-24 max|l| (twice
    that is allowed for), besides `_LOG_MARGIN`. Boxes with an infinite logit or sum are kept
    (a -inf logit is a 0 exponential, outside the bound's terms). statistics: the logits'
    `_box_statistics`, when already computed.
    """
    top, low, best_foreground = _box_statistics(logits) if statistics is None else statistics
    classes = logits.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        top, low = top.astype(np.float64), low.astype(np.float64)
        mean = logits.sum(axis=0).astype(np.float64) / classes  # float32 sum: allowed for in `error`
        error = (top - low) * 2.0**-24 + 2.0 * classes * 2.0**-24 * np.maximum(np.abs(top), np.abs(low))
        log_sum = np.maximum(0.0, np.log(classes) + (mean - top) - error)  # sum >= max(1, C exp(mean d))
        bound = best_foreground.astype(np.float64) - log_sum
        finite = np.isfinite(low) & np.isfinite(top) & np.isfinite(mean)
        return ~finite | (bound > np.log(float(np.float32(score_threshold))) - _LOG_MARGIN)


def screen(logits: np.ndarray, score_threshold: float, count: int | None):
    """The float32 screen of logits (C, N): (columns, entries, certified_from).

    columns: the default boxes (indices into N) to take the exact softmax of: those where
    some class c >= 1 may score over the threshold by a float32 softmax (every box that can,
    and few that cannot), narrowed, when there are entries, to the boxes holding them. The
    exact score rounds exp(d_c) / sum_j exp(d_j) (d = l - max, float32) computed in float64;
    float32's exp and sum are within `screen_margin` of it relatively, so a box none of whose
    float32 foreground exponentials reaches t * sum * (1 - margin) cannot pass. NaN
    (non-finite logits) leaves a box out, as its exact scores are NaN too.

    entries: None when every exact candidate lies in those columns (always without `count`);
    else a (C - 1, columns.size) mask of the entries that may be among the first `count`
    candidates of the final order (every one that is, and few more): the candidates outside
    it are all worse than those first `count`, so detections computed from the masked
    candidates alone are exact as far as the certified_from score (float): a result all of
    whose scores reach it is the result of every candidate (`_postprocess_one` checks that
    and falls back when it is not so).

    Why: with a the float32 score and s the exact one, |a - s| <= e * s (e = screen_margin,
    far above the error), so s > t needs a >= t (1 - e). If the count-th best a is k, at least
    `count` entries have s >= k / (1 + e) = certified_from; when that exceeds t they are all
    candidates, so the count-th best candidate scores >= certified_from, and every entry
    scoring that much has a >= certified_from * (1 - e), the mask's level. Ties at the cut
    have equal exact scores and all pass the level together.
    """
    classes = logits.shape[0]
    margin = screen_margin(classes)
    level = float(np.float32(score_threshold)) * (1.0 - margin)
    exp, total = _float32_exponentials(logits)
    foreground = exp[1:]
    best = foreground.max(axis=0)
    columns = np.flatnonzero(best >= np.float32(level) * total)
    if count is None or columns.size * (classes - 1) <= PREFIX_WORTHWHILE * count or columns.size < count:
        return columns, None, None
    # Each box holds its own best entry, so the count-th best entry scores at least the
    # count-th best of the boxes' best (floor): only the entries from there on are ranked.
    # Scores are compared as exponentials against score x sum (no division of every entry),
    # a few float32 steps (_PRODUCT_SLACK) lower, so that the set is a superset.
    best_score = best / total
    floor = max(float(np.partition(best_score, best_score.size - count)[best_score.size - count]), level)
    near = np.flatnonzero(foreground >= np.float32(floor * _PRODUCT_SLACK) * total)  # 2-D np.nonzero is slow
    values = foreground.ravel()[near] / total[near % total.size]  # the float32 scores, as the division of each
    if values.size < count:
        return columns, None, None
    values.partition(values.size - count)
    certified_from = float(values[values.size - count]) / (1.0 + margin)
    if certified_from <= float(np.float32(score_threshold)):
        return columns, None, None
    entries = foreground >= np.float32(certified_from * (1.0 - margin) * _PRODUCT_SLACK) * total
    in_use = np.flatnonzero(entries.any(axis=0))
    return in_use, entries[:, in_use], certified_from
