"""Soak test of ssd-demo: N frames (default 10,000) headless from a generated, looped video,
through the same code as `ssd-demo --headless --loop` (FrameGrabber -> Detector -> drawing
-> video + JSON log). Records the process's resident memory (RSS) before the model is
loaded, after a warm-up block and at the end, and the frame rate of every block, to
benchmarks/results/soak_demo_<arch>_<W>x<H>.md with the machine it ran on. Goal: flat memory, steady FPS.

    python -m benchmarks.soak_demo                       # 10,000 frames, model made here
    python -m benchmarks.soak_demo --frames 3000 --model runs/sample/ssd.onnx
    python -m benchmarks.soak_demo --without log,draw --malloc-trim --out /tmp/part.md   # elimination run

Without --model, an untrained model with calibrated BatchNorm statistics is exported in a
child process (torch stays out of the measured process; the runtime never imports it).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ssd_edge.bench.machine import cpu_model_and_flags, versions

RESULTS = Path(__file__).parent / "results"
CLASSES = ("__background__", "square", "circle")
MAKE_MODEL = """
import sys, torch
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.runtime.preprocess import preprocess
import numpy as np
arch, imgsz, out, frames = sys.argv[1], int(sys.argv[2]), sys.argv[3], np.load(sys.argv[4])
torch.manual_seed(0)
model = build_model(arch, {classes!r}, imgsz=imgsz)
calibrate_batchnorm(model, torch.from_numpy(preprocess(list(frames), model.spec.input_size)))
export_onnx(model, out, simplified=False)
"""


def rss_mb() -> float:
    """Resident set size of this process in MiB (psutil when installed, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("cannot read the resident memory of this process (no psutil, no /proc)")


def python_heap_mb() -> float:
    """Memory held by Python objects (tracemalloc's traced total) in MiB; NaN when not tracing.
    Tells a leak of Python objects (this grows) from native growth (only RSS grows)."""
    return tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else float("nan")


def frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame `index` of a clip of shapes crossing a gradient (the same kind the tests use)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 60)], axis=-1).astype(np.uint8)
    shift = (3 * index) % max(width // 2, 1)
    cv2.rectangle(image, (10 + shift, height // 6), (10 + shift + width // 4, height // 2), (0, 200, 255), -1)
    cv2.circle(image, (width - width // 5 - shift // 2, 2 * height // 3), height // 6, (255, 60, 0), -1)
    return image


def write_clip(path: Path, frames: int, width: int, height: int, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    for i in range(frames):
        writer.write(frame(i, width, height))
    writer.release()
    return path


def make_model(path: Path, arch: str, imgsz: int, width: int, height: int) -> Path:
    samples = path.with_suffix(".npy")
    np.save(samples, np.stack([frame(i, width, height) for i in range(0, 60, 6)]))
    code = MAKE_MODEL.format(classes=CLASSES)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code, arch, str(imgsz), str(path), str(samples)], check=True, cwd=root)
    return path


@dataclass
class Block:
    frames: int  # frames processed when the block ended
    seconds: float
    inference_ms: float  # mean Detector call over the block
    rss_mb: float
    python_mb: float  # Python objects (tracemalloc), NaN without --python-heap
    trimmed_mb: float = float("nan")  # RSS after malloc_trim(0) (--malloc-trim), NaN without it


def malloc_trim() -> bool:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim(0)); False where
    there is no glibc. RSS that this takes away was freed but kept by the allocator."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim(0) is not None
    except (OSError, AttributeError):
        return False


PARTS = ("video", "log", "draw")


def strip_parts(without: set[str]) -> None:
    """Elimination runs (--without): replace parts of the demo's loop by no-ops so that the
    RSS growth of the rest can be measured. video: no recorder; log: no JSON log; draw:
    the frame is recorded as read, without boxes or text."""
    from ssd_edge.runtime.demo import loop

    class Off:  # enter_context(Off(...)) gives None: the loop then has no such output
        def __init__(self, *args: object) -> None: ...

        def __enter__(self) -> None: ...

        def __exit__(self, *exc_info: object) -> None: ...

    if "video" in without:
        loop.VideoRecorder = Off
    if "log" in without:
        loop.JsonLinesLog = Off
    if "draw" in without:
        loop.draw_detections = lambda image, *args, **kwargs: image


@dataclass
class SoakMeter:
    """Wraps the Detector to sample time, inference time and RSS every `block` frames.
    Forwards what the demo reads from a Detector (class_names, spec)."""

    detector: object
    block: int
    trim: bool = False  # malloc_trim(0) at each block end, RSS read before and after it
    blocks: list[Block] = field(default_factory=list)
    frames: int = 0
    _block_start: float = 0.0
    _inference_s: float = 0.0

    def __getattr__(self, name: str):
        return getattr(self.detector, name)

    def __call__(self, image: np.ndarray):
        if self.frames % self.block == 0:
            self._block_start, self._inference_s = time.perf_counter(), 0.0
        begin = time.perf_counter()
        detections = self.detector(image)
        self._inference_s += time.perf_counter() - begin
        self.frames += 1
        if self.frames % self.block == 0:
            seconds = time.perf_counter() - self._block_start
            rss = rss_mb()
            trimmed = rss_mb() if self.trim and malloc_trim() else float("nan")
            self.blocks.append(
                Block(self.frames, seconds, 1000 * self._inference_s / self.block, rss, python_heap_mb(), trimmed)
            )
        return detections


def soak(model: Path, frames: int, block: int, work: Path, width: int, height: int, score_threshold: float,
         trim: bool = False, suffix: str = ".mp4", clip_frames: int = 300):
    from ssd_edge.runtime import Detector
    from ssd_edge.runtime.demo.capture import FrameGrabber
    from ssd_edge.runtime.demo.loop import DemoOptions, record_demo
    from ssd_edge.runtime.demo.sources import open_capture, parse_source

    clip = write_clip(work / "clip.mp4", clip_frames, width, height)
    memory = {"start": rss_mb()}
    load = [os.getloadavg()[0]]
    source = parse_source(str(clip))
    settings = DemoOptions(model=str(model), source=str(clip), headless=True, output=str(work / f"soak{suffix}"),
                            max_frames=frames, loop=True)
    with Detector(str(model), score_threshold=score_threshold) as detector:
        memory["model loaded"] = rss_mb()
        meter = SoakMeter(detector, block, trim=trim)
        grabber = FrameGrabber(lambda: open_capture(source)[0], live=False, loop=True)
        began = time.perf_counter()
        summary = record_demo(meter, grabber, settings, fps=30)
        wall = time.perf_counter() - began
        memory["end"] = rss_mb()
    load.append(os.getloadavg()[0])
    sizes = {p.name: p.stat().st_size for p in (summary.video, summary.log) if p}
    return summary, meter.blocks, memory, wall, sizes, load, detector.spec


def report(args, summary, blocks, memory, wall, sizes, load, spec) -> str:
    cpu, _ = cpu_model_and_flags()
    lib = ", ".join(f"{k} {v}" for k, v in versions("cv2", "onnxruntime").items())
    warm = blocks[0].rss_mb if blocks else float("nan")
    growth = memory["end"] - warm
    rates = [block_fps(b, args.block) for b in blocks]
    lines = [
        "# ssd-demo soak",
        "",
        f"- Machine: {cpu}, {os.cpu_count()} cores visible, no GPU; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {lib}",
        f"- Load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} "
        "(the 2 cores were shared with other jobs, so the FPS of a block varies with their load)",
        f"- Command: `python -m benchmarks.soak_demo {' '.join(sys.argv[1:])}`",
        f"- Model: {spec.arch}, input {spec.input_size[1]}x{spec.input_size[0]}, {len(spec.class_names) - 1} classes "
        f"({'given' if args.model else 'untrained, calibrated BatchNorm, made by the script'}), onnxruntime CPU, "
        f"score threshold {args.score_threshold}",
        f"- Source: a generated {args.width}x{args.height} mp4 of {args.clip_frames} frames, looped; headless: "
        f"{describe_outputs(args)} "
        f"({', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in sizes.items())})",
        "- Timed: the whole loop per frame (read, Detector = preprocess + network + NumPy decode/NMS, drawing, "
        "video encode, log line); inference = the Detector call alone",
        "",
        f"**{summary.frames} frames in {wall:.1f} s ({summary.frames / wall:.1f} fps overall); "
        f"ended: {summary.end_reason}.**",
        "",
        "| RSS | MiB |",
        "|---|---|",
        f"| start (runtime imported, no model) | {memory['start']:.1f} |",
        f"| model loaded | {memory['model loaded']:.1f} |",
        f"| after the first {args.block} frames (warm) | {warm:.1f} |",
        f"| end (outputs finalised, model still loaded) | {memory['end']:.1f} |",
        f"| growth from warm to end | {growth:+.1f} |",
        "",
        f"FPS per block of {args.block} frames: min {min(rates):.1f}, median {float(np.median(rates)):.1f}, "
        f"max {max(rates):.1f}",
        "",
        "| frames | loop fps | inference ms (mean) | RSS MiB | Python objects MiB | RSS after malloc_trim MiB |",
        "|---|---|---|---|---|---|",
        *[
            f"| {b.frames} | {block_fps(b, args.block):.1f} | {b.inference_ms:.2f} | {b.rss_mb:.1f} | "
            f"{'-' if np.isnan(b.python_mb) else f'{b.python_mb:.2f}'} | "
            f"{'-' if np.isnan(b.trimmed_mb) else f'{b.trimmed_mb:.1f}'} |"
            for b in blocks
        ],
        "",
    ]
    return "\n".join(lines)


def describe_outputs(args) -> str:
    without = {part for part in args.without.split(",") if part}
    parts = [f"annotated {args.video_suffix.lstrip('.')}" if "video" not in without else "no video",
             "JSON log" if "log" not in without else "no log"]
    text = " + ".join(parts)
    return text + (f" (left out: {', '.join(sorted(without))})" if without else "")


def block_fps(block: Block, size: int) -> float:
    return size / block.seconds if block.seconds > 0 else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--block", type=int, default=500, help="frames per FPS/RSS sample")
    p.add_argument("--model", type=Path, help="an .onnx model (default: make an untrained one)")
    p.add_argument("--arch", default="mobilenetv3_ssd", help="architecture of the model made without --model")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--python-heap", action="store_true",
                   help="also trace Python objects (tracemalloc; slower) to tell a Python leak from native growth")
    p.add_argument("--without", default="", help="elimination runs: comma-separated parts to leave out "
                   "(video, log, draw); see strip_parts")
    p.add_argument("--malloc-trim", action="store_true",
                   help="call glibc's malloc_trim(0) at each block end and record RSS before and after it")
    p.add_argument("--video-suffix", default=".mp4", help=".mp4 (MPEG-4 + crash-safe MJPG copy) or .avi (MJPG only)")
    p.add_argument("--clip-frames", type=int, default=300, help="length of the looped source clip")
    p.add_argument("--out", type=Path, help="results file (default benchmarks/results/soak_demo_<arch>_<W>x<H>.md)")
    args = p.parse_args()
    if args.frames < args.block:
        p.error(f"--frames ({args.frames}) must be at least --block ({args.block})")
    unknown = {part for part in args.without.split(",") if part} - set(PARTS)
    if unknown:
        p.error(f"--without {args.without}: unknown part(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(PARTS)}")
    if args.python_heap:
        tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="soak_demo_") as tmp:
        work = Path(tmp)
        model = args.model or make_model(work / "model.onnx", args.arch, args.imgsz, args.width, args.height)
        strip_parts({part for part in args.without.split(",") if part})
        results = soak(model, args.frames, args.block, work, args.width, args.height, args.score_threshold,
                       args.malloc_trim, args.video_suffix, args.clip_frames)
    text = report(args, *results)
    spec = results[-1]
    out = args.out or RESULTS / f"soak_demo_{spec.arch}_{args.width}x{args.height}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
