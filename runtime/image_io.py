"""Reading and writing images for the runtime's tools, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from ssd_edge.runtime.errors import SSDEdgeError


class ImageError(SSDEdgeError, ValueError):
    """An image file that cannot be read or written; the message names the file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as BGR uint8 (H, W, 3), as OpenCV reads it."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{path}: not a readable image (unsupported format or corrupt file)")
    return image


def encode_image(image_bgr: np.ndarray, suffix: str, what: str) -> bytes:
    """The image encoded in the format `suffix` names ('.jpg', '.png', ...)."""
    ok, data = cv2.imencode(suffix, image_bgr)
    if not ok:
        raise ImageError(f"{what}: OpenCV cannot encode an image as {suffix}")
    return data.tobytes()
