"""Reading and writing images for the runtime's tools, with errors that name the file.

`read_image` is the project's one image reader (runtime, export calibration, evaluation,
training data, dataset checks). It reads the file's bytes with Python and decodes them with
`cv2.imdecode` rather than calling `cv2.imread`: OpenCV's own file opening crashes the
process (SIGSEGV) on a file name that is not valid UTF-8, such as a Latin-1 `café.jpg`
copied from an old camera card, and an absurd header (a PNG claiming 100000 x 100000
pixels) raises `cv2.error`; both become an `ImageError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ssd_edge.common.errors import SSDEdgeError


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(SSDEdgeError, ValueError):
    """An image file that cannot be read or written; the message names the file."""


def images_in_folder(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder` (by suffix, see IMAGE_SUFFIXES), sorted by
    name; ImageError naming the folder when it holds none."""
    folder = Path(folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ImageError(f"{shown_path(folder)}: a folder with no images in it "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)} files)")
    return paths


def shown_path(path: str | os.PathLike) -> str:
    """`path` as text that prints anywhere: bytes that are not UTF-8 (kept by Python as
    surrogates, e.g. 'caf\\udce9.jpg') are written as backslash escapes."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as BGR uint8 (H, W, 3), as `cv2.imread(path, IMREAD_COLOR)` gives
    it (EXIF orientation applied); ImageError naming the file when it is missing or cannot
    be decoded."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{shown_path(path)}: no such image file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{shown_path(path)}: cannot be read ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ImageError(f"{shown_path(path)}: not a readable image (empty file)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header whose size exceeds OpenCV's pixel limit
        reason = str(exc).strip().splitlines()[-1]
        raise ImageError(f"{shown_path(path)}: not a readable image (OpenCV refused it: {reason})") from exc
    if image is None:
        raise ImageError(f"{shown_path(path)}: not a readable image (unsupported format or corrupt file)")
    return image


def check_image_file(path: str | os.PathLike) -> Path:
    """`path` as a Path, after checking that it is a file whose first bytes are a format
    OpenCV reads (without decoding it); ImageError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{shown_path(path)}: no such image file")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # OpenCV crashes on such a name: decode the bytes instead
        read_image(path)
        return path
    if not cv2.haveImageReader(str(path)):
        raise ImageError(f"{path}: not an image format OpenCV reads")
    return path


def encode_image(image_bgr: np.ndarray, suffix: str, what: str) -> bytes:
    """The image encoded in the format `suffix` names ('.jpg', '.png', ...)."""
    ok, data = cv2.imencode(suffix, image_bgr)
    if not ok:
        raise ImageError(f"{what}: OpenCV cannot encode an image as {suffix}")
    return data.tobytes()
