"""Per-class (and class-agnostic, `agnostic_keep`) greedy NMS in NumPy without K x K
matrices, for the fast postprocessing.

SSD decodes one box per default box, whatever the class, so the overlap graph "IoU >
threshold" is the same for every class. It is found once among the boxes that are
candidates of any class: boxes sorted by x1 only meet boxes that start before they end,
and IoU > t bounds how far apart two boxes' centres may be in y, so a sweep over x within
horizontal bands finds every pair that can overlap enough. Each overlapping pair then
becomes an edge in every class that has both boxes as candidates (a bitset AND; class by
class up to FEW_GROUPS classes), and greedy NMS is the fixed point of "a box is kept unless
a kept, better box of its class overlaps it", iterated over those few edges instead of
dense (G, K, K) matrices: on a trained head's 300 densely overlapping candidates per class
those cost twice the sweep (benchmarks/results/postprocess_cliff.md).

A handful of boxes (DENSE_UP_TO) is cheaper to test pair by pair in one go, so
`overlapping_pairs` does that below the sweep's break-even.

The IoU of every pair found is computed with exactly the float32 operations of
`boxes.pairwise_iou`; the search only skips pairs that cannot pass, with a safety margin
far above float32 rounding, so the result equals the dense computation.
"""

from __future__ import annotations

import numpy as np

from ssd_edge.runtime.boxes import pairwise_iou

# Slack of the search bounds (coordinates are clipped to [0, 1]): orders of magnitude
# above the float32 rounding of the exact test.
_REL_SLACK = 1e-4
_ABS_SLACK = 1e-6
_BANDS = 16  # horizontal bands of the sweep; 8-32 all do well on SSD default boxes
# For each byte value: how many bits are set, and where (ascending, little-endian).
_BITS_SET = np.array([bin(value).count("1") for value in range(256)], np.intp)
_BIT_POSITIONS = np.array(
    [[bit for bit in range(8) if value >> bit & 1] + [0] * (8 - _BITS_SET[value]) for value in range(256)], np.intp
)
# Up to this many boxes, every pair is tested at once: fewer NumPy calls than the sweep.
DENSE_UP_TO = 64
# Up to this many classes, `class_edges` looks each class up in turn: 2x faster than the
# bitsets at 3 classes, even at 5-6, slower from 8 on.
FEW_GROUPS = 4


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """concatenate([arange(c) for c in counts]) without a Python loop."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total) - np.repeat(starts, counts)


def _candidate_pairs(boxes_xyxy: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of boxes that may have IoU > threshold (a superset of them), each once, as
    (order, first, second): boxes ranked by x1 (order[rank] is the box), pairs of ranks.

    IoU > t implies an x-overlap above t * max(w_a, w_b): with boxes ranked by x1, box i
    only meets ranks r with x1_r in [x1_i, x2_i - t * w_i). It also bounds the distance of
    the y-centres by h_i * max(1 - t, (1 - t) / (2t)), so only a few bands are searched.
    """
    count = len(boxes_xyxy)
    x1, y1, x2, y2 = (boxes_xyxy[:, k].astype(np.float64) for k in range(4))
    loose = threshold * (1.0 - _REL_SLACK)
    order = np.argsort(x1, kind="stable")
    x1, y1, x2, y2 = x1[order], y1[order], x2[order], y2[order]
    rank_end = np.searchsorted(x1, x2 - loose * (x2 - x1) + _ABS_SLACK, side="left")

    centre_y = (y1 + y2) / 2
    band = np.minimum(np.maximum(np.floor(centre_y * _BANDS), 0), _BANDS - 1).astype(np.intp)  # np.clip: slower
    if loose > 0:
        reach = (y2 - y1) * max(1.0 - loose, (1.0 - loose) / (2.0 * loose)) + _ABS_SLACK
        low = np.minimum(np.maximum(np.floor((centre_y - reach) * _BANDS), 0), _BANDS - 1).astype(np.intp)
        high = np.minimum(np.maximum(np.floor((centre_y + reach) * _BANDS), 0), _BANDS - 1).astype(np.intp)
    else:  # any overlap counts: every band
        low, high = np.zeros(count, np.intp), np.full(count, _BANDS - 1, np.intp)

    # Boxes keyed by (band, rank); one range query per (box, band it may reach).
    rank_of_key = np.argsort(band, kind="stable")  # by band, then rank
    keys = band[rank_of_key] * count + rank_of_key
    bands_reached = high - low + 1
    query_rank = np.repeat(np.arange(count), bands_reached)
    query_key = (np.repeat(low, bands_reached) + _ragged_arange(bands_reached)) * count
    start = np.searchsorted(keys, query_key + query_rank + 1)
    stop = np.searchsorted(keys, query_key + rank_end[query_rank])
    hits = np.maximum(stop - start, 0)
    first = np.repeat(query_rank, hits)
    # Keys start, start + 1, ... of each query: one repeat of start less the hits before it.
    key = np.repeat(start - (np.cumsum(hits) - hits), hits)
    key += np.arange(key.size)
    return order, first, rank_of_key[key]


