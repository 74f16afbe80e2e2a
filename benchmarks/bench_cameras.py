"""Several cameras on one device: N = 1, 2, 4 sources through ONE batched Detector (ssd-demo
with N --source: DemoLoop with N lanes, one Detector call per tick) against N separate
Detectors in one process (N single-source demo loops in N threads, each with its own
Detector, as N demos in one process would run), same machine, same run, interleaved.

    python -m benchmarks.bench_cameras                          # model made here, 150 frames a source
    python -m benchmarks.bench_cameras --model runs/sample/ssd.onnx --frames 300 --repeats 3

Sources: generated video files (shapes crossing a gradient), decoded by their FrameGrabbers
and handed over frame by frame AS FAST AS THE MODEL TAKES THEM (a headless demo never paces
a file: this measures the throughput ceiling, not a camera's 30 fps). Per frame: read, the
Detector (preprocess, network, decode and NMS), drawing; no video or log written.
Measured: frames per second per camera (each source's frames / the run's wall time), the
total, and process CPU time (all threads) per frame. "separate, split threads" gives each
of the N Detectors cores/N intra-op threads (instead of onnxruntime's one per core each).
Goal (issue 26): 4 cameras batched >= 1.3x the total throughput of 4 separate Detectors.

Give a trained model (--model, e.g. `make sample`'s runs/sample/ssd.onnx): the untrained one
made by default scores ~300 boxes a frame over 0.3 on these clips, and drawing 300 boxes
(~65 ms a frame) then costs more than the network, which is not what a camera sees.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

from benchmarks.soak_demo import make_model, write_clip
from ssd_edge.bench.machine import describe, markdown
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.runtime import Detector
from ssd_edge.runtime.demo.capture import FrameGrabber
from ssd_edge.runtime.demo.loop import DemoLoop, Lane
from ssd_edge.runtime.demo.sources import open_capture, parse_source

RESULTS = Path(__file__).parent / "results"
MODES = ("batched", "separate", "separate, split threads")


class PacedReader:
    """A file read at `fps` frames a second, looped: what a camera delivers (the grabber, live,
    keeps the newest frame and skips those the model had no time for)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.capture = cv2.VideoCapture(str(path))
        self.period = 1.0 / fps
        self.due = time.monotonic()

    def read(self):
        wait = self.due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.due = max(self.due + self.period, time.monotonic() - self.period)
        ok, image = self.capture.read()
        if not ok:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self.capture.read()
        return ok, image

    def release(self) -> None:
        self.capture.release()


PACED: dict = {"fps": None, "seconds": 20.0}  # --paced FPS --seconds S


def grabber(clip: Path, wake: threading.Event | None = None) -> FrameGrabber:
    if PACED["fps"]:
        return FrameGrabber(lambda: PacedReader(clip, PACED["fps"]), live=True, wake=wake)
    source = parse_source(str(clip))
    return FrameGrabber(lambda: open_capture(source)[0], live=False, loop=True, wake=wake)


def limits(frames: int) -> tuple[int | None, threading.Event]:
    """(max_frames, stop): paced runs end after PACED["seconds"], the others after `frames`."""
    stop = threading.Event()
    if not PACED["fps"]:
        return frames, stop
    timer = threading.Timer(PACED["seconds"], stop.set)
    timer.daemon = True
    timer.start()
    return None, stop


