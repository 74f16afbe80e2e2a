"""The images of one request, from the tensors clients send (see `protocol`).

Each function raises `RequestError` naming the request's image and what is wrong; the
model function answers that request with the message in its `error` output, so one bad
request does not fail the others batched with it.
"""

from __future__ import annotations

import cv2
import numpy as np

from ssd_edge.common.errors import SSDEdgeError


class RequestError(SSDEdgeError, ValueError):
    """One request's inputs cannot be used; the message says which image and why."""


def decode_image_bytes(data: bytes, what: str) -> np.ndarray:
    """An encoded image file (JPEG, PNG, BMP, ...) as BGR uint8 (H, W, 3), decoded as
    `read_image` decodes a file (cv2.imdecode, IMREAD_COLOR)."""
    if len(data) == 0:
        raise RequestError(f"{what}: empty bytes, not an image file")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        reason = str(exc).strip().splitlines()[-1]
        raise RequestError(f"{what}: {len(data)} bytes OpenCV refused to decode ({reason})") from exc
    if image is None:
        raise RequestError(f"{what}: {len(data)} bytes that OpenCV cannot decode as an image")
    return image


def images_from_bytes(tensor: np.ndarray) -> list[np.ndarray]:
    """BYTES (B, 1) of encoded files -> B BGR images of any sizes."""
    if tensor.ndim != 2 or tensor.shape[1] != 1:
        raise RequestError(f"image_bytes: expected shape (B, 1), got {tensor.shape}")
    if tensor.shape[0] == 0:
        raise RequestError("image_bytes: empty request (0 images)")
    return [decode_image_bytes(bytes(item), f"image {i}") for i, item in enumerate(tensor[:, 0])]


def images_from_array(tensor: np.ndarray) -> list[np.ndarray]:
    """UINT8 (B, H, W, 3) BGR -> B images (views, no copy)."""
    if tensor.dtype != np.uint8 or tensor.ndim != 4 or tensor.shape[3] != 3:
        raise RequestError(f"image: expected uint8 (B, H, W, 3) BGR, got {tensor.dtype} {tensor.shape}")
    if tensor.shape[0] == 0:
        raise RequestError("image: empty request (0 images)")
    if tensor.shape[1] < 1 or tensor.shape[2] < 1:
        raise RequestError(f"image: empty images of shape {tensor.shape[1:]}")
    return list(tensor)
