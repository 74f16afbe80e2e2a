"""Tracker cost per frame at 10, 100 and 300 detections, beside the Detector's own latency
on the same machine in the same run: tracking must not become the demo's bottleneck.

    python -m benchmarks.bench_tracking                  # writes benchmarks/results/tracking_cpu.md
    python -m benchmarks.bench_tracking --model ssd.onnx --frames 500

What is timed:
- Tracker: one `Tracker.update(detections, frame=i)` call (Kalman predict, the three
  association stages, Kalman update, births and deaths, building the Tracks) with the
  detections already in memory, in steady state: N objects of 3 classes moving in a
  1920x1080 image, each detected every frame with 2 px box noise, plus about N/20 low-score
  false positives, so N confirmed tracks meet about 1.05 N detections a frame. Default
  settings (per-class matching, ByteTrack's thresholds), and `class_agnostic=True`.
- Detector: one `Detector(image)` call (preprocess, onnxruntime, decode + NMS) on 640x480
  BGR sample images at the score threshold `ssd-demo --track` runs the model at, the
  tracker's low score (0.1: detections between it and the high score keep partly hidden
  objects' tracks alive; the demo's display threshold 0.3 applies without tracking), the
  model an ONNX FP32 export of
  mobilenetv3_ssd 320x320 (random weights, BatchNorm statistics of sample images) unless
  --model is given. An untrained head scores many boxes above 0.1, so it returns up to its
  max_detections: the heaviest decode + NMS load (its detections/frame column).
Each after `--warmup` calls; `--frames` calls timed one at a time with perf_counter.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ssd_edge.bench import machine
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.runtime import Detector
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.tracking import Tracker, TrackerConfig

RESULTS = Path(__file__).resolve().parent / "results"
CLASS_NAMES = ("background", "a", "b", "c")
IMAGE_SIZE = (1920, 1080)  # the tracker's scene, (width, height)
SCORE_THRESHOLD = TrackerConfig().low_score  # what ssd-demo --track runs the Detector at


def steady_detections(count: int, frames: int, seed: int = 0) -> list[Detections]:
    """Per frame: `count` objects moving at constant velocity (staying in view for `frames`
    frames), detected with 2 px Gaussian box noise and scores in [0.6, 0.95), plus a Poisson
    number (mean count / 20) of false positives with scores in [0.1, 0.55)."""
    rng = np.random.default_rng(seed)
    width, height = IMAGE_SIZE
    size = rng.uniform(20, 70, (count, 2))
    speed, angle = rng.uniform(0.5, 3.0, count), rng.uniform(0, 2 * np.pi, count)
    velocity = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1)
    margin = np.minimum(3.0 * frames + size, [width / 2, height / 2])
    centre = rng.uniform(margin, [width, height] - margin)
    labels = rng.integers(1, len(CLASS_NAMES), count)
    sequence = []
    for frame in range(frames):
        at = centre + frame * velocity
        boxes = np.concatenate([at - size / 2, at + size / 2], axis=1) + rng.normal(0, 2.0, (count, 4))
        scores = rng.uniform(0.6, 0.95, count)
        false = rng.poisson(count / 20)
        corner = rng.uniform(0, [width - 80, height - 80], (false, 2))
        false_boxes = np.concatenate([corner, corner + rng.uniform(20, 80, (false, 2))], axis=1)
        all_boxes = np.concatenate([boxes, false_boxes]).astype(np.float32)
        all_labels = np.concatenate([labels, rng.integers(1, len(CLASS_NAMES), false)])
        all_scores = np.concatenate([scores, rng.uniform(0.1, 0.55, false)]).astype(np.float32)
        order = rng.permutation(len(all_boxes))  # a detector gives no stable order
        confs = np.zeros((len(order), len(CLASS_NAMES)), np.float32)
        sequence.append(Detections(all_boxes[order], all_labels[order], all_scores[order], confs, CLASS_NAMES))
    return sequence


def time_calls(call: Callable[[int], object], warmup: int, frames: int) -> np.ndarray:
    """call(i) for i in range(warmup + frames); milliseconds of the last `frames` calls."""
    for i in range(warmup):
        call(i)
    times = np.empty(frames)
    for i in range(frames):
        begin = time.perf_counter()
        call(warmup + i)
        times[i] = time.perf_counter() - begin
    return 1000.0 * times


def export_model(folder: Path) -> Path:
    """mobilenetv3_ssd at 320x320, random weights (seed 0) with BatchNorm statistics of sample
    images, exported to ONNX FP32 (what `ssd-export` writes for the CPU)."""
    import torch

    from ssd_edge.data.synth import sample_images
    from ssd_edge.export.to_onnx import export_onnx
    from ssd_edge.models import build_model
    from ssd_edge.models.calibration import calibrate_batchnorm
    from ssd_edge.runtime.preprocess import preprocess

    torch.manual_seed(0)
    model = build_model("mobilenetv3_ssd", CLASS_NAMES, imgsz=320)
    calibrate_batchnorm(model, torch.from_numpy(preprocess(sample_images(16, seed=2), model.spec.input_size)))
    return export_onnx(model, folder / "mobilenetv3_ssd_320.onnx")


def detector_row(model: Path, warmup: int, frames: int, threads: int | None) -> dict:
    from ssd_edge.data.synth import sample_images

    images = [cv2.resize(image, (640, 480)) for image in sample_images(16, seed=5)]
    with Detector(model, score_threshold=SCORE_THRESHOLD, threads=threads) as detector:
        counts = [len(detector(image).boxes) for image in images]
        ms = time_calls(lambda i: detector(images[i % len(images)]), warmup, frames)
        backend = detector.backend
    return {"name": f"Detector ({model.name}, {backend}, 640x480 image)", "detections": float(np.mean(counts)),
            "tracks": "", "ms": ms}


def tracker_rows(count: int, warmup: int, frames: int) -> list[dict]:
    sequence = steady_detections(count, warmup + frames)
    rows = []
    for name, settings in (("Tracker (per class)", {}), ("Tracker (class_agnostic=True)", {"class_agnostic": True})):
        tracker = Tracker(**settings)
        ms = time_calls(lambda i: tracker.update(sequence[i], frame=i), warmup, frames)
        rows.append({"name": name, "detections": float(np.mean([len(d.boxes) for d in sequence])),
                     "tracks": str(tracker.num_tracks), "ms": ms})
    return rows


def markdown(rows: list[dict], detector_p50: float, args: argparse.Namespace, command: str) -> str:
    table = ["| what | detections/frame | live tracks | p50 ms | p90 ms | p99 ms | mean ms | p50 / Detector p50 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        p50, p90, p99 = np.percentile(row["ms"], [50, 90, 99])
        table.append(f"| {row['name']} | {row['detections']:.0f} | {row['tracks']} | {p50:.3f} | {p90:.3f} | "
                     f"{p99:.3f} | {row['ms'].mean():.3f} | {p50 / detector_p50:.1%} |")
    what = __doc__.split("What is timed:\n")[1].strip()
    return "\n".join([
        "# Tracker cost per frame, beside the Detector", "",
        machine.markdown(machine.describe("scipy", "onnxruntime", "cv2")), "",
        f"Command: `{command}`", "",
        "What is timed:", what, "",
        f"{args.warmup} warm-up calls, {args.frames} timed calls per row; milliseconds per call. The last column is "
        "the row's p50 as a share of the Detector's p50 in this run.", "",
        *table, "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an ONNX model for the Detector row (default: exported here)")
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: onnxruntime's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "tracking_cpu.md")
    args = parser.parse_args(argv)
    command = "python -m " + " ".join(shlex.quote(a) for a in ["benchmarks.bench_tracking", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or export_model(Path(folder))
        rows = [detector_row(model, args.warmup, args.frames, args.threads)]
        print(f"{rows[0]['name']}: p50 {np.percentile(rows[0]['ms'], 50):.2f} ms", flush=True)
    for count in args.counts:
        rows += tracker_rows(count, args.warmup, args.frames)
        for row in rows[-2:]:
            print(f"{row['name']} at {row['detections']:.0f} detections: p50 {np.percentile(row['ms'], 50):.3f} ms",
                  flush=True)
    write_text_atomic(args.out, markdown(rows, float(np.percentile(rows[0]["ms"], 50)), args, command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