def overlapping_pairs(boxes_xyxy: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair (a, b), a != b, of boxes (U, 4) float32 xyxy in [0, 1] whose IoU,
    computed exactly as `boxes.pairwise_iou` does, exceeds `iou_threshold` in float32."""
    empty = np.zeros(0, np.intp)
    finite = np.isfinite(boxes_xyxy).all(axis=1)
    if not finite.all():  # NaN boxes overlap nothing
        kept = np.flatnonzero(finite)
        a, b = overlapping_pairs(boxes_xyxy[kept], iou_threshold)
        return kept[a], kept[b]
    if len(boxes_xyxy) < 2:
        return empty, empty
    if len(boxes_xyxy) <= DENSE_UP_TO:
        a, b = np.nonzero(np.triu(pairwise_iou(boxes_xyxy, boxes_xyxy) > np.float32(iou_threshold), k=1))
        return a, b
    order, a, b = _candidate_pairs(boxes_xyxy, float(iou_threshold))
    x1, y1, x2, y2 = (boxes_xyxy[order, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    overlap_w = np.maximum(np.minimum(x2[a], x2[b]) - np.maximum(x1[a], x1[b]), 0)  # np.clip(..., 0, None)
    overlap_h = np.maximum(np.minimum(y2[a], y2[b]) - np.maximum(y1[a], y1[b]), 0)
    inter = overlap_w * overlap_h
    union = areas[a] + areas[b] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    hit = np.flatnonzero(iou > np.float32(iou_threshold))
    return order[a[hit]], order[b[hit]]


def class_edges(group: np.ndarray, box_of: np.ndarray, num_boxes: int, pair_a: np.ndarray, pair_b: np.ndarray):
    """Suppression edges between candidates of the same class.

    Candidates are indexed 0..N-1 in the final order (so within a group, best first);
    candidate e is box box_of[e] (0..num_boxes-1) of class group[e]. pair_a/pair_b are the
    overlapping box pairs. Returns (better, worse) candidate indices, better < worse, same
    group.
    """
    empty = np.zeros(0, np.intp)
    if pair_a.size == 0 or group.size == 0:
        return empty, empty
    num_groups = int(group.max()) + 1
    if num_groups <= FEW_GROUPS:
        return _few_class_edges(group, box_of, num_boxes, pair_a, pair_b, num_groups)
    candidate_at = np.full((num_boxes, num_groups), -1, np.int32)
    candidate_at[box_of, group] = np.arange(group.size, dtype=np.int32)
    classes_of = np.packbits(candidate_at >= 0, axis=1, bitorder="little")  # (U, ceil(G / 8)) bitsets
    shared = classes_of[pair_a] & classes_of[pair_b]
    pair, byte = np.nonzero(shared)  # most pairs share no class, few share more than one
    # The set bits of each shared byte, through tables (np.unpackbits is far slower here).
    values = shared[pair, byte]
    counts = _BITS_SET[values]
    hit = np.repeat(np.arange(values.size), counts)
    bit = _BIT_POSITIONS[values[hit], _ragged_arange(counts)]
    pair, cls = pair[hit], byte[hit] * 8 + bit
    first, second = candidate_at[pair_a[pair], cls], candidate_at[pair_b[pair], cls]
    return np.minimum(first, second).astype(np.intp), np.maximum(first, second).astype(np.intp)


def _few_class_edges(group, box_of, num_boxes: int, pair_a, pair_b, num_groups: int):
    """`class_edges` for a few groups: each group's candidates looked up at both ends of
    every pair, one group at a time."""
    candidate_at = np.full((num_groups, num_boxes), -1, np.intp)
    candidate_at[group, box_of] = np.arange(group.size)
    firsts, seconds = [], []
    for at in candidate_at:
        first, second = at[pair_a], at[pair_b]
        both = np.flatnonzero((first >= 0) & (second >= 0))
        firsts.append(first[both])
        seconds.append(second[both])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    return np.minimum(first, second), np.maximum(first, second)


def greedy_keep(num_candidates: int, better: np.ndarray, worse: np.ndarray) -> np.ndarray:
    """Greedy NMS on suppression edges: keep (N,) bool, candidate e kept unless a kept
    candidate with an edge (better -> e) exists. Iterated to its unique fixed point from
    "keep all" (each decision depends on better candidates only)."""
    keep = np.ones(num_candidates, bool)
    if better.size == 0:
        return keep
    while True:
        suppressed = np.zeros(num_candidates, bool)
        suppressed[worse[keep[better]]] = True
        new_keep = ~suppressed
        if np.array_equal(new_keep, keep):
            return keep
        keep = new_keep


def agnostic_keep(box_of: np.ndarray, boxes_xyxy: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS across classes: keep (N,) bool for candidates 0..N-1 in the final order,
    candidate e being box box_of[e] of boxes (U, 4) xyxy in [0, 1]; a candidate is kept
    unless a kept, better candidate of any class overlaps it by IoU > iou_threshold.

    A box overlaps itself (IoU 1) unless it is empty: then each of its candidates after the
    first goes whatever happens (the first is kept and suppresses it, or is suppressed by a
    kept box that overlaps it as well), so only first candidates take part, and NMS runs on
    boxes. The candidates of a box that does not overlap itself all take part.
    """
    count, num_boxes = box_of.size, len(boxes_xyxy)
    position = np.arange(count)
    first = np.full(num_boxes, count, np.intp)
    boxes_seen, first_seen = np.unique(box_of, return_index=True)  # np.minimum.at is slow
    first[boxes_seen] = first_seen
    self_iou = pairwise_iou(boxes_xyxy[:, None], boxes_xyxy[:, None])[:, 0, 0]
    taking_part = ~(self_iou > np.float32(iou_threshold))[box_of] | (first[box_of] == position)
    pair_a, pair_b = overlapping_pairs(boxes_xyxy, iou_threshold)
    # The candidates taking part, by box (CSR); every overlapping box pair joins all of them.
    members = np.flatnonzero(taking_part)
    members = members[np.argsort(box_of[members], kind="stable")]
    counts = np.bincount(box_of[members], minlength=num_boxes)
    starts = np.cumsum(counts) - counts
    per_pair = counts[pair_a] * counts[pair_b]
    pair = np.repeat(np.arange(pair_a.size), per_pair)
    k = _ragged_arange(per_pair)
    width = counts[pair_b[pair]]
    first_end = members[starts[pair_a[pair]] + k // width]
    second_end = members[starts[pair_b[pair]] + k % width]
    better, worse = np.minimum(first_end, second_end), np.maximum(first_end, second_end)
    return greedy_keep(count, better, worse) & taking_part

