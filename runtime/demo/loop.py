"""The live demo: capture -> Detector -> boxes, names, scores and frame rates drawn ->
a window (q/Esc quits) or, headless, an annotated video and a per-frame JSON-lines log.
With `track` the detections go through a tracker (ssd_edge.runtime.tracking) and the
tracks are drawn with their IDs and short trails and logged; with `count_line` crossings
of that line are counted per class and direction, drawn and logged.

    summary = run_demo(DemoSettings(model="ssd.onnx", source="csi://0", headless=True, output="out.mp4"),
                       status=print)

Whatever ends the demo (end of file, --max-frames, q/Esc, Ctrl-C, a live source that does
not come back, an error) the outputs are finalised: the video and the log are renamed into
place from their temporary files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import cv2
import numpy as np

from ssd_edge.common.errors import UsageError
from ssd_edge.common.output_paths import check_outputs
from ssd_edge.runtime.demo.capture import CaptureStats, Frame, FrameGrabber, RetryPolicy
from ssd_edge.runtime.demo.display import Window, check_display
from ssd_edge.runtime.demo.observers import DemoObserver
from ssd_edge.runtime.demo.rates import DurationMeter
from ssd_edge.runtime.demo.recording import JsonLinesLog, VideoRecorder
from ssd_edge.runtime.demo.sources import STREAM_TIMEOUT_MS, Source, describe_capture, open_capture, parse_source
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.draw import draw_detections, draw_tracks

if TYPE_CHECKING:  # imported when tracking is asked for: it needs SciPy
    from ssd_edge.runtime.tracking import StreamTracking

Status = Callable[[str], None]
STATUS_EVERY_S = 5.0
QUIT = "quit by the user (q, Esc or the window closed)"
INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass(frozen=True)
class DemoSettings:
    """Everything `ssd-demo` takes. output: the annotated video (its log beside it as
    .jsonl unless `log` is given); headless without an output records to a timestamped
    file in the working directory. track: follow objects across frames (IDs, trails,
    "tracks" in the log); count_line: ((x1, y1), (x2, y2)) in pixels, count crossings of
    it (implies track). score_threshold: the plain detections drawn and logged are those
    scoring above it (None: the model's own threshold). With tracking the Detector runs at
    the tracker's low score instead, so that ByteTrack's low-score band (which keeps partly
    hidden objects' tracks alive) reaches the tracker; tracks are drawn and logged by the
    tracker's rules, and a detection a reported track took is logged whatever its score
    (a track's "detection" is its row in the logged detections)."""

    model: str
    source: str
    backend: str = "auto"
    score_threshold: float | None = None
    iou_threshold: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    headless: bool = False
    output: str | None = None
    log: str | None = None
    max_frames: int | None = None
    loop: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    track: bool = False
    count_line: tuple[tuple[float, float], tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"max_frames must be at least 1, got {self.max_frames}")
        if self.log and not self.output and not self.headless:
            raise UsageError("a log path needs --output (or --headless): the log describes the recorded video")

    @property
    def tracking(self) -> bool:
        return self.track or self.count_line is not None

    def output_paths(self) -> tuple[Path | None, Path | None]:
        """(video, log) to write, or (None, None) for a window-only run."""
        if self.output is None and not self.headless:
            return None, None
        video = Path(self.output) if self.output else Path(time.strftime("ssd-demo-%Y%m%d-%H%M%S.mp4"))
        return video, Path(self.log) if self.log else video.with_suffix(".jsonl")

    def check_outputs(self, source: Source) -> None:
        """OutputPathError, before anything opens, when the video or the log would replace the
        model, the source file or each other (however the paths are spelled)."""
        video, log = self.output_paths()
        source_file = Path(source.text) if source.kind == "file" else None
        check_outputs({"--output": video, "--log": log}, {"--model": self.model, "--source": source_file})


@dataclass
class DemoSummary:
    frames: int
    seconds: float
    end_reason: str
    capture: CaptureStats
    mean_inference_ms: float
    video: Path | None = None
    log: Path | None = None

    def describe(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        parts = [f"stopped: {self.end_reason}.", f"{self.frames} frames in {self.seconds:.1f} s ({rate:.1f} fps,",
                 f"inference {self.mean_inference_ms:.1f} ms a frame);"]
        if self.capture.frames_dropped:
            parts.append(f"{self.capture.frames_dropped} camera frames skipped to stay live;")
        if self.capture.reconnects:
            parts.append(f"{self.capture.reconnects} reconnections;")
        parts.append(f"video {self.video}," if self.video else "no video written,")
        parts.append(f"log {self.log}" if self.log else "no log")
        return " ".join(parts)


class DemoLoop:
    """Runs frames from a started FrameGrabber through `detector` until something ends it.

    detector: image_bgr -> Detections (a runtime Detector). score_threshold: plain detections
    are drawn and logged when they score above it (None: all of them; see DemoSettings).
    recorder/log/window: optional outputs, closed by the caller. realtime_fps: show at most this many frames a second
    (a video file in a window plays at its own rate, not as fast as the model runs).
    tracking: follows the detections across frames (drawn as tracks, logged) when given.
    observers: each gets on_frame(source, annotated, record) after every processed frame
    (the record the log gets) and close() when the loop ends, however it ends.
    status: receives the progress lines. stop: set it (from
    a signal handler, another thread) to end the loop between two frames; a
    KeyboardInterrupt raised inside the loop ends it too, possibly mid-frame.
    """

    def __init__(self, detector: Callable[[np.ndarray], Detections], grabber: FrameGrabber, *,
                 recorder: VideoRecorder | None = None, log: JsonLinesLog | None = None,
                 window: Window | None = None, max_frames: int | None = None, realtime_fps: float | None = None,
                 tracking: StreamTracking | None = None, score_threshold: float | None = None,
                 status: Status = lambda line: None, status_every_s: float = STATUS_EVERY_S,
                 stop: threading.Event | None = None, observers: Sequence[DemoObserver] = ()) -> None:
        self.detector, self.grabber, self.tracking = detector, grabber, tracking
        self.observers = tuple(observers)
        self.score_threshold = score_threshold
        self.stop = stop or threading.Event()
        self.recorder, self.log, self.window = recorder, log, window
        self.max_frames = max_frames
        self._period_s = 1.0 / realtime_fps if realtime_fps else 0.0
        self._next_show = 0.0
        self.status, self.status_every_s = status, status_every_s
        self.inference = DurationMeter()
        self.frames = 0
        self._all_inference_s = 0.0
        self._started = time.monotonic()

    def run(self) -> DemoSummary:
        self._started = last_status = time.monotonic()
        try:
            end_reason = None
            while end_reason is None:
                end_reason = INTERRUPTED if self.stop.is_set() else self._step()
                if time.monotonic() - last_status >= self.status_every_s:
                    last_status = time.monotonic()
                    self.status(self._progress_line())
        except KeyboardInterrupt:
            end_reason = INTERRUPTED
        finally:
            self.grabber.stop()
            close_observers(self.observers, self.status)
        mean_ms = 1000.0 * self._all_inference_s / self.frames if self.frames else 0.0
        return DemoSummary(self.frames, time.monotonic() - self._started, end_reason, self.grabber.stats, mean_ms)

    def _step(self) -> str | None:
        """Handle the next frame, if one came; the reason to stop, or None to go on."""
        frame = self.grabber.get(timeout=0.05)
        if frame is None:
            if self.grabber.finished:
                return self.grabber.stats.end_reason
            return QUIT if self.window is not None and self.window.poll() else None
        annotated = self._process(frame)
        self.frames += 1
        if self.window is not None and self.window.show(annotated, self._wait_ms()):
            return QUIT
        if self.max_frames is not None and self.frames >= self.max_frames:
            return f"{self.max_frames} frames processed (--max-frames)"
        return None

    def _wait_ms(self) -> int:
        """How long the window waits after this frame so that frames come at realtime_fps."""
        now = time.monotonic()
        wait_s = max(0.0, self._next_show - now)
        self._next_show = max(self._next_show, now) + self._period_s
        return max(1, round(1000.0 * wait_s))

    def _process(self, frame: Frame) -> np.ndarray:
        begin = time.perf_counter()
        detections = self.detector(frame.image)
        seconds = time.perf_counter() - begin
        self.inference.add(seconds)
        self._all_inference_s += seconds
        rates = f"capture {frame.capture_fps:.1f} fps | inference {self.inference.per_second:.1f} fps"
        if self.tracking is None:
            shown = _select(detections, self._shown(detections))
            annotated = draw_detections(frame.image, shown, status=rates)
            tracking_fields: dict[str, Any] = {}
        else:
            annotated, shown, tracking_fields = self._track(frame, detections, rates)
        if self.recorder is not None:
            self.recorder.write(annotated)
        if self.log is not None or self.observers:
            record = {**self._record(frame, shown, seconds), **tracking_fields}
            if self.log is not None:
                self.log.write(record)
            for observer in self.observers:
                observer.on_frame(0, annotated, record)
        return annotated

    def _shown(self, detections: Detections) -> np.ndarray | None:
        """Which detections score above score_threshold (None: all)."""
        if self.score_threshold is None:
            return None
        return np.asarray(detections.scores) > self.score_threshold

    def _track(self, frame: Frame, detections: Detections,
               rates: str) -> tuple[np.ndarray, Detections, dict[str, Any]]:
        """The frame with its tracks drawn, the detections to log (those shown, and those a
        reported track took) and the log's tracking fields (tracking_ms: the tracker's time
        for this frame; tracks, each with its row in the logged detections; with a counting
        line, crossings and counts)."""
        begin = time.perf_counter()
        tracked = self.tracking.update(detections, frame=frame.index)
        seconds = time.perf_counter() - begin
        annotated = draw_tracks(frame.image, tracked.tracks, tracked.trails, status=rates,
                                line=self.tracking.line, counts=tracked.counts)
        keep = self._shown(detections)
        if keep is not None:
            taken = tracked.tracks.detection_index
            keep[taken] = True
            rows = np.cumsum(keep) - 1  # a kept detection's row among the kept ones
            tracked = tracked._replace(tracks=tracked.tracks._replace(detection_index=rows[taken]))
        fields = {"tracking_ms": round(1000.0 * seconds, 3), **self.tracking.record(tracked)}
        return annotated, _select(detections, keep), fields

    def _record(self, frame: Frame, detections: Detections, seconds: float) -> dict[str, Any]:
        return {
            "frame": self.frames,
            "source_frame": frame.index,
            "time": round(time.time(), 3),  # wall clock when the detections were ready
            "latency_ms": round(1000.0 * (time.monotonic() - frame.timestamp), 2),  # since the frame was read
            "capture_fps": round(frame.capture_fps, 2),
            "inference_fps": round(self.inference.per_second, 2),
            "inference_ms": round(1000.0 * seconds, 3),
            "detections": detections.to_records(),
        }

    def _progress_line(self) -> str:
        stats = self.grabber.stats
        return (f"frame {self.frames}: inference {self.inference.per_second:.1f} fps "
                f"({1000.0 * self.inference.mean_s:.1f} ms), {stats.frames_read} read, "
                f"{stats.frames_dropped} skipped, {stats.reconnects} reconnections")


def close_observers(observers: Sequence[DemoObserver], status: Status) -> None:
    """Close every observer; one that fails is reported and does not keep the others open."""
    for observer in observers:
        try:
            observer.close()
        except Exception as exc:  # the demo's outputs matter more than an observer's shutdown
            status(f"closing {type(observer).__name__} failed: {type(exc).__name__}: {exc}")


def run_demo(settings: DemoSettings, status: Status = lambda line: None,
             stop: threading.Event | None = None, observers: Sequence[DemoObserver] = ()) -> DemoSummary:
    """Open the source and the model of `settings`, run the demo, finalise its outputs.
    status: receives progress lines; stop: an event that ends the demo (see DemoLoop);
    observers: see DemoLoop (closed however the demo ends, also when it fails to start)."""
    with contextlib.ExitStack() as stack:
        stack.callback(close_observers, observers, status)  # closing twice is harmless (DemoObserver.close)
        source = parse_source(settings.source, settings.width, settings.height, settings.fps)
        settings.check_outputs(source)
        tracking = _stream_tracking(settings)  # a bad counting line ends the demo before anything opens
        first, attempt = open_capture(source, stop)  # a missing camera is the first thing to say
        stack.callback(first.release)  # the grabber releases it once started; twice is harmless
        if not settings.headless:
            check_display()  # before the model, which can take a while to open
        status(f"source {source.text}: {attempt.describe()}")
        status(f"the source delivers {describe_capture(first)}")
        source_fps, announced = first.get(cv2.CAP_PROP_FPS), int(first.get(cv2.CAP_PROP_FRAME_COUNT))
        detector, settings = _open_detector(settings, tracking)
        stack.enter_context(detector)
        status(f"model {settings.model}: {_describe_detector(detector)}")
        if tracking is not None:
            status(f"detections scoring above {detector.config.score_threshold:g} go to the tracker, "
                   f"those above {settings.score_threshold:g} are logged as detections")
        grabber = FrameGrabber(_reader_factory(source, first, stop), live=source.live, loop=settings.loop,
                               retry=settings.retry, notify=status,
                               read_timeout_s=STREAM_TIMEOUT_MS / 1000.0 if source.kind == "stream" else None)
        summary = record_demo(detector, grabber, settings, settings.fps or source_fps, status, stop,
                              realtime=source.kind == "file", tracking=tracking, observers=observers)
    summary.end_reason = _explain_end(summary, source, announced, settings.loop)
    return summary


def record_demo(detector: Callable[[np.ndarray], Detections], grabber: FrameGrabber, settings: DemoSettings,
                fps: float | None = None, status: Status = lambda line: None,
                stop: threading.Event | None = None, realtime: bool = False,
                tracking: StreamTracking | None = None, observers: Sequence[DemoObserver] = ()) -> DemoSummary:
    """Open the window and outputs `settings` asks for, start `grabber` and run the loop;
    whatever ends it, the grabber is stopped and the video and log finalised. `fps` is
    the frame rate written into the video (default 30) and, with `realtime` (a file
    source), the rate the window shows frames at; headless runs never wait. `tracking`:
    the StreamTracking to run (default: the one `settings` asks for, if any). `detector`
    should keep what the tracker needs (see DemoSettings); `settings.score_threshold`
    filters the plain detections drawn and logged."""
    video_path, log_path = settings.output_paths()
    if tracking is None:
        tracking = _stream_tracking(settings)  # before any output: a bad counting line ends the demo here
    with contextlib.ExitStack() as stack:
        stack.callback(close_observers, observers, status)  # also when an output fails to open
        window = None if settings.headless else stack.enter_context(Window())
        recorder = stack.enter_context(VideoRecorder(video_path, fps)) if video_path else None
        log = stack.enter_context(JsonLinesLog(log_path)) if log_path else None
        if recorder is not None:
            status(f"recording to {recorder.recording_path} and {log.recording_path if log else 'no log'} "
                   f"(renamed to {video_path} and {log_path} at the end)")
        if window is not None:
            status("window open: press q or Esc in it to quit")
        stack.callback(grabber.stop)
        grabber.start()
        loop = DemoLoop(detector, grabber, recorder=recorder, log=log, window=window,
                        max_frames=settings.max_frames, realtime_fps=fps if realtime and window is not None else None,
                        tracking=tracking, score_threshold=settings.score_threshold, status=status, stop=stop,
                        observers=observers)
        summary = loop.run()
    summary.video = recorder.close() if recorder else None
    summary.log = log.close() if log else None
    return summary


def _stream_tracking(settings: DemoSettings) -> StreamTracking | None:
    """The tracker the settings ask for, or None."""
    if not settings.tracking:
        return None
    from ssd_edge.runtime.tracking import StreamTracking

    return StreamTracking(line=settings.count_line)


def _open_detector(settings: DemoSettings, tracking: StreamTracking | None) -> tuple[Detector, DemoSettings]:
    """The Detector for `settings` and the settings with the score threshold of the plain
    detections filled in. Without tracking the Detector runs at settings.score_threshold.
    With tracking it runs at the lower of that and the tracker's low score (the model's
    own threshold standing in for None), so that the tracker gets its low-score band."""
    def open_at(score_threshold: float | None) -> Detector:
        return Detector(settings.model, backend=settings.backend, score_threshold=score_threshold,
                        iou_threshold=settings.iou_threshold)

    if tracking is None:
        return open_at(settings.score_threshold), settings
    low_score = tracking.tracker.config.low_score
    shown = settings.score_threshold
    detector = open_at(None if shown is None else min(shown, low_score))
    if shown is None:
        shown = detector.config.score_threshold  # the model's own
        if shown > low_score:
            detector.close()
            detector = open_at(low_score)
    return detector, dataclasses.replace(settings, score_threshold=shown)


def _reader_factory(source: Source, first: cv2.VideoCapture,
                    stop: threading.Event | None = None) -> Callable[[], cv2.VideoCapture]:
    """The grabber's opener: the capture already open first, a fresh one after that (an
    open in progress ends when `stop` is set)."""
    pending = [first]

    def open_reader() -> cv2.VideoCapture:
        return pending.pop() if pending else open_capture(source, stop)[0]

    return open_reader


def _describe_detector(detector: Detector) -> str:
    spec = detector.spec
    height, width = spec.input_size
    return f"{spec.arch}, input {width}x{height}, {len(spec.class_names) - 1} classes, {detector.backend}"


def _select(detections: Detections, keep: np.ndarray | None) -> Detections:
    """The detections where `keep` (N,) bool is true (all of them for None)."""
    if keep is None or keep.all():
        return detections
    return detections._replace(boxes=detections.boxes[keep], labels=detections.labels[keep],
                               scores=detections.scores[keep], confs=detections.confs[keep])


def _explain_end(summary: DemoSummary, source: Source, announced_frames: int, loop: bool) -> str:
    read = summary.capture.frames_read
    if source.kind == "file" and not loop and summary.end_reason == "end of file" and 0 < read < announced_frames:
        return f"end of file after {read} of the {announced_frames} frames the file announces (it may be truncated)"
    return summary.end_reason
