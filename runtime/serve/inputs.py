"""The images of one request, from the tensors clients send (see `protocol`).

Each function raises `RequestError` naming the request's image and what is wrong; the
model function answers that request with the message in its `error` output, so one bad
request does not fail the others batched with it.

An encoded file's pixel size is read from its header (`runtime.image_header`) before it is
decoded, and a file larger than the server's limit is refused unread: OpenCV allocates the
whole image before decoding, so a 1 MB PNG claiming 20000 x 20000 pixels would cost 1.2 GB.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.runtime.image_header import header_size

# Default limit on one encoded image: 40 megapixels (8K UHD is 33; 120 MB once decoded as BGR).
DEFAULT_MAX_MEGAPIXELS = 40.0


class RequestError(SSDEdgeError, ValueError):
    """One request's inputs cannot be used; the message says which image and why."""


def limit_opencv_pixels(max_megapixels: float, environ: dict | None = None) -> None:
    """Lower OpenCV's own pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS, default 2^30) to
    `max_megapixels` in this process, for formats whose header is not read here. OpenCV
    reads it once, at its first decode: call before any image is decoded."""
    environ = os.environ if environ is None else environ
    limit = int(max_megapixels * 1e6)
    current = environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
    if not current.isdigit() or int(current) > limit:
        environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(limit)


def check_image_size(data: bytes, what: str, max_megapixels: float | None) -> None:
    """RequestError when the header of `data` declares an empty image or one over
    `max_megapixels` (None: no limit). A header not read here passes (see image_header)."""
    size = header_size(data)
    if size is None:
        return
    width, height = size
    if width < 1 or height < 1:
        raise RequestError(f"{what}: empty image ({width}x{height} in its header)")
    if max_megapixels is not None and width * height > max_megapixels * 1e6:
        raise RequestError(f"{what}: {width}x{height} exceeds the server's limit of {max_megapixels:g} megapixels")


def decode_image_bytes(data: bytes, what: str, max_megapixels: float | None = None) -> np.ndarray:
    """An encoded image file (JPEG, PNG, BMP, ...) as BGR uint8 (H, W, 3), decoded as
    `read_image` decodes a file (cv2.imdecode, IMREAD_COLOR), after its header's size is
    checked against `max_megapixels`."""
    if len(data) == 0:
        raise RequestError(f"{what}: empty bytes, not an image file")
    check_image_size(data, what, max_megapixels)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # a header OpenCV refuses (e.g. more pixels than its own limit): its text is internal
        limit = f" or more than the server's limit of {max_megapixels:g} megapixels" if max_megapixels else ""
        raise RequestError(f"{what}: {len(data)} bytes OpenCV refused to decode (a corrupt header{limit})") from None
    if image is None:
        raise RequestError(f"{what}: {len(data)} bytes that OpenCV cannot decode as an image")
    return image


def images_from_bytes(tensor: np.ndarray, max_megapixels: float | None = None) -> list[np.ndarray]:
    """BYTES (B, 1) of encoded files -> B BGR images of any sizes, each at most
    `max_megapixels` (None: no limit)."""
    if tensor.ndim != 2 or tensor.shape[1] != 1:
        raise RequestError(f"image_bytes: expected shape (B, 1), got {tensor.shape}")
    if tensor.shape[0] == 0:
        raise RequestError("image_bytes: empty request (0 images)")
    return [decode_image_bytes(bytes(item), f"image {i}", max_megapixels) for i, item in enumerate(tensor[:, 0])]


def images_from_array(tensor: np.ndarray) -> list[np.ndarray]:
    """UINT8 (B, H, W, 3) BGR -> B images (views, no copy)."""
    if tensor.dtype != np.uint8 or tensor.ndim != 4 or tensor.shape[3] != 3:
        raise RequestError(f"image: expected uint8 (B, H, W, 3) BGR, got {tensor.dtype} {tensor.shape}")
    if tensor.shape[0] == 0:
        raise RequestError("image: empty request (0 images)")
    if tensor.shape[1] < 1 or tensor.shape[2] < 1:
        raise RequestError(f"image: empty images of shape {tensor.shape[1:]}")
    return list(tensor)