def run_batched(model: Path, clips: list[Path], frames: int, threshold: float) -> dict:
    with Detector(str(model), score_threshold=threshold) as detector:
        image = grabber(clips[0]).start().get(timeout=5).image
        for _ in range(3):
            detector([image] * len(clips))  # warm-up at this batch size
        wake = threading.Event() if len(clips) > 1 else None
        grabbers = [grabber(clip, wake) for clip in clips]
        for each in grabbers:
            each.start()
        cpu, began = time.process_time(), time.perf_counter()
        most, stop = limits(frames)
        if len(clips) == 1:
            loop = DemoLoop(detector, grabbers[0], max_frames=most, score_threshold=threshold, stop=stop)
        else:
            loop = DemoLoop(detector, [Lane(g, text=str(c)) for g, c in zip(grabbers, clips)], max_frames=most,
                            score_threshold=threshold, wake=wake, stop=stop)
        summary = loop.run()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    per_camera = [s.frames for s in summary.sources] if summary.sources else [summary.frames]
    skipped = [g.stats.frames_dropped for g in grabbers]
    return {"wall": wall, "cpu": cpu, "frames": per_camera, "batches": summary.batches, "skipped": skipped}


def run_separate(model: Path, clips: list[Path], frames: int, threshold: float, threads: int | None) -> dict:
    detectors = [Detector(str(model), score_threshold=threshold, threads=threads) for _ in clips]
    try:
        image = grabber(clips[0]).start().get(timeout=5).image
        for detector in detectors:
            for _ in range(3):
                detector(image)
        most, stop = limits(frames)
        loops = [DemoLoop(d, grabber(c), max_frames=most, score_threshold=threshold, stop=stop)
                 for d, c in zip(detectors, clips)]
        results: list = [None] * len(loops)
        ends = [0.0] * len(loops)

        def work(index: int) -> None:
            loops[index].grabber.start()
            results[index] = loops[index].run()
            ends[index] = time.perf_counter()

        workers = [threading.Thread(target=work, args=(i,)) for i in range(len(loops))]
        cpu, began = time.process_time(), time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        for detector in detectors:
            detector.close()
    return {"wall": wall, "cpu": cpu, "frames": [r.frames for r in results], "batches": sum(r.batches for r in results),
            "skipped": [loop.grabber.stats.frames_dropped for loop in loops]}


