"""Preprocessing shared by the runtime, evaluation and the validation path of training:
the whole image stretched (no letterbox) to the input size with bilinear interpolation,
BGR -> RGB, scaled to [0, 1], NCHW float32."""

from __future__ import annotations

import threading
from typing import Sequence

import cv2
import numpy as np

_SCALE = np.float32(1.0 / 255.0)
_local = threading.local()  # per-thread scratch buffers (see _scratch)


def check_image(image: np.ndarray, what: str = "image") -> None:
    if image is None:
        raise TypeError(f"{what}: got None instead of an image (cv2.imread returns None for a file it cannot "
                        "read: check the path, or pass the path itself to read it with a clear error)")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array (BGR uint8, H x W x 3), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: expected dtype uint8 (BGR as OpenCV reads it), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: expected shape (H, W, 3) BGR, got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what}: empty image of shape {image.shape}")


def _scratch(height: int, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """This thread's reusable resize output (H, W, 3) and planes 3 x (H, W), uint8: fresh
    arrays of this size cost page faults on every image."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None or buffers[0].shape[:2] != (height, width):
        buffers = (np.empty((height, width, 3), np.uint8), [np.empty((height, width), np.uint8) for _ in range(3)])
        _local.buffers = buffers
    return buffers


def preprocess_into(image_bgr: np.ndarray, out_chw: np.ndarray) -> None:
    """Write one BGR uint8 image into `out_chw` (3, H, W) float32: resized, RGB, [0, 1]."""
    height, width = out_chw.shape[1:]
    resized, planes = _scratch(height, width)
    # OpenCV writes into the scratch arrays when they fit (uint8 BGR) and returns new ones
    # otherwise: always use what it returns.
    resized = cv2.resize(image_bgr, (width, height), dst=resized, interpolation=cv2.INTER_LINEAR)
    # Contiguous planes convert faster than the strided HWC -> CHW view of the whole image.
    planes = cv2.split(resized, planes)
    for channel, plane in enumerate(reversed(planes)):
        np.multiply(plane, _SCALE, out=out_chw[channel], casting="unsafe")


def preprocess(images_bgr: Sequence[np.ndarray], input_size: tuple[int, int], out: np.ndarray | None = None,
               checked: bool = False) -> np.ndarray:
    """A batch of BGR uint8 images of any sizes -> (B, 3, H, W) float32 RGB in [0, 1].

    `out` (a reusable buffer of at least B images) is filled and a view returned. Each
    image goes through `check_image` unless `checked` says the caller has done so.
    """
    if len(images_bgr) == 0:
        raise ValueError("no images to preprocess (empty list)")
    batch = len(images_bgr)
    if out is None:
        out = np.empty((batch, 3, *input_size), np.float32)
    elif out.shape[0] < batch or tuple(out.shape[1:]) != (3, *input_size):
        raise ValueError(f"buffer of shape {out.shape} cannot hold {batch} images of {input_size}")
    for i, image in enumerate(images_bgr):
        if not checked:
            check_image(image, f"image {i}")
        preprocess_into(image, out[i])
    return out[:batch]
