"""Reading and writing images for the runtime's tools, with errors that name the file.

`read_image` is the project's one image reader (runtime, export calibration, evaluation,
training data, dataset checks) and `list_images` its one image-folder lister (ssd-predict,
ssd-bench, export calibration and parity). `read_image` reads the file's bytes with Python and decodes them with
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


def list_images(folder: str | os.PathLike, limit: int | None = None, recursive: bool = False) -> list[Path]:
    """The project's one image-folder lister: the image files in `folder` (by suffix, see
    IMAGE_SUFFIXES; with `recursive`, in its subfolders too), sorted by path. With `limit`,
    that many spread evenly over the sorted list, so a dataset's splits and classes all show
    up. ImageError naming the folder when it is missing or holds no images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{shown_path(folder)}: no such directory (expected a folder of images or a dataset)")
    found = folder.rglob("*") if recursive else folder.iterdir()
    paths = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        where = ", recursively" if recursive else ""
        raise ImageError(f"{shown_path(folder)}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files{where})")
    if limit is not None and limit < len(paths):
        if limit < 1:
            raise ImageError(f"asked for {limit} images from {shown_path(folder)}; need at least 1")
        picks = np.linspace(0, len(paths) - 1, limit).round().astype(int)
        paths = [paths[i] for i in picks]
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