def measure(args: argparse.Namespace, model: Path, clips: list[Path]) -> list[dict]:
    rows = []
    cores = os.cpu_count() or 1
    for repeat in range(args.repeats):
        for count in args.sources:
            for mode in MODES:
                if mode == "separate, split threads" and count == 1:
                    continue
                load = os.getloadavg()[0]
                chosen = clips[:count]
                if mode == "batched":
                    result = run_batched(model, chosen, args.frames, args.score_threshold)
                else:
                    threads = max(1, cores // count) if mode.endswith("split threads") else None
                    result = run_separate(model, chosen, args.frames, args.score_threshold, threads)
                total = sum(result["frames"])
                rows.append({"repeat": repeat, "sources": count, "mode": mode, "load": load, **result,
                             "fps_total": total / result["wall"], "cpu_ms_per_frame": 1000 * result["cpu"] / total})
                print(f"[{repeat}] N={count} {mode}: {total / result['wall']:.1f} fps total, "
                      f"{1000 * result['cpu'] / total:.1f} ms CPU a frame, load {load:.1f}", flush=True)
    return rows


def report(args: argparse.Namespace, rows: list[dict], model_text: str, machine: dict) -> str:
    lines = [
        "# Several cameras: one batched Detector vs separate Detectors",
        "",
        markdown(machine),
        f"- Command: `python -m benchmarks.bench_cameras {' '.join(sys.argv[1:])}`",
        f"- Model: {model_text}; onnxruntime CPU; score threshold {args.score_threshold}",
        (f"- Sources: generated {args.width}x{args.height} mp4 files, looped, read at {args.paced:g} fps each like "
         f"cameras (live: the newest frame is taken, the others skipped), {args.seconds:g} s a run"
         if args.paced else
         f"- Sources: generated {args.width}x{args.height} mp4 files, looped, {args.frames} frames per source and "
         "run, handed over as fast as the model takes them (not paced at the files' 30 fps)"),
        "- batched: one Detector (onnxruntime's default threads), one call per tick with the newest frame of "
        "every source (ssd-demo with N --source); separate: N single-source demo loops in N threads of one process, "
        "a Detector each (default threads each; 'split threads': cores/N intra-op threads each)",
        f"- {args.repeats} repeats, interleaved (N and mode change every run); medians below; the 1-minute load "
        f"average ranged {min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f} during the runs "
        f"(other jobs shared the {machine['cores']} cores: absolute numbers are low and noisy, "
        "the ratios are the point)",
        "- With 1 source 'batched' and 'separate' run the same code (one loop, one Detector): their difference "
        "shows the noise of this machine",
        "- 'CPU-bound ratio': separate's CPU time per frame / this mode's, i.e. the throughput ratio on a device "
        "whose cores the demo has to itself and keeps busy; 'total vs separate' is the measured wall-clock ratio, "
        "which on an oversubscribed machine also reflects how many threads each mode puts up against the other jobs",
        "",
        "| sources | mode | fps per camera | fps total | CPU ms per frame | mean batch | total vs separate "
        "| CPU-bound ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count in args.sources:
        medians = {}
        for mode in MODES:
            chosen = [r for r in rows if r["sources"] == count and r["mode"] == mode]
            if chosen:
                medians[mode] = {key: statistics.median(r[key] for r in chosen)
                                 for key in ("fps_total", "cpu_ms_per_frame")}
                medians[mode]["batch"] = statistics.median(sum(r["frames"]) / max(1, r["batches"]) for r in chosen)
        for mode, m in medians.items():
            separate = medians.get("separate")
            ratio = m["fps_total"] / separate["fps_total"] if separate else float("nan")
            cpu_ratio = separate["cpu_ms_per_frame"] / m["cpu_ms_per_frame"] if separate else float("nan")
            lines.append(f"| {count} | {mode} | {m['fps_total'] / count:.1f} | {m['fps_total']:.1f} | "
                         f"{m['cpu_ms_per_frame']:.1f} | {m['batch']:.2f} | {ratio:.2f}x | {cpu_ratio:.2f}x |")
    lines += ["", "Every run:", "",
              "| repeat | sources | mode | load | wall s | frames per source | skipped per source | fps total "
              "| CPU ms/frame |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['repeat']} | {r['sources']} | {r['mode']} | {r['load']:.1f} | {r['wall']:.2f} | "
                     f"{r['frames']} | {r.get('skipped', '')} | {r['fps_total']:.1f} | {r['cpu_ms_per_frame']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an ONNX model (default: an untrained one made here)")
    p.add_argument("--arch", default="mobilenetv3_ssd", help="the made model's architecture")
    p.add_argument("--imgsz", type=int, default=320, help="the made model's input size")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=150, help="frames per source and run")
    p.add_argument("--sources", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--paced", type=float, metavar="FPS",
                   help="read each file at FPS like a camera (live, newest frame) for --seconds, instead of as fast "
                        "as the model takes them")
    p.add_argument("--seconds", type=float, default=20.0, help="length of a --paced run")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    PACED.update(fps=args.paced, seconds=args.seconds)
    args.out = args.out or RESULTS / ("cameras_cpu_paced.md" if args.paced else "cameras_cpu.md")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = Path(args.model) if args.model else make_model(work / "model.onnx", args.arch, args.imgsz,
                                                               args.width, args.height)
        clips = [write_clip(work / f"clip{i}.mp4", 90 + 7 * i, args.width, args.height)
                 for i in range(max(args.sources))]
        with Detector(str(model)) as probe:
            spec = probe.spec
        model_text = (f"{spec.arch}, input {spec.input_size[1]}x{spec.input_size[0]} "
                      f"({'given: ' + args.model if args.model else 'untrained, calibrated BatchNorm, made here'})")
        machine = describe("onnxruntime", "cv2")
        rows = measure(args, model, clips)
    write_text_atomic(args.out, report(args, rows, model_text, machine))
    write_text_atomic(args.out.with_suffix(".json"), json.dumps({"model": model_text, "machine": machine,
                                                                 "rows": rows}, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
