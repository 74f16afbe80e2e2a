"""Images for calibration and parity checks: a folder of the user's images, or the built-in
synthetic sample images when no folder is given."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssd_edge.export.onnx_model import ExportError
from ssd_edge.runtime.image_io import IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under `folder` (searched recursively, sorted by path). With `limit`, that
    many spread evenly over the sorted list, so a dataset's splits and classes all show up."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such directory (expected a folder of images or a dataset)")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ExportError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, recursively)")
    if limit is not None and limit < len(paths):
        if limit < 1:
            raise ExportError(f"asked for {limit} images from {folder}; need at least 1")
        picks = np.linspace(0, len(paths) - 1, limit).round().astype(int)
        paths = [paths[i] for i in picks]
    return paths


def sample_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` BGR images from the synthetic sample data generator (shapes on textures),
    made in memory: real image statistics with nothing to download."""
    from ssd_edge.data.synth import SynthConfig, make_image

    rng = np.random.default_rng(seed)
    return [make_image(rng, SynthConfig())[0] for _ in range(count)]
