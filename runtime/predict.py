"""ssd-predict's work: detect in image files with a deployed model, write each image with
its detections drawn, and one JSON of every detection. Files are written atomically (a
temporary file, then a rename), so an interrupted run never leaves a half-written one; an
input is never replaced and no two results share a name (ssd_edge/common/output_paths)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ssd_edge.common.atomic import write_bytes_atomic
from ssd_edge.common.errors import UsageError
from ssd_edge.common.output_paths import OutputFolder, OutputPathError, check_outputs, output_names
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.draw import draw_detections
from ssd_edge.runtime.image_io import ImageError, check_image_file, encode_image, list_images, read_image, shown_path
from ssd_edge.runtime.predictor import open_predictor

RESULTS_NAME = "detections.json"
DEFAULT_OUTPUT = Path("runs") / "predict"
# Files ssd-predict refuses with a pointer to ssd-demo, which runs videos (headless too).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")


def new_output_folder(base: str | os.PathLike = DEFAULT_OUTPUT) -> Path:
    """`base` (runs/predict), or base2, base3, ...: the first name not taken, so that a run
    with no --output never writes into an earlier one (Ultralytics' habit)."""
    base = Path(base)
    if not base.exists():
        return base
    number = 2
    while base.with_name(f"{base.name}{number}").exists():
        number += 1
    return base.with_name(f"{base.name}{number}")


def summary_line(path: Path, width: int, height: int, found: Detections, seconds: float | None = None) -> str:
    """One image in one line: 'a.jpg: 640x480, 2 circle, 1 square' ('no detections')."""
    counts = Counter(found.names)
    what = ", ".join(f"{count} {name}" for name, count in counts.most_common()) or "no detections"
    timing = f", {seconds * 1000:.1f} ms" if seconds is not None else ""
    return f"{shown_path(path)}: {width}x{height}, {what}{timing}"


def check_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image paths, a folder standing for the images directly inside it, after
    checking that each exists and has an image format OpenCV reads, so that a bad one
    stops the run before anything is written."""
    if not paths:
        raise ImageError("no images given")
    found: list[Path] = []
    for path in map(Path, paths):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            raise UsageError(f"{shown_path(path)}: a video; ssd-predict reads images. Run it with ssd-demo "
                             f"--model MODEL --source {shown_path(path)} --headless --output OUT.mp4 (every frame "
                             "annotated, detections in OUT.jsonl)")
        found.extend(list_images(path) if path.is_dir() else [check_image_file(path)])
    return found


def plan_outputs(model: str | os.PathLike, paths: Sequence[Path], out_dir: Path,
                 notify: Callable[[str], None] = lambda line: None) -> list[str]:
    """One annotated-image name per input in `out_dir`: its own name unless that would
    replace an input (an output folder that holds the inputs), another result of this run,
    or a file already there that is not a result of an earlier run (listed in its
    RESULTS_NAME); then `stem_N.ext`, and `notify` is told. The results file is checked
    too: it never replaces an input, the model, or a file that is not an earlier one."""
    results = out_dir / RESULTS_NAME
    check_outputs({"--output": results}, {"--model": model, "IMAGE": list(paths)})
    earlier = earlier_results(results)
    names = output_names(paths, out_dir, reserved=(RESULTS_NAME,), replaceable=earlier)
    for path, name in zip(paths, names):
        if name != path.name:
            notify(f"{shown_path(path)} -> {shown_path(out_dir / name)} (the name {path.name} is taken "
                   "by an input, another result or a file that is not an earlier result)")
    return names


def earlier_results(results: Path) -> set[str]:
    """The annotated-image names an earlier run listed in `results` (which may be replaced);
    none when there is no such file. OutputPathError when a file of that name exists and is
    not an ssd-predict result (it would be replaced)."""
    if not results.exists():
        return set()
    try:
        listed = json.loads(results.read_text())["images"]
        return {Path(entry["annotated"]).name for entry in listed}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputPathError(f"{shown_path(results)} exists and is not an ssd-predict result ({type(exc).__name__}); "
                          "it would be replaced: choose another --output folder") from None


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
    notify: Callable[[str], None] = lambda line: None,
    server: str | None = None,
    backend_options: Mapping[str, Any] | None = None,
    agnostic_nms: bool | None = None,
    on_image: Callable[[str], None] | None = None,
) -> Path:
    """Detect in `images` (files, or folders of them) with `model`; write the annotated
    images and RESULTS_NAME into `output` (created if needed, and removed again if the run
    fails before writing into it). Returns the JSON's path. An input is never replaced:
    an annotated image whose name is taken gets another, which `notify` is told.
    `progress(done, total)` is called after each batch. With `server` ("HOST:PORT") an
    ssd-serve server detects instead of `model` (None then; see predictor.open_predictor).
    backend_options: {backend option name: value} (see runtime/backends/registry).
    `on_image(line)` receives 'i/N ' and each image's summary_line once it is written."""
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    paths = check_images(images)
    names = plan_outputs(model, paths, Path(output), notify)
    with OutputFolder(output) as out_dir:
        return _detect_and_write(model, paths, names, out_dir, batch, progress, on_image,
                                 dict(backend=backend, score_threshold=score_threshold, iou_threshold=iou_threshold,
                                      max_detections=max_detections, server=server,
                                      **({"options": dict(backend_options)} if backend_options else {}),
                                      **({"agnostic_nms": agnostic_nms} if agnostic_nms is not None else {})))


def _detect_and_write(model: str | os.PathLike, paths: Sequence[Path], names: Sequence[str], out_dir: Path,
                      batch: int, progress: Callable[[int, int], None] | None,
                      on_image: Callable[[str], None] | None, options: dict) -> Path:
    """The work of predict_images once its outputs are planned: `names[i]` in `out_dir`
    receives `paths[i]` annotated; `options` are `open_predictor`'s."""
    entries = []
    with open_predictor(model, **options) as predictor:
        class_names = predictor.class_names
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            pictures = [read_image(path) for path in chunk]
            began = time.perf_counter()
            detected = predictor(pictures)
            seconds = (time.perf_counter() - began) / len(chunk)
            for path, name, picture, found in zip(chunk, names[start:start + batch], pictures, detected):
                target = out_dir / name
                drawn = draw_detections(picture, found)
                write_bytes_atomic(target, encode_image(drawn, path.suffix, str(target)))
                height, width = picture.shape[:2]
                entries.append({"image": str(path), "annotated": str(target), "width": width, "height": height,
                                "detections": found.to_records()})
                if on_image:
                    on_image(f"{len(entries)}/{len(paths)} {summary_line(path, width, height, found, seconds)}")
            if progress:
                progress(min(start + batch, len(paths)), len(paths))
        summary = {
            "model": str(model) if model is not None else predictor.backend,
            "backend": predictor.backend,
            "classes": list(class_names),
            "postprocess": {k: getattr(predictor.config, k) for k in
                            ("score_threshold", "iou_threshold", "top_k", "max_detections", "agnostic_nms")},
            "images": entries,
        }
    results = out_dir / RESULTS_NAME
    write_bytes_atomic(results, json.dumps(summary, indent=2).encode())
    return results
