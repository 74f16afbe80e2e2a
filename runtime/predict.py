"""ssd-predict's work: detect in image files with a deployed model, write each image with
its detections drawn, and one JSON of every detection. Files are written atomically (a
temporary file, then a rename), so an interrupted run never leaves a half-written one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

from ssd_edge.runtime.atomic import write_bytes_atomic
from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.draw import draw_detections
from ssd_edge.runtime.image_io import ImageError, check_image_file, encode_image, read_image
from ssd_edge.runtime.errors import UsageError

RESULTS_NAME = "detections.json"


def check_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image paths, after checking that each exists and has an image format OpenCV
    reads, so that a bad one stops the run before anything is written."""
    if not paths:
        raise ImageError("no images given")
    return [check_image_file(path) for path in paths]


def output_names(paths: Sequence[Path]) -> list[str]:
    """One annotated-image file name per input: its own name, numbered when names repeat."""
    names, seen = [], {}
    for path in paths:
        name = path.name
        if name in seen:
            seen[name] += 1
            name = f"{path.stem}_{seen[path.name]}{path.suffix}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def predict_images(
    model: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    backend: str = "auto",
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
    max_detections: int | None = None,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Detect in `images` with `model`; write the annotated images and RESULTS_NAME into
    `output` (created if needed). Returns the JSON's path. `progress(done, total)` is called
    after each batch."""
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    paths = check_images(images)
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"{out_dir}: output folder is not writable")
    names = output_names(paths)
    entries = []
    with Detector(model, backend=backend, score_threshold=score_threshold, iou_threshold=iou_threshold,
                  max_detections=max_detections) as detector:
        class_names = detector.class_names
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            pictures = [read_image(path) for path in chunk]
            for path, name, picture, found in zip(chunk, names[start:start + batch], pictures, detector(pictures)):
                target = out_dir / name
                drawn = draw_detections(picture, found, class_names)
                write_bytes_atomic(target, encode_image(drawn, path.suffix, str(target)))
                height, width = picture.shape[:2]
                entries.append({"image": str(path), "annotated": str(target), "width": width, "height": height,
                                "detections": found.to_records()})
            if progress:
                progress(min(start + batch, len(paths)), len(paths))
        summary = {
            "model": str(model),
            "backend": detector.backend,
            "classes": list(class_names),
            "postprocess": {k: getattr(detector.config, k) for k in
                            ("score_threshold", "iou_threshold", "top_k", "max_detections")},
            "images": entries,
        }
    results = out_dir / RESULTS_NAME
    write_bytes_atomic(results, json.dumps(summary, indent=2).encode())
    return results
