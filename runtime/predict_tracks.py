"""ssd-predict --track's work: detect and track objects through one image sequence (a folder
of frames, an image-sequence pattern such as `img1/%06d.jpg`, or image files in order) and
write, into the output folder, each frame with its tracks drawn, `<sequence>.txt` in
MOTChallenge's result format (frame numbers from 1; what benchmarks/bench_mot.py and
MOTChallenge's evaluation read) and one JSON of every frame's detections and tracks.

The model runs at the tracker's low score (detections between the low and the high score
keep tracks alive), so the JSON's detections go down to it. Outputs are written atomically;
an input is never replaced (ssd_edge/common/output_paths).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ssd_edge.common.atomic import write_bytes_atomic
from ssd_edge.common.errors import UsageError
from ssd_edge.common.output_paths import OutputFolder, check_outputs
from ssd_edge.runtime.draw import draw_tracks
from ssd_edge.runtime.image_io import ImageError, check_image_file, encode_image, list_images, read_image, shown_path
from ssd_edge.runtime.predict import RESULTS_NAME, plan_outputs, summary_line
from ssd_edge.runtime.predictor import open_predictor
from ssd_edge.runtime.tracking import Tracker, TrackerConfig, Trails
from ssd_edge.runtime.tracking.mot_format import track_lines, write_mot
from ssd_edge.runtime.tracking.presets import config_record

FRAME_NUMBER = re.compile(r"%0?\d*d")  # printf-style frame number of a sequence pattern
FIRST_NUMBERS = 5  # a pattern's first frame is one of 0..4 (as OpenCV's CAP_IMAGES looks)


def pattern_files(pattern: str) -> list[Path]:
    """The files of an image-sequence pattern ('img1/%06d.jpg'), from its first number
    (0..4) on while they exist; ImageError when there is none."""
    def name(number: int) -> Path:
        return Path(FRAME_NUMBER.sub(lambda m: m.group(0) % number, pattern, count=1))

    first = next((n for n in range(FIRST_NUMBERS) if name(n).is_file()), None)
    if first is None:
        raise ImageError(f"{pattern}: no image of this sequence exists (its first number is 0 to "
                         f"{FIRST_NUMBERS - 1}: {name(0)}, {name(1)}, ...)")
    files = []
    while name(first + len(files)).is_file():
        files.append(name(first + len(files)))
    return files


def sequence_frames(inputs: Sequence[str | os.PathLike]) -> tuple[str, list[Path]]:
    """(sequence name, frame files in order) of one image sequence: a folder (its images,
    sorted by name), a pattern with a printf frame number, or image files in the order
    given. The name is the folder's, or its parent's when the folder is MOTChallenge's
    `img1`."""
    if not inputs:
        raise ImageError("no images given")
    texts = [str(item) for item in inputs]
    if len(texts) == 1 and FRAME_NUMBER.search(texts[0]) and not Path(texts[0]).exists():
        frames = pattern_files(texts[0])
    elif len(texts) == 1 and Path(texts[0]).is_dir():
        frames = list_images(texts[0])
    else:
        if any(Path(t).is_dir() for t in texts):
            raise UsageError("--track takes one sequence: a folder, a pattern (img1/%06d.jpg) or image files, "
                             "not several folders")
        frames = [check_image_file(Path(t)) for t in texts]
    folder = frames[0].resolve().parent
    name = folder.parent.name if folder.name == "img1" and folder.parent.name else folder.name
    return name or "sequence", frames


def track_images(
    model: str | os.PathLike | None,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: TrackerConfig | None = None,
    backend: str = "auto",
    iou_threshold: float | None = None,
    max_detections: int | None = None,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] = lambda line: None,
    server: str | None = None,
    backend_options: Mapping[str, Any] | None = None,
    agnostic_nms: bool | None = None,
    on_image: Callable[[str], None] | None = None,
) -> tuple[Path, Path]:
    """Detect with `model` (or an ssd-server at `server`) and track with `config` through
    the sequence `inputs` (see sequence_frames); write into `output` the annotated frames,
    `<sequence>.txt` (MOTChallenge) and RESULTS_NAME. Returns (MOT file, JSON file).
    on_image: told one line per frame (its detections and tracks)."""
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    config = config or TrackerConfig()
    name, paths = sequence_frames(inputs)
    out_dir = Path(output)
    mot_path = out_dir / f"{name}.txt"
    check_outputs({"--output": mot_path}, {"--model": model, "IMAGE": list(paths)})
    names = plan_outputs(model, paths, out_dir, notify)
    if mot_path.name in names:
        raise UsageError(f"{shown_path(mot_path)} would also be an annotated frame's name")
    options = dict(backend=backend, score_threshold=config.low_score, iou_threshold=iou_threshold,
                   max_detections=max_detections, server=server,
                   **({"options": dict(backend_options)} if backend_options else {}),
                   **({"agnostic_nms": agnostic_nms} if agnostic_nms is not None else {}))
    with OutputFolder(output) as folder:
        return _track_and_write(model, name, paths, names, folder, mot_path, config, batch, progress, on_image,
                                options)


def _track_and_write(model, name: str, paths: Sequence[Path], names: Sequence[str], out_dir: Path, mot_path: Path,
                     config: TrackerConfig, batch: int, progress, on_image, options: dict) -> tuple[Path, Path]:
    tracker = Tracker(config)
    trails = Trails(forget_after=config.max_misses)
    entries, lines = [], []
    with open_predictor(model, **options) as predictor:
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            pictures = [read_image(path) for path in chunk]
            began = time.perf_counter()
            detected = predictor(pictures)
            seconds = (time.perf_counter() - began) / len(chunk)
            for offset, (path, target_name, picture, found) in enumerate(
                    zip(chunk, names[start:start + batch], pictures, detected)):
                index = start + offset
                tracks = tracker.update(found, frame=index)
                lines += track_lines(index + 1, tracks)
                target = out_dir / target_name
                drawn = draw_tracks(picture, tracks, trails.update(tracks))
                write_bytes_atomic(target, encode_image(drawn, path.suffix, str(target)))
                height, width = picture.shape[:2]
                entries.append({"image": str(path), "annotated": str(target), "frame": index + 1, "width": width,
                                "height": height, "detections": found.to_records(), "tracks": tracks.to_records()})
                if on_image:
                    on_image(f"{index + 1}/{len(paths)} {summary_line(path, width, height, found, seconds)}, "
                             f"{len(tracks.ids)} tracks")
            if progress:
                progress(min(start + batch, len(paths)), len(paths))
        summary = {
            "model": str(model) if model is not None else predictor.backend,
            "backend": predictor.backend,
            "classes": list(predictor.class_names),
            "postprocess": {k: getattr(predictor.config, k) for k in
                            ("score_threshold", "iou_threshold", "top_k", "max_detections", "agnostic_nms")},
            "sequence": name,
            "mot": str(mot_path),
            "tracker": config_record(config),
            "images": entries,
        }
    write_mot(mot_path, lines)
    results = out_dir / RESULTS_NAME
    write_bytes_atomic(results, json.dumps(summary, indent=2).encode())
    return mot_path, results
