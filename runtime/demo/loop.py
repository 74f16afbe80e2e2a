"""The live demo: capture -> Detector -> boxes, names, scores and frame rates drawn ->
a window (q/Esc quits) or, headless, an annotated video and a per-frame JSON-lines log.
With `track` the detections go through a tracker (ssd_edge.runtime.tracking) and the
tracks are drawn with their IDs and short trails and logged; with `count_line` crossings
of that line are counted per class and direction, drawn and logged.

    summary = run_demo(DemoOptions(model="ssd.onnx", source="csi://0", headless=True, output="out.mp4"),
                       status=print)

Several sources (`source=("0", "rtsp://cam/1", "clip.mp4")`): one frame grabber each; per
tick the newest frame of every source that has one goes through the Detector as one batch;
each source has its own tracking, counting line, recording and log (out.mp4 -> out.src0.mp4,
out.src1.mp4, ...; each log record gets a "source" field); a source that ends or drops
out leaves the batch while the others go on (a live one reconnects and comes back).

Whatever ends the demo (end of file, --max-frames, q/Esc, Ctrl-C, a live source that does
not come back, an error) the outputs are finalised: the video and the log are renamed into
place from their temporary files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from ssd_edge.common.errors import UsageError
from ssd_edge.common.output_paths import check_outputs
from ssd_edge.runtime.demo.capture import CaptureStats, Frame, FrameGrabber, RetryPolicy
from ssd_edge.runtime.demo.display import Window, check_display
from ssd_edge.runtime.demo.observers import DemoObserver
from ssd_edge.runtime.demo.rates import DurationMeter
from ssd_edge.runtime.demo.recording import JsonLinesLog, SegmentedRecorder, VideoRecorder
from ssd_edge.runtime.demo.sources import STREAM_TIMEOUT_MS, Source, describe_capture, open_capture, parse_source
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.draw import draw_detections, draw_tracks

if TYPE_CHECKING:  # imported when tracking is asked for: it needs SciPy
    from ssd_edge.runtime.tracking import StreamTracking

Status = Callable[[str], None]
Line = tuple[tuple[float, float], tuple[float, float]]
STATUS_EVERY_S = 5.0
GATHER_S = 0.1  # how long a tick waits for the next frame of a file source that has none ready yet
QUIT = "quit by the user (q, Esc or the window closed)"
INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass(frozen=True)
class DemoOptions:
    """Everything `ssd-demo` takes. source: one source, or a sequence of them (one batch
    per tick, see the module docstring). output: the annotated video (its log beside it as
    .jsonl unless `log` is given; with several sources each gets its own, named
    <stem>.src<N><suffix>); headless without an output records to a timestamped
    file in the working directory. track: follow objects across frames (IDs, trails,
    "tracks", "entered" and "left" in the log); count_line: ((x1, y1), (x2, y2)) in pixels,
    count crossings of it (implies track); with several sources it applies to every source
    that has no line of its own in count_lines ({source number: line}). score_threshold:
    the plain detections drawn and logged are those
    scoring above it (None: the model's own threshold). With tracking the Detector runs at
    the tracker's low score instead, so that ByteTrack's low-score band (which keeps partly
    hidden objects' tracks alive) reaches the tracker; tracks are drawn and logged by the
    tracker's rules, and a detection a reported track took is logged whatever its score
    (a track's "detection" is its row in the logged detections). tracker: the tracker's
    settings (a runtime.tracking TrackerConfig; None: its defaults, ByteTrack's demo
    settings). max_frames: with several sources, each source stops after that many frames."""

    model: str
    source: str | Sequence[str]
    backend: str = "auto"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    score_threshold: float | None = None
    iou_threshold: float | None = None
    agnostic_nms: bool | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    headless: bool = False
    output: str | None = None
    log: str | None = None
    max_frames: int | None = None
    segment_minutes: float | None = None
    loop: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    track: bool = False
    count_line: Line | None = None
    count_lines: Mapping[int, Line] = field(default_factory=dict)
    tracker: Any = None  # TrackerConfig | None (tracking is imported only when asked for: it needs SciPy)

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"max_frames must be at least 1, got {self.max_frames}")
        if self.segment_minutes is not None and not self.segment_minutes > 0:
            raise UsageError(f"segment_minutes must be more than 0, got {self.segment_minutes}")
        if self.log and not self.output and not self.headless:
            raise UsageError("a log path needs --output (or --headless): the log describes the recorded video")
        if not self.sources:
            raise UsageError("no source given")
        for index in self.count_lines:
            if not 0 <= index < len(self.sources):
                raise UsageError(f"counting line for source {index}: there are {len(self.sources)} sources "
                                 f"(numbered 0 to {len(self.sources) - 1} in the order given)")

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, (str, int)) else tuple(str(s) for s in self.source)

    @property
    def several(self) -> bool:
        return len(self.sources) > 1

    @property
    def tracking(self) -> bool:
        return self.track or self.count_line is not None or bool(self.count_lines)

    def line_of(self, index: int) -> Line | None:
        """The counting line of source `index` (its own, else the common one, else None)."""
        return self.count_lines.get(index, self.count_line)

    def output_paths(self, index: int | None = None) -> tuple[Path | None, Path | None]:
        """(video, log) to write, or (None, None) for a window-only run. With several
        sources, those of source `index` (<stem>.src<index><suffix>)."""
        if self.output is None and not self.headless:
            return None, None
        video = Path(self.output) if self.output else Path(time.strftime("ssd-demo-%Y%m%d-%H%M%S.mp4"))
        log = Path(self.log) if self.log else video.with_suffix(".jsonl")
        if index is None or not self.several:
            return video, log
        return _per_source(video, index), _per_source(log, index)

    def check_outputs(self, sources: Source | Sequence[Source]) -> None:
        """OutputPathError, before anything opens, when a video or a log would replace the
        model, a source's file or each other (however the paths are spelled)."""
        sources = [sources] if isinstance(sources, Source) else list(sources)
        paths = [self.output_paths(i) for i in range(len(sources))]
        inputs = [path for source in sources for path in source.input_files()]
        check_outputs({"--output": [video for video, _ in paths], "--log": [log for _, log in paths]},
                      {"--model": self.model, "--source": inputs})


def _per_source(path: Path, index: int) -> Path:
    return path.with_name(f"{path.stem}.src{index}{path.suffix}")


@dataclass
class SourceSummary:
    """How one source of a several-source run went."""

    index: int
    text: str
    frames: int
    end_reason: str
    capture: CaptureStats
    video: Path | None = None
    log: Path | None = None


@dataclass
class DemoSummary:
    frames: int
    seconds: float
    end_reason: str
    capture: CaptureStats  # with several sources: their sums (source_lost: any was lost)
    mean_inference_ms: float  # per Detector call (one batch of several sources)
    video: Path | None = None
    log: Path | None = None
    sources: list[SourceSummary] = field(default_factory=list)  # several sources only
    batches: int = 0

    def describe(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        if self.sources:
            parts = [f"stopped: {self.end_reason}.", f"{self.frames} frames of {len(self.sources)} sources in "
                     f"{self.seconds:.1f} s ({rate:.1f} fps together, {self.batches} batches, "
                     f"inference {self.mean_inference_ms:.1f} ms a batch);"]
            for s in self.sources:
                parts.append(f"source {s.index} ({s.text}): {s.frames} frames, {s.end_reason}"
                             + (f", {s.capture.frames_dropped} skipped" if s.capture.frames_dropped else "")
                             + (f", {s.capture.reconnects} reconnections" if s.capture.reconnects else "")
                             + (f", video {s.video}" if s.video else "") + (f", log {s.log};" if s.log else ";"))
            return " ".join(parts)
        parts = [f"stopped: {self.end_reason}.", f"{self.frames} frames in {self.seconds:.1f} s ({rate:.1f} fps,",
                 f"inference {self.mean_inference_ms:.1f} ms a frame);"]
        if self.capture.frames_dropped:
            parts.append(f"{self.capture.frames_dropped} camera frames skipped to stay live;")
        if self.capture.reconnects:
            parts.append(f"{self.capture.reconnects} reconnections;")
        parts.append(f"video {self.video}," if self.video else "no video written,")
        parts.append(f"log {self.log}" if self.log else "no log")
        return " ".join(parts)


class Presence:
    """Objects entering and leaving one source's view, from its tracker's reports: a track
    enters when it is first reported (confirmed), and leaves when the tracker removes it,
    i.e. at the first frame more than `max_misses` source frames after it was last seen
    (the Tracker's rule for confirmed tracks)."""

    def __init__(self, max_misses: int) -> None:
        self.max_misses = max_misses
        self._seen: dict[int, tuple[int, dict[str, Any]]] = {}  # id -> (last frame, {id, label, name})

    def update(self, tracks: list[dict[str, Any]], frame: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(entered, left) at source frame `frame`, given its reported tracks (records)."""
        left = [who for last, who in self._seen.values() if frame - last > self.max_misses]
        for who in left:
            del self._seen[who["id"]]
        entered = []
        for track in tracks:
            who = {"id": track["id"], "label": track["label"], "name": track["name"]}
            if track["id"] not in self._seen:
                entered.append(who)
            self._seen[track["id"]] = (frame, who)
        return entered, left


@dataclass
class Lane:
    """One source of the demo: its grabber and its own tracking, recording and log."""

    grabber: FrameGrabber
    tracking: StreamTracking | None = None
    recorder: VideoRecorder | None = None
    log: JsonLinesLog | None = None
    text: str = ""
    frames: int = 0  # processed
    end_reason: str | None = None  # set once this source is done
    picture: np.ndarray | None = None  # the last annotated frame (the window's grid)
    presence: Presence | None = None

    def __post_init__(self) -> None:
        if self.tracking is not None and self.presence is None:
            self.presence = Presence(self.tracking.tracker.config.max_misses)


def detect_batch(detector: Callable[..., Any], images: list[np.ndarray]) -> list[Detections]:
    """Detections of each image: one Detector call for all of them (the backend batches);
    a plain image -> Detections callable (a stand-in for tests) is called once per image."""
    if len(images) == 1:
        return [detector(images[0])]
    if isinstance(detector, Detector) or getattr(detector, "batched", False):
        return list(detector(images))
    return [detector(image) for image in images]


class DemoLoop:
    """Runs frames from started FrameGrabbers through `detector` until something ends it.

    grabber: one FrameGrabber (with the recorder/log/tracking given here), or several
    Lanes (each with its own). detector: image_bgr -> Detections (a runtime Detector, which
    also takes a list: several sources' frames go through it as one batch). score_threshold:
    plain detections are drawn and logged when they score above it (None: all of them; see
    DemoOptions).
    recorder/log/window: optional outputs, closed by the caller. realtime_fps: show at most this many frames a second
    (a video file in a window plays at its own rate, not as fast as the model runs).
    tracking: follows the detections across frames (drawn as tracks, logged) when given.
    observers: each gets on_frame(source, annotated, record) after every processed frame
    (the record the log gets) and close() when the loop ends, however it ends.
    status: receives the progress lines. stop: set it (from
    a signal handler, another thread) to end the loop between two frames; a
    KeyboardInterrupt raised inside the loop ends it too, possibly mid-frame.
    wake: the event the grabbers of several lanes set when a frame is ready (None: poll).
    """

    def __init__(self, detector: Callable[[np.ndarray], Detections], grabber: FrameGrabber | Sequence[Lane], *,
                 recorder: VideoRecorder | None = None, log: JsonLinesLog | None = None,
                 window: Window | None = None, max_frames: int | None = None, realtime_fps: float | None = None,
                 tracking: StreamTracking | None = None, score_threshold: float | None = None,
                 status: Status = lambda line: None, status_every_s: float = STATUS_EVERY_S,
                 stop: threading.Event | None = None, observers: Sequence[DemoObserver] = (),
                 wake: threading.Event | None = None) -> None:
        if isinstance(grabber, FrameGrabber):
            self.lanes = [Lane(grabber, tracking, recorder, log)]
        else:
            self.lanes = list(grabber)
            if not self.lanes or recorder is not None or log is not None or tracking is not None:
                raise UsageError("DemoLoop with lanes: at least one, each with its own recorder, log and tracking")
        self.several = len(self.lanes) > 1
        self.detector = detector
        self.grabber, self.tracking = self.lanes[0].grabber, self.lanes[0].tracking
        self.score_threshold = score_threshold
        self.observers = tuple(observers)
        self.stop = stop or threading.Event()
        self.window = window
        self.max_frames = max_frames
        self._wake = wake
        self._period_s = 1.0 / realtime_fps if realtime_fps and realtime_fps > 0 else 0.0  # unknown: -1
        self._next_show = 0.0
        self.status, self.status_every_s = status, status_every_s
        self.inference = DurationMeter()
        self.frames = 0
        self.batches = 0
        self._all_inference_s = 0.0
        self._started = time.monotonic()

    def run(self) -> DemoSummary:
        self._started = last_status = time.monotonic()
        try:
            end_reason = None
            while end_reason is None:
                end_reason = self._stop_reason() if self.stop.is_set() else self._step()
                if time.monotonic() - last_status >= self.status_every_s:
                    last_status = time.monotonic()
                    self.status(self._progress_line())
        except KeyboardInterrupt:
            end_reason = INTERRUPTED
        finally:
            for lane in self.lanes:
                lane.grabber.stop()
            close_observers(self.observers, self.status)
        mean_ms = 1000.0 * self._all_inference_s / self.batches if self.batches else 0.0
        summary = DemoSummary(self.frames, time.monotonic() - self._started, end_reason, self._capture_stats(),
                              mean_ms, batches=self.batches)
        if self.several:
            summary.sources = [SourceSummary(i, lane.text, lane.frames, lane.end_reason or end_reason,
                                             lane.grabber.stats) for i, lane in enumerate(self.lanes)]
        return summary

    def _capture_stats(self) -> CaptureStats:
        if not self.several:
            return self.grabber.stats
        every = [lane.grabber.stats for lane in self.lanes]
        return CaptureStats(sum(s.frames_read for s in every), sum(s.frames_dropped for s in every),
                            sum(s.reconnects for s in every), sum(s.loops for s in every),
                            "; ".join(f"source {i}: {s.end_reason}" for i, s in enumerate(every)),
                            any(s.source_lost for s in every))

    def _stop_reason(self) -> str:
        """Why `stop` was set: its `reason` where the setter gave one (ssd-demo names the
        signal), else INTERRUPTED."""
        return getattr(self.stop, "reason", None) or INTERRUPTED

    def _step(self) -> str | None:
        """Handle the next frames, if any came; the reason to stop, or None to go on."""
        taken = self._take()
        if not taken:
            if all(lane.end_reason is not None for lane in self.lanes):
                return self._end_reason()
            return QUIT if self.window is not None and self.window.poll() else None
        begin = time.perf_counter()
        found = detect_batch(self.detector, [frame.image for _, frame in taken])
        seconds = time.perf_counter() - begin
        self.inference.add(seconds)
        self._all_inference_s += seconds
        self.batches += 1
        for (lane, frame), detections in zip(taken, found):
            if lane.frames == 0:
                self._check_line(lane, frame.image)
            lane.picture = self._process(lane, frame, detections, seconds)
            lane.frames += 1
            self.frames += 1
            if self.several and self.max_frames is not None and lane.frames >= self.max_frames:
                self._end_lane(lane, f"{self.max_frames} frames processed (--max-frames)")
                lane.grabber.stop()
        if self.window is not None and self.window.show(self._picture(), self._wait_ms()):
            return QUIT
        if not self.several and self.max_frames is not None and self.frames >= self.max_frames:
            return f"{self.max_frames} frames processed (--max-frames)"
        if self.several and all(lane.end_reason is not None for lane in self.lanes):
            return self._end_reason()
        return None

    def _check_line(self, lane: Lane, image: np.ndarray) -> None:
        """At a source's first frame: a warning when its counting line leaves the frame."""
        line = lane.tracking.line if lane.tracking is not None else None
        if line is None:
            return
        from ssd_edge.runtime.tracking.counting import outside_frame

        height, width = image.shape[:2]
        problem = outside_frame(line[0], line[1], width, height)
        if problem:
            where = f"source {self.lanes.index(lane)}: " if self.several else ""
            self.status(f"{where}warning: {problem}")

    def _take(self) -> list[tuple[Lane, Frame]]:
        """The frames of this tick: one source's next frame (waiting up to 50 ms), or with
        several, the newest frame of every source that has one; a file source that has
        none ready yet is waited for up to GATHER_S (it always has a next one, and the
        batch is fuller), a live one is not (it must not hold the others back)."""
        if not self.several:
            lane = self.lanes[0]
            frame = lane.grabber.get(timeout=0.05)
            if frame is None and lane.grabber.finished:
                lane.end_reason = lane.grabber.stats.end_reason
            return [] if frame is None else [(lane, frame)]
        if self._wake is not None:
            self._wake.clear()
        taken, pending = [], []
        for lane in self.lanes:
            if lane.end_reason is not None:
                continue
            frame = lane.grabber.get(timeout=0)
            if frame is not None:
                taken.append((lane, frame))
            elif lane.grabber.finished:
                self._end_lane(lane, lane.grabber.stats.end_reason)
            elif not lane.grabber.live:
                pending.append(lane)
        if taken and pending:
            deadline = time.monotonic() + GATHER_S
            for lane in pending:
                frame = lane.grabber.get(timeout=max(0.0, deadline - time.monotonic()))
                if frame is not None:
                    taken.append((lane, frame))
            taken.sort(key=lambda pair: self.lanes.index(pair[0]))
        if not taken and any(lane.end_reason is None for lane in self.lanes):
            if self._wake is not None:
                self._wake.wait(0.05)
            else:
                time.sleep(0.005)
        return taken

    def _end_lane(self, lane: Lane, reason: str) -> None:
        if lane.end_reason is None:
            lane.end_reason = reason
            self.status(f"source {self.lanes.index(lane)} ({lane.text or 'source'}): {reason}"
                        + ("; the other sources go on" if any(o.end_reason is None for o in self.lanes) else ""))

    def _end_reason(self) -> str:
        if not self.several:
            return self.lanes[0].end_reason or self.grabber.stats.end_reason
        reasons = {lane.end_reason for lane in self.lanes}
        if len(reasons) == 1:
            return f"every source: {reasons.pop()}"
        return "every source ended (" + "; ".join(f"{i}: {lane.end_reason}" for i, lane in enumerate(self.lanes)) + ")"

    def _picture(self) -> np.ndarray:
        """What the window shows: the frame, or with several sources a grid of their last frames."""
        if not self.several:
            return self.lanes[0].picture
        return grid([lane.picture for lane in self.lanes])

    def _wait_ms(self) -> int:
        """How long the window waits after this frame so that frames come at realtime_fps."""
        now = time.monotonic()
        wait_s = max(0.0, self._next_show - now)
        self._next_show = max(self._next_show, now) + self._period_s
        return max(1, round(1000.0 * wait_s))

    def _process(self, lane: Lane, frame: Frame, detections: Detections, seconds: float) -> np.ndarray:
        rates = f"capture {frame.capture_fps:.1f} fps | inference {self.inference.per_second:.1f} fps"
        if self.several:
            rates = f"source {self.lanes.index(lane)} | {rates}"
        if lane.tracking is None:
            shown = _select(detections, self._shown(detections))
            annotated = draw_detections(frame.image, shown, status=rates)
            tracking_fields: dict[str, Any] = {}
        else:
            annotated, shown, tracking_fields = self._track(lane, frame, detections, rates)
        if lane.recorder is not None:
            lane.recorder.write(annotated)
        if lane.log is not None or self.observers:
            record = {**self._record(lane, frame, shown, seconds), **tracking_fields}
            if lane.log is not None:
                lane.log.write(record)
            index = self.lanes.index(lane)
            for observer in self.observers:
                observer.on_frame(index, annotated, record)
        return annotated

    def _shown(self, detections: Detections) -> np.ndarray | None:
        """Which detections score above score_threshold (None: all)."""
        if self.score_threshold is None:
            return None
        return np.asarray(detections.scores) > self.score_threshold

    def _track(self, lane: Lane, frame: Frame, detections: Detections,
               rates: str) -> tuple[np.ndarray, Detections, dict[str, Any]]:
        """The frame with its tracks drawn, the detections to log (those shown, and those a
        reported track took) and the log's tracking fields (tracking_ms: the tracker's time
        for this frame; tracks, each with its row in the logged detections; entered and
        left (see Presence); with a counting line, crossings and counts)."""
        tracking = lane.tracking
        begin = time.perf_counter()
        tracked = tracking.update(detections, frame=frame.index)
        seconds = time.perf_counter() - begin
        annotated = draw_tracks(frame.image, tracked.tracks, tracked.trails, status=rates,
                                line=tracking.line, counts=tracked.counts)
        keep = self._shown(detections)
        if keep is not None:
            taken = tracked.tracks.detection_index
            keep[taken] = True
            rows = np.cumsum(keep) - 1  # a kept detection's row among the kept ones
            tracked = tracked._replace(tracks=tracked.tracks._replace(detection_index=rows[taken]))
        fields = {"tracking_ms": round(1000.0 * seconds, 3), **tracking.record(tracked)}
        fields["entered"], fields["left"] = lane.presence.update(fields["tracks"], frame.index)
        return annotated, _select(detections, keep), fields

    def _record(self, lane: Lane, frame: Frame, detections: Detections, seconds: float) -> dict[str, Any]:
        record: dict[str, Any] = {"source": self.lanes.index(lane)} if self.several else {}
        record.update({
            "frame": lane.frames,
            "source_frame": frame.index,
            "time": round(time.time(), 3),  # wall clock when the detections were ready
            "latency_ms": round(1000.0 * (time.monotonic() - frame.timestamp), 2),  # since the frame was read
            "capture_fps": round(frame.capture_fps, 2),
            "inference_fps": round(self.inference.per_second, 2),
            "inference_ms": round(1000.0 * seconds, 3),  # the Detector call (the whole batch)
            "detections": detections.to_records(),
        })
        return record

    def _progress_line(self) -> str:
        if self.several:
            per_source = "; ".join(
                f"{i}: {lane.frames} done, {lane.grabber.stats.frames_read} read, {lane.grabber.stats.frames_dropped} "
                f"skipped, {lane.grabber.stats.reconnects} reconnections" + (" (ended)" if lane.end_reason else "")
                for i, lane in enumerate(self.lanes))
            return (f"frame {self.frames}: {self.inference.per_second:.1f} batches/s "
                    f"({1000.0 * self.inference.mean_s:.1f} ms); sources {per_source}")
        stats = self.grabber.stats
        return (f"frame {self.frames}: inference {self.inference.per_second:.1f} fps "
                f"({1000.0 * self.inference.mean_s:.1f} ms), {stats.frames_read} read, "
                f"{stats.frames_dropped} skipped, {stats.reconnects} reconnections")


def grid(pictures: Sequence[np.ndarray | None]) -> np.ndarray:
    """Several sources' pictures tiled (columns: ceil(sqrt(n))), each scaled into a cell the
    size of the first one there is; a source with no picture yet is a black cell."""
    first = next((p for p in pictures if p is not None), None)
    height, width = first.shape[:2] if first is not None else (240, 320)
    columns = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    canvas = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, picture in enumerate(pictures):
        if picture is None:
            continue
        if picture.shape[:2] != (height, width):
            picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
        row, column = divmod(i, columns)
        canvas[row * height:(row + 1) * height, column * width:(column + 1) * width] = picture
    return canvas


def close_observers(observers: Sequence[DemoObserver], status: Status) -> None:
    """Close every observer; one that fails is reported and does not keep the others open."""
    for observer in observers:
        try:
            observer.close()
        except Exception as exc:  # the demo's outputs matter more than an observer's shutdown
            status(f"closing {type(observer).__name__} failed: {type(exc).__name__}: {exc}")


def source_events(observers: Sequence[DemoObserver], index: int) -> Callable[[str, str], None]:
    """FrameGrabber's on_event for source `index`: handed to the observers that take source
    events (an optional `on_source(index, event, detail)`, e.g. the MQTT publisher), from the
    grabber's thread, so they must only enqueue."""
    takers = [observer.on_source for observer in observers if callable(getattr(observer, "on_source", None))]

    def on_event(event: str, detail: str) -> None:
        for take in takers:
            take(index, event, detail)

    return on_event


def run_demo(settings: DemoOptions, status: Status = lambda line: None,
             stop: threading.Event | None = None, observers: Sequence[DemoObserver] = ()) -> DemoSummary:
    """Open the sources and the model of `settings`, run the demo, finalise its outputs.
    status: receives progress lines; stop: an event that ends the demo (see DemoLoop);
    observers: see DemoLoop (closed however the demo ends, also when it fails to start)."""
    several = settings.several
    with contextlib.ExitStack() as stack:
        stack.callback(close_observers, observers, status)  # closing twice is harmless (DemoObserver.close)
        sources = [parse_source(text, settings.width, settings.height, settings.fps) for text in settings.sources]
        settings.check_outputs(sources)
        trackings = [_stream_tracking(settings, i) for i in range(len(sources))]  # a bad line ends it here
        firsts, fps, announced = [], [], []
        for i, source in enumerate(sources):
            first, attempt = open_capture(source, stop)  # a missing camera is the first thing to say
            stack.callback(first.release)  # the grabber releases it once started; twice is harmless
            firsts.append(first)
            name = f"source {i} ({source.text})" if several else f"source {source.text}"
            status(f"{name}: {attempt.describe()}")
            status(f"{'the source' if not several else name} delivers {describe_capture(first)}")
            fps.append(settings.fps or first.get(cv2.CAP_PROP_FPS))
            announced.append(int(first.get(cv2.CAP_PROP_FRAME_COUNT)))
        if not settings.headless:
            check_display()  # before the model, which can take a while to open
        detector, settings = _open_detector(settings, trackings[0])
        stack.enter_context(detector)
        status(f"model {settings.model}: {_describe_detector(detector)}")
        if trackings[0] is not None:
            status(f"detections scoring above {detector.config.score_threshold:g} go to the tracker, "
                   f"those above {settings.score_threshold:g} are logged as detections")
        wake = threading.Event() if several else None
        grabbers = [
            FrameGrabber(_reader_factory(source, first, stop), live=source.live, loop=settings.loop,
                         retry=settings.retry, notify=_prefixed(status, f"source {i}: ") if several else status,
                         read_timeout_s=STREAM_TIMEOUT_MS / 1000.0 if source.kind == "stream" else None,
                         wake=wake, on_event=source_events(observers, i))
            for i, (source, first) in enumerate(zip(sources, firsts))
        ]
        realtime = not sources[0].live
        summary = record_demo(detector, grabbers if several else grabbers[0], settings,
                              fps if several else fps[0], status, stop, realtime=realtime,
                              tracking=trackings if several else trackings[0], observers=observers, wake=wake,
                              texts=[source.text for source in sources])
    if several:
        for each, source, frames in zip(summary.sources, sources, announced):
            each.end_reason = _explain_end(each.end_reason, each.capture, source, frames, settings.loop)
    else:
        summary.end_reason = _explain_end(summary.end_reason, summary.capture, sources[0], announced[0], settings.loop)
    return summary


def _prefixed(status: Status, prefix: str) -> Status:
    return lambda line: status(prefix + line)


def record_demo(detector: Callable[[np.ndarray], Detections], grabber: FrameGrabber | Sequence[FrameGrabber],
                settings: DemoOptions, fps: float | Sequence[float | None] | None = None,
                status: Status = lambda line: None, stop: threading.Event | None = None, realtime: bool = False,
                tracking: StreamTracking | Sequence[StreamTracking | None] | None = None,
                observers: Sequence[DemoObserver] = (), wake: threading.Event | None = None,
                texts: Sequence[str] | None = None) -> DemoSummary:
    """Open the window and outputs `settings` asks for, start the grabber(s) and run the loop;
    whatever ends it, the grabbers are stopped and the videos and logs finalised. `fps` is
    the frame rate written into the video (default 30; with several grabbers, one per
    source) and, with `realtime` (a file source), the rate the window shows frames at;
    headless runs never wait. `tracking`: the StreamTracking to run (one per grabber;
    default: what `settings` asks for, if any). `detector` should keep what the tracker
    needs (see DemoOptions); `settings.score_threshold` filters the plain detections drawn
    and logged. Several grabbers: one per source of `settings`, sharing `wake` (see
    FrameGrabber); texts: the sources as given (status lines)."""
    grabbers = [grabber] if isinstance(grabber, FrameGrabber) else list(grabber)
    several = not isinstance(grabber, FrameGrabber)
    count = len(grabbers)
    if several and count != len(settings.sources):
        raise UsageError(f"record_demo: {count} grabbers for the {len(settings.sources)} sources of the settings")
    rates = list(fps) if isinstance(fps, (list, tuple)) else [fps] * count
    if tracking is None:  # before any output: a bad counting line ends the demo here
        trackings = [_stream_tracking(settings, i) for i in range(count)]
    else:
        trackings = list(tracking) if isinstance(tracking, (list, tuple)) else [tracking]
    with contextlib.ExitStack() as stack:
        stack.callback(close_observers, observers, status)  # also when an output fails to open
        window = None if settings.headless else stack.enter_context(Window())
        lanes = []
        for i, (each, rate, tracks) in enumerate(zip(grabbers, rates, trackings)):
            video_path, log_path = settings.output_paths(i if several else None)
            recorder = None
            if video_path:
                recorder = stack.enter_context(_recorder(video_path, rate, settings.segment_minutes))
            log = stack.enter_context(JsonLinesLog(log_path)) if log_path else None
            if recorder is not None:
                status(f"{f'source {i}: ' if several else ''}recording to {recorder.recording_path} and "
                       f"{log.recording_path if log else 'no log'} (renamed to {video_path} and {log_path} at the end)")
            lanes.append(Lane(each, tracks, recorder, log, text=texts[i] if texts else ""))
        if window is not None:
            status("window open: press q or Esc in it to quit")
        for lane in lanes:
            stack.callback(lane.grabber.stop)
            lane.grabber.start()
        realtime_fps = rates[0] if realtime and window is not None else None
        if several:
            loop = DemoLoop(detector, lanes, window=window, max_frames=settings.max_frames, realtime_fps=realtime_fps,
                            score_threshold=settings.score_threshold, status=status, stop=stop,
                            observers=observers, wake=wake)
        else:
            lane = lanes[0]
            loop = DemoLoop(detector, lane.grabber, recorder=lane.recorder, log=lane.log, window=window,
                            max_frames=settings.max_frames, realtime_fps=realtime_fps, tracking=lane.tracking,
                            score_threshold=settings.score_threshold, status=status, stop=stop, observers=observers)
        summary = loop.run()
    finished = [(lane.recorder.close() if lane.recorder else None, lane.log.close() if lane.log else None)
                for lane in lanes]
    if several:
        for each, (video, log) in zip(summary.sources, finished):
            each.video, each.log = video, log
    else:
        summary.video, summary.log = finished[0]
    return summary


def _stream_tracking(settings: DemoOptions, index: int = 0) -> StreamTracking | None:
    """The tracker the settings ask for source `index` (its own counting line), or None."""
    if not settings.tracking:
        return None
    from ssd_edge.runtime.tracking import StreamTracking, Tracker

    return StreamTracking(Tracker(settings.tracker), line=settings.line_of(index))


def _recorder(path: Path, fps: float | None, segment_minutes: float | None) -> VideoRecorder | SegmentedRecorder:
    """The video recorder of `path`: one file, or with segment_minutes a new finalised file
    every that many minutes (SegmentedRecorder: <stem>.<start time><suffix>)."""
    if segment_minutes is None:
        return VideoRecorder(path, fps)
    return SegmentedRecorder(path, fps, 60.0 * segment_minutes)


def _open_detector(settings: DemoOptions, tracking: StreamTracking | None) -> tuple[Detector, DemoOptions]:
    """The Detector for `settings` and the settings with the score threshold of the plain
    detections filled in. Without tracking the Detector runs at settings.score_threshold.
    With tracking it runs at the lower of that and the tracker's low score (the model's
    own threshold standing in for None), so that the tracker gets its low-score band."""
    def open_at(score_threshold: float | None) -> Detector:
        return Detector(settings.model, backend=settings.backend, options=dict(settings.backend_options),
                        score_threshold=score_threshold, iou_threshold=settings.iou_threshold,
                        agnostic_nms=settings.agnostic_nms)

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


def _explain_end(end_reason: str, capture: CaptureStats, source: Source, announced_frames: int, loop: bool) -> str:
    read = capture.frames_read
    if source.kind == "file" and not loop and end_reason == "end of file" and 0 < read < announced_frames:
        return f"end of file after {read} of the {announced_frames} frames the file announces (it may be truncated)"
    return end_reason
