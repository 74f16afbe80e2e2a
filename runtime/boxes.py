"""Box maths in NumPy: coding against default boxes, IoU. The one NumPy decode (training
targets are checked with it, postprocessing uses it) and the reference for the torch twins
in `ssd_edge.models.box_ops` and for the CUDA kernel.

Formats are in the names: `_xyxy` is (x1, y1, x2, y2), `_cxcywh` is (cx, cy, w, h).
"""

from __future__ import annotations

import math

import numpy as np

# The largest log-scale a decoded width or height may take, as torchvision's BoxCoder.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def xyxy_to_cxcywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = np.moveaxis(boxes_xyxy, -1, 0)
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes_cxcywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.moveaxis(boxes_cxcywh, -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def encode(boxes_xyxy: np.ndarray, priors_cxcywh: np.ndarray, variances=(0.1, 0.2)) -> np.ndarray:
    """Regression targets: boxes (..., 4) xyxy against priors (..., 4) cxcywh -> locs (..., 4)."""
    boxes = xyxy_to_cxcywh(boxes_xyxy)
    centre = (boxes[..., :2] - priors_cxcywh[..., :2]) / (variances[0] * priors_cxcywh[..., 2:])
    size = np.log(boxes[..., 2:] / priors_cxcywh[..., 2:]) / variances[1]
    return np.concatenate([centre, size], axis=-1).astype(np.float32)


def exp_float32(x: np.ndarray) -> np.ndarray:
    """exp computed in float64 and rounded once to the input's precision (float32 for
    float32 input), so the result does not depend on the platform's float32 `exp`."""
    return np.exp(x, dtype=np.float64).astype(np.promote_types(x.dtype, np.float32), copy=False)


def decode(locs: np.ndarray, priors_cxcywh: np.ndarray, variances=(0.1, 0.2)) -> np.ndarray:
    """Boxes from regressions: locs (..., 4) against priors (..., 4) cxcywh -> boxes (..., 4) xyxy.

    Operation for operation what the CUDA kernel (`decode_nms.cu`) does, so that on float32
    input the two agree to the bit: float32 arithmetic with the variances as float32, the
    log-sizes clamped at log(1000/16) as torchvision does (a wild regression gives a large
    box rather than inf), the exponential by `exp_float32`.
    """
    v_centre, v_size = np.float32(variances[0]), np.float32(variances[1])
    centre = priors_cxcywh[..., :2] + locs[..., :2] * v_centre * priors_cxcywh[..., 2:]
    size = priors_cxcywh[..., 2:] * exp_float32(np.minimum(locs[..., 2:] * v_size, np.float32(BBOX_XFORM_CLIP)))
    half = size / np.float32(2)
    return np.concatenate([centre - half, centre + half], axis=-1)


def box_area(boxes_xyxy: np.ndarray) -> np.ndarray:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def pairwise_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """IoU of every box in a (..., N, 4) with every box in b (..., M, 4) -> (..., N, M).

    Pairs with zero union get IoU 0.
    """
    a = a_xyxy[..., :, None, :]
    b = b_xyxy[..., None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    union = box_area(a_xyxy)[..., :, None] + box_area(b_xyxy)[..., None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
