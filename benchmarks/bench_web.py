"""What `ssd-demo --web` costs the detection loop: the loop's frame rate, CPU per frame and the
time its observer call takes, without the viewer, with it and 0 viewers, 1 viewer, and 4
viewers of which one is stalled; the goal is under 5% slower with the stalled viewer.

    python -m benchmarks.bench_web                   # writes benchmarks/results/web_viewer.md
    python -m benchmarks.bench_web --model ssd.onnx --frames 300 --rounds 5

What is timed: the demo's DemoLoop (capture thread -> Detector -> boxes drawn -> observers),
no window, no recording, no log, over a generated 640x480 clip read as fast as the loop takes
it (a file source, headless: the loop never waits for the clip's frame rate, the worst case
for the viewer, which keeps at most 25 pictures a second). The Detector is the demo tests'
model (mobilenetv3_small_ssd 160x160, untrained, exported here; needs torch) unless --model
is given: a fast model, so the viewer's share is larger than with a real one. A viewer is
what a browser tab opens: one event stream (/events) and one MJPEG stream (/video/0.mjpg),
read as fast as they come by a separate process (as a browser is); the stalled viewer
connects both with a 4 KiB receive buffer and never reads. Conditions are interleaved over
`--rounds` rounds (each its own WebViewer on a free loopback port; the order rotates from
round to round), and the median round is reported. Frame rate: processed frames / loop
seconds; loop ms/frame: the gaps between the starts of two Detector calls; CPU: the whole
process's CPU time (loop, capture, encoder and server threads) per processed frame;
on_frame: the viewer's observer call on the loop thread, timed with perf_counter.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ssd_edge.bench import machine
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.runtime.demo.capture import FrameGrabber
from ssd_edge.runtime.demo.loop import DemoLoop
from ssd_edge.runtime.demo.web.address import WebAddress
from ssd_edge.runtime.demo.web.server import WebViewer
from ssd_edge.runtime.detector import Detector

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (640, 480)
SCORE_THRESHOLD = 0.3
CONDITIONS = (("no --web", None), ("--web, 0 viewers", (0, 0)), ("--web, 1 viewer", (1, 0)),
              ("--web, 4 viewers (1 stalled)", (3, 1)))


class TimedObserver:
    """The viewer, with its on_frame call timed (what the loop thread spends in it)."""

    def __init__(self, viewer: WebViewer) -> None:
        self.viewer, self.seconds = viewer, []

    def on_frame(self, source, annotated_bgr, record) -> None:
        begin = time.perf_counter()
        self.viewer.on_frame(source, annotated_bgr, record)
        self.seconds.append(time.perf_counter() - begin)

    def close(self) -> None:
        self.viewer.close()


class TimedDetector:
    """The Detector, with the start of each call noted: the gaps are the loop's period per frame."""

    def __init__(self, detector: Detector) -> None:
        self.detector, self.starts = detector, []

    def __call__(self, image):
        self.starts.append(time.perf_counter())
        return self.detector(image)


def run_loop(detector: Detector, clip: Path, frames: int, viewers: tuple[int, int] | None) -> dict:
    web = clients = None
    observers = []
    if viewers is not None:
        web = WebViewer(WebAddress("127.0.0.1", 0), None)
        web.on_frame(0, np.zeros((SIZE[1], SIZE[0], 3), np.uint8), {"frame": 0})  # source 0 exists for the clients
        observers = [TimedObserver(web)]
        if sum(viewers):
            clients = start_clients(web, *viewers)
    grabber = FrameGrabber(lambda: cv2.VideoCapture(str(clip)), live=False, loop=True)
    grabber.start()
    timed = TimedDetector(detector)
    loop = DemoLoop(timed, grabber, max_frames=frames, observers=observers, score_threshold=SCORE_THRESHOLD)
    cpu = time.process_time()
    summary = loop.run()  # closes the viewer
    cpu = time.process_time() - cpu
    period_ms = 1000.0 * np.diff(timed.starts)
    row = {"fps": summary.frames / summary.seconds, "cpu_ms": 1000.0 * cpu / summary.frames,
           "period_p50": float(np.percentile(period_ms, 50)), "period_p90": float(np.percentile(period_ms, 90)),
           "inference_ms": summary.mean_inference_ms}
    if web is not None:
        time.sleep(0.3)  # the request threads count what they sent as they end
        on_frame = np.array(observers[0].seconds) * 1000.0
        row.update(on_frame_p50=np.percentile(on_frame, 50), on_frame_p99=np.percentile(on_frame, 99),
                   on_frame_max=on_frame.max(), encoded=web.hub.encoded, **web.viewers())
    if clients is not None:
        clients.kill()
        clients.wait()
    return row


