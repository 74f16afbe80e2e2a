"""Box maths in torch: the twins of `ssd_edge.runtime.boxes` (the NumPy reference).

Formats are in the names: `_xyxy` is (x1, y1, x2, y2), `_cxcywh` is (cx, cy, w, h).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssd_edge.runtime.boxes import BBOX_XFORM_CLIP


def decode(locs: Tensor, priors_cxcywh: Tensor, variances=(0.1, 0.2)) -> Tensor:
    """Boxes from regressions: locs (..., 4) against priors (..., 4) cxcywh -> boxes (..., 4) xyxy."""
    centre = priors_cxcywh[..., :2] + locs[..., :2] * variances[0] * priors_cxcywh[..., 2:]
    size = priors_cxcywh[..., 2:] * torch.exp(torch.clamp(locs[..., 2:] * variances[1], max=BBOX_XFORM_CLIP))
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def box_area(boxes_xyxy: Tensor) -> Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def pairwise_iou(a_xyxy: Tensor, b_xyxy: Tensor) -> Tensor:
    """IoU of every box in a (..., N, 4) with every box in b (..., M, 4) -> (..., N, M); 0 where the union is 0."""
    a = a_xyxy[..., :, None, :]
    b = b_xyxy[..., None, :, :]
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = w * h
    union = box_area(a_xyxy)[..., :, None] + box_area(b_xyxy)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))
