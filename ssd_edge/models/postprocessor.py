"""`PostProcessor`: the seed's decode + NMS in torch, for evaluation on any device.

Same semantics and ordering as the NumPy reference `ssd_edge.runtime.postprocess.fast`
(softmax, score threshold, top_k per class, decode, per-class greedy NMS or, with
`agnostic_nms`, greedy NMS across the classes, best max_detections; score descending, ties
by lower default-box index then lower class).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssd_edge.models.box_ops import decode, pairwise_iou
from ssd_edge.runtime.detections import PostprocessConfig


def _stable_order(*keys: Tensor) -> Tensor:
    """Indices sorting by keys[0], then keys[1], ... ascending (like np.lexsort(reversed(keys)))."""
    order = torch.arange(keys[0].numel(), device=keys[0].device)
    for key in reversed(keys):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


def greedy_nms_mask(boxes_xyxy: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS for G groups at once: boxes (G, K, 4) best first, valid (G, K) -> keep (G, K).

    Iterates "keep j unless a kept, better box overlaps it" to its fixed point, which is
    exactly the greedy result (see the NumPy twin).
    """
    suppresses = torch.triu(pairwise_iou(boxes_xyxy, boxes_xyxy) > iou_threshold, diagonal=1)
    suppresses = (suppresses & valid[:, :, None]).to(boxes_xyxy.dtype)
    keep = valid.clone()
    while True:
        suppressed = torch.bmm(keep[:, None, :].to(suppresses.dtype), suppresses)[:, 0] > 0
        new_keep = valid & ~suppressed
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep


def _greedy_keep(overlaps: Tensor) -> Tensor:
    """Greedy NMS on an (N, N) bool overlap matrix of candidates best first -> keep (N,)."""
    suppresses = torch.triu(overlaps, diagonal=1).to(torch.float32)
    keep = torch.ones(overlaps.shape[0], dtype=torch.bool, device=overlaps.device)
    while True:
        new_keep = ~((keep[None].to(suppresses.dtype) @ suppresses)[0] > 0)
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep


def agnostic_nms(boxes_xyxy: Tensor, box_of: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS across classes: candidates 0..N-1 best first, candidate e being box
    box_of[e] of boxes (U, 4) -> keep (N,). A box overlapping itself (any non-empty one)
    keeps at most its first candidate, so only first candidates take part (see the NumPy
    twin, `sparse_nms.agnostic_keep`)."""
    count = box_of.numel()
    position = torch.arange(count, device=box_of.device)
    first = torch.full((boxes_xyxy.shape[0],), count, dtype=torch.int64, device=box_of.device)
    first = first.scatter_reduce(0, box_of, position, reduce="amin")
    overlaps = pairwise_iou(boxes_xyxy, boxes_xyxy) > iou_threshold
    taking_part = ~overlaps.diagonal()[box_of] | (first[box_of] == position)
    members = torch.nonzero(taking_part).flatten()
    keep = torch.zeros(count, dtype=torch.bool, device=box_of.device)
    if members.numel():
        member_boxes = box_of[members]
        keep[members] = _greedy_keep(overlaps[member_boxes][:, member_boxes])
    return keep


class PostProcessor(nn.Module):
    """Turns raw SSD outputs into detections.

    Inputs: locs (B, P, 4) raw regressions, logits (B, P, C) raw class logits, priors (P, 4)
    normalised cxcywh and each image's (H, W). Outputs four lists, one entry per image:
    result_boxes (N, 4) decoded xyxy pixels, result_labels (N,), result_scores (N,),
    result_confs (N, C) softmax vectors.
    """

    def __init__(self, config: PostprocessConfig | None = None) -> None:
        super().__init__()
        self.config = config or PostprocessConfig()

    def forward(self, locs: Tensor, logits: Tensor, priors_cxcywh: Tensor, image_sizes: list[tuple[int, int]]):
        probs = torch.softmax(logits.float(), dim=-1)
        locs = locs.float()
        result_boxes, result_labels, result_scores, result_confs = [], [], [], []
        for b in range(locs.shape[0]):
            boxes, labels, scores, kept_confs = self.single(locs[b], probs[b], priors_cxcywh, image_sizes[b])
            result_boxes.append(boxes)
            result_labels.append(labels)
            result_scores.append(scores)
            result_confs.append(kept_confs)
        return result_boxes, result_labels, result_scores, result_confs

    def single(self, locs: Tensor, probs: Tensor, priors_cxcywh: Tensor, image_hw: tuple[int, int]):
        cfg = self.config
        device = locs.device
        prior_idx, class_idx = torch.nonzero(probs[:, 1:] > cfg.score_threshold, as_tuple=True)
        if prior_idx.numel() == 0:
            return (
                torch.zeros((0, 4), device=device),
                torch.zeros((0,), dtype=torch.int64, device=device),
                torch.zeros((0,), device=device),
                torch.zeros((0, probs.shape[1]), device=device),
            )
        order = _stable_order(class_idx, -probs[prior_idx, class_idx + 1], prior_idx)
        prior_idx, class_idx = prior_idx[order], class_idx[order]
        rank = torch.arange(order.numel(), device=device) - torch.searchsorted(class_idx, class_idx, side="left")
        within = rank < cfg.top_k
        prior_idx, class_idx, rank = prior_idx[within], class_idx[within], rank[within]
        if cfg.agnostic_nms:
            return self._agnostic(locs, probs, priors_cxcywh, image_hw, prior_idx, class_idx + 1)
        classes, group = torch.unique(class_idx, return_inverse=True)
        padded = torch.zeros((classes.numel(), int(rank.max()) + 1), dtype=torch.int64, device=device)
        valid = torch.zeros(padded.shape, dtype=torch.bool, device=device)
        padded[group, rank] = prior_idx
        valid[group, rank] = True

        boxes = decode(locs[padded], priors_cxcywh[padded], cfg.variances).clamp(0.0, 1.0)
        keep = greedy_nms_mask(boxes, valid, cfg.iou_threshold)
        group, rank = torch.nonzero(keep, as_tuple=True)
        kept_priors = padded[group, rank]
        labels = classes[group] + 1
        scores = probs[kept_priors, labels]
        best = _stable_order(-scores, kept_priors, labels)[: cfg.max_detections]
        height, width = image_hw
        scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=device)
        return boxes[group[best], rank[best]] * scale, labels[best], scores[best], probs[kept_priors[best]]

    def _agnostic(self, locs: Tensor, probs: Tensor, priors_cxcywh: Tensor, image_hw: tuple[int, int],
                  prior_idx: Tensor, labels: Tensor):
        """Greedy NMS across the classes of the candidates (prior_idx, labels), in the final order."""
        cfg = self.config
        order = _stable_order(-probs[prior_idx, labels], prior_idx, labels)
        prior_idx, labels = prior_idx[order], labels[order]
        box_priors, box_of = torch.unique(prior_idx, return_inverse=True)
        boxes = decode(locs[box_priors], priors_cxcywh[box_priors], cfg.variances).clamp(0.0, 1.0)
        kept = torch.nonzero(agnostic_nms(boxes, box_of, cfg.iou_threshold)).flatten()[: cfg.max_detections]
        height, width = image_hw
        scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=locs.device)
        kept_priors, kept_labels = prior_idx[kept], labels[kept]
        return (boxes[box_of[kept]] * scale, kept_labels, probs[kept_priors, kept_labels], probs[kept_priors])