def start_clients(web: WebViewer, readers: int, stalled: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_web", "--client", str(web.port),
                                str(readers), str(stalled)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready", "the viewer clients did not connect"
    deadline = time.monotonic() + 10
    while web.viewers()["video"] < readers + stalled or web.viewers()["events"] < readers + stalled:
        if time.monotonic() > deadline:
            raise RuntimeError(f"viewers did not connect: {web.viewers()}")
        time.sleep(0.02)
    return process


def client(port: int, readers: int, stalled: int) -> None:
    """The viewers, in their own process: `readers` tabs reading both streams, `stalled`
    tabs that connect both and read nothing; runs until killed."""
    def connect(path: str, receive_buffer: int | None = None) -> socket.socket:
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        connection.connect(("127.0.0.1", port))
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return connection

    def drain(connection: socket.socket) -> None:
        while connection.recv(1 << 16):
            pass

    kept = []
    for _ in range(readers):
        for path in ("/events", "/video/0.mjpg"):
            threading.Thread(target=drain, args=(connect(path),), daemon=True).start()
    for _ in range(stalled):
        kept += [connect("/events", 4096), connect("/video/0.mjpg", 4096)]
    print("ready", flush=True)
    threading.Event().wait()


def demo_model(folder: Path) -> Path:
    from tests.helpers.demo import export_demo_model

    return export_demo_model(folder / "demo.onnx")


def write_clip(path: Path, frames: int = 120) -> Path:
    from tests.helpers.demo import write_video

    return write_video(path, frames, fps=30.0, size=SIZE)


def paired(rows: dict[str, list[dict]], name: str, key: str) -> str:
    """The median over rounds of this condition's `key` relative to the same round without --web."""
    if name == "no --web":
        return "–"
    ratios = [r[key] / b[key] for r, b in zip(rows[name], rows["no --web"])]
    return f"{100.0 * (np.median(ratios) - 1.0):+.1f}%"


def report(rows: dict[str, list[dict]], args, model: str, loads: list[float]) -> str:
    lines = ["# ssd-demo --web: what the viewer costs the detection loop", "",
             f"Command: `python -m benchmarks.bench_web {' '.join(shlex.quote(a) for a in sys.argv[1:])}`", "",
             __doc__.split("\n\n", 2)[2].strip(), "", "## Machine", "",
             machine.markdown(machine.describe("cv2", "onnxruntime")),
             f"- load average (1 min) before each round: {', '.join(f'{x:.1f}' for x in loads)}", "",
             f"Model: {model}; {args.frames} frames per run, {args.rounds} rounds, medians of the rounds.", "",
             "| condition | loop fps | fps vs no --web | loop ms/frame p50 | p50 vs no --web | p90 | CPU ms/frame "
             "| inference ms | on_frame p50 ms | on_frame p99 ms | JPEGs made | frames sent | dropped for slow viewers "
             "|",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _ in CONDITIONS:
        runs = rows[name]

        def median(key, digits=2):
            values = [r[key] for r in runs if key in r]
            return f"{np.median(values):.{digits}f}" if values else "–"

        fps = np.median([r["fps"] for r in runs])
        change = paired(rows, name, "fps")
        period = paired(rows, name, "period_p50")
        lines.append(f"| {name} | {fps:.1f} | {change} | {median('period_p50')} | {period} | {median('period_p90')} "
                     f"| {median('cpu_ms')} | {median('inference_ms')} "
                     f"| {median('on_frame_p50', 3)} | {median('on_frame_p99', 3)} | {median('encoded', 0)} "
                     f"| {median('frames_sent', 0)} | {median('frames_dropped', 0)} |")
    lines += ["", "The 'vs no --web' columns are the medians of each round's ratio to that round's run without",
              "the viewer (runs next to each other in time, so a change of the machine's load affects both).",
              "What the viewer adds to the loop's own thread is the on_frame column (a lock, the record kept,",
              "and a copy of the picture while someone watches, at most 25 a second); the encoder and the",
              "viewers' threads cost CPU beside it (CPU ms/frame), which slows the loop only where the cores",
              "are all busy. On a shared machine the loop's rate moves from round to round by more than the",
              "viewer could change it: read the per-round rates below before the percentages.", "",
              "Per round (loop fps): " + "; ".join(
        name + ": " + ", ".join(f"{r['fps']:.1f}" for r in rows[name]) for name, _ in CONDITIONS)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        client(int(argv[1]), int(argv[2]), int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an .onnx model (default: the demo tests' model, exported here)")
    parser.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all conditions (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS / "web_viewer.md")
    args = parser.parse_args(argv)
    rows: dict[str, list[dict]] = {name: [] for name, _ in CONDITIONS}
    loads = []
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(demo_model(Path(folder)))
        clip = write_clip(Path(folder) / "clip.avi")
        with Detector(model, score_threshold=SCORE_THRESHOLD) as detector:
            run_loop(detector, clip, 30, None)  # warm-up
            for round_number in range(args.rounds):
                loads.append(os.getloadavg()[0])
                shift = round_number % len(CONDITIONS)  # each condition in each place of the order in turn
                for name, viewers in CONDITIONS[shift:] + CONDITIONS[:shift]:
                    rows[name].append(run_loop(detector, clip, args.frames, viewers))
                    print(f"round {round_number + 1} {name}: {rows[name][-1]['fps']:.1f} fps", flush=True)
    text = report(rows, args, args.model or "the demo tests' mobilenetv3_small_ssd 160x160 (ONNX FP32)", loads)
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
