"""What the demo records: the annotated video and a JSON-lines log.

Both survive a hard kill (`kill -9`, the OOM killer, a power cut) up to their last moments:

- The log is written, line by line, to a visible `<stem>.recording.jsonl` beside its
  target and renamed over the target when closed.
- The video is also written to a visible `<stem>.recording.avi`: Motion-JPEG in AVI by
  OpenCV's own writer, a container every frame of which stands alone, so a file cut off
  anywhere still plays up to where it was cut (FFmpeg and OpenCV read it without its
  index). An `.avi` target is that file, renamed into place when closed. Any other target
  (.mp4, ...) is written as well, to a hidden temporary file renamed over the target when
  closed (an MP4 is unplayable until finalised); the `.recording.avi` is then removed.
- Both recordings are flushed to the disk every SYNC_EVERY_S seconds.

After a hard kill, then, `<stem>.recording.avi` plays up to the last frames the writer
still held in memory (about ten frames; tests/test_demo_kill.py measures it) and
`<stem>.recording.jsonl` holds every frame's line but the one being written. A target is
never left half-written: it appears only when complete. A recording file never replaces
an existing file: when the name is taken it becomes `<stem>.recording_N`. The unplayable
hidden temporary MP4 a killed run leaves is removed by the next recording of that target.

Memory: the video writers keep their container's index in memory until the file is
closed (FFmpeg's MP4 sample table, OpenCV's AVI frame index), so a recording's resident
memory grows with its length, about 0.1 MiB per 1000 frames for an .mp4 target with its
.recording.avi copy (benchmarks/results/soak_demo_*.md), and is freed at close().
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ssd_edge.common.atomic import PartialFile, remove_stale_partials
from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.common.output_paths import unique_name

# container suffix -> FourCC; MJPG in .avi is built into OpenCV and needs no FFmpeg/GStreamer encoder
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_FPS = 30.0
SYNC_EVERY_S = 2.0
QUEUE_FRAMES = 4  # frames waiting for the encoders before VideoRecorder.write waits too
RECORDING_MARK = ".recording"


class RecordingError(SSDEdgeError, OSError):
    """An output file cannot be written (the message names it and says what to change)."""


def _check_folder(target: Path) -> None:
    folder = target.parent
    if not folder.is_dir():
        raise RecordingError(f"{target}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise RecordingError(f"{target}: the directory {folder} is not writable")


def _partial_file(path: str | os.PathLike) -> PartialFile:
    try:
        return PartialFile(path)
    except OSError as exc:  # a missing or read-only output directory
        raise RecordingError(str(exc)) from None


class RecordingFile:
    """A visible file `<stem>.recording<suffix>` beside `target`, never an existing file
    (`_N` added when the name is taken): written while recording, so a hard kill leaves
    it to the user; `commit()` renames it over `target`, `discard()` removes it."""

    def __init__(self, target: str | os.PathLike, suffix: str | None = None) -> None:
        self.target = Path(target)
        _check_folder(self.target)
        suffix = self.target.suffix if suffix is None else suffix
        name = unique_name(f"{self.target.stem}{RECORDING_MARK}{suffix}", (),
                           lambda n: not (self.target.parent / n).exists())
        self.path = self.target.parent / name
        try:
            self.path.touch(exist_ok=False)
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot be created ({exc.strerror or exc})") from None

    def commit(self) -> Path:
        sync_file(self.path)
        os.replace(self.path, self.target)
        return self.target

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def sync_file(path: Path) -> None:
    """Ask the operating system to put what was written to `path` on the disk."""
    try:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    except OSError:
        pass  # a file system without fsync: the data is still in the OS's hands


class _Writer:
    """One cv2.VideoWriter, opened by `open` at the first frame's size."""

    def __init__(self, path: Path, fourcc: str, fps: float, api: int, shown: Path) -> None:
        self.path, self.fourcc, self.fps, self.api, self.shown = path, fourcc, fps, api, shown
        self.writer: cv2.VideoWriter | None = None

    def open(self, size: tuple[int, int]) -> None:
        writer = cv2.VideoWriter(str(self.path), self.api, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
        if not writer.isOpened():
            raise RecordingError(
                f"{self.shown}: this OpenCV cannot write {self.shown.suffix} video with codec {self.fourcc}; "
                "try an .avi output (MJPG, built into OpenCV)"
            )
        self.writer = writer

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)

    def release(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class _EncoderThread:
    """Encodes and writes frames in a thread of its own (OpenCV lets go of the GIL while it
    encodes), so that the demo's loop does not wait for the encoder unless QUEUE_FRAMES
    frames are already waiting. `sync` is called after each frame, in that thread."""

    def __init__(self, writer: _Writer, sync=lambda: None) -> None:
        self.writers, self.sync = [writer], sync
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="video-recorder", daemon=True)
        self.thread.start()

    def put(self, image: np.ndarray) -> None:
        if self.error is not None:
            raise RecordingError(f"writing the video failed: {self.error}") from self.error
        self.queue.put(image)

    def finish(self) -> None:
        """Write what is queued, end the thread, release the writers."""
        self.queue.put(None)
        self.thread.join()
        for writer in self.writers:
            writer.release()

    def _run(self) -> None:
        while True:
            image = self.queue.get()
            if image is None:
                return
            if self.error is not None:
                continue  # drain: the error is reported by the next put
            try:
                for writer in self.writers:
                    writer.write(image)
                self.sync()
            except Exception as exc:  # reported to the caller by put()
                self.error = exc


class VideoRecorder:
    """Writes BGR frames to `path` (see the module docstring for what a hard kill leaves);
    the writers open at the first frame (its size sets the video's; later frames of
    another size are resized to it). `close()` finalises the video and returns its path,
    or None (and no file) when no frame was written."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None) -> None:
        path = Path(path)
        if path.suffix.lower() not in VIDEO_CODECS:
            choices = ", ".join(VIDEO_CODECS)
            raise RecordingError(f"{path}: cannot tell the video format from '{path.suffix}'; use one of {choices}")
        _check_folder(path)
        self.fourcc = VIDEO_CODECS[path.suffix.lower()]
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        self.frames = 0
        self._target = path
        self._recording = RecordingFile(path, ".avi")
        self._writers = [_Writer(self._recording.path, "MJPG", self.fps, cv2.CAP_OPENCV_MJPEG, path)]
        self._partial: PartialFile | None = None
        if path.suffix.lower() != ".avi":
            remove_stale_partials(path)
            self._partial = _partial_file(path)
            self._writers.append(_Writer(self._partial.path, self.fourcc, self.fps, cv2.CAP_ANY, path))
        self._size: tuple[int, int] | None = None
        self._encoders: list[_EncoderThread] = []
        self._synced = time.monotonic()
        self._closed = False
        self._result: Path | None = None

    @property
    def path(self) -> Path:
        return self._target

    @property
    def recording_path(self) -> Path:
        """The visible file that holds the video while it is recorded (what a hard kill leaves)."""
        return self._recording.path

    def write(self, image: np.ndarray) -> None:
        """Queue a copy of `image` (BGR uint8 (H, W, 3)) for the encoders; the writers open
        (RecordingError here when they cannot) at the first frame."""
        if self._closed:
            raise RecordingError(f"{self.path}: the video is already closed")
        if self._size is None:
            size = (image.shape[1], image.shape[0])
            for writer in self._writers:
                writer.open(size)
            self._size = size
            self._encoders = [_EncoderThread(self._writers[0], self._sync_now_and_then),
                              *(_EncoderThread(writer) for writer in self._writers[1:])]
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        else:
            image = image.copy()  # the caller may draw on its frame again
        for encoder in self._encoders:
            encoder.put(image)
        self.frames += 1

    def _sync_now_and_then(self) -> None:
        if time.monotonic() - self._synced >= SYNC_EVERY_S:
            sync_file(self._recording.path)
            self._synced = time.monotonic()

    def close(self) -> Path | None:
        if self._closed:
            return self._result
        self._closed = True
        for encoder in self._encoders:
            encoder.finish()
        for writer in self._writers:
            writer.release()
        if self.frames == 0:
            self._recording.discard()
            if self._partial is not None:
                self._partial.discard()
        elif self._partial is not None:
            self._result = self._partial.commit()
            self._recording.discard()
        else:
            self._result = self._recording.commit()
        errors = [encoder.error for encoder in self._encoders if encoder.error is not None]
        if errors:
            raise RecordingError(f"{self.path}: writing the video failed: {errors[0]}")
        return self._result

    def __enter__(self) -> "VideoRecorder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SegmentedRecorder:
    """A VideoRecorder that starts a new file every `segment_s` seconds of wall clock, so a
    24/7 recording never holds more than one segment's container index in memory and every
    finished segment is a finalised, playable file. Segments are named by their start time,
    `<stem>.<YYYYmmdd-HHMMSS><suffix>` beside `path` (names sort by time; `_N` added if a name
    is taken), each written as a VideoRecorder writes its file (what a hard kill leaves: the
    module docstring). `close()` finalises the last segment; `segments` lists those written."""

    def __init__(self, path: str | os.PathLike, fps: float | None, segment_s: float,
                 clock=time.time) -> None:
        if not segment_s > 0:
            raise RecordingError(f"{path}: a segment must last more than 0 seconds, got {segment_s}")
        self._target, self.fps, self.segment_s, self._clock = Path(path), fps, float(segment_s), clock
        VideoRecorder(self._target, fps).close()  # the format and folder checks, before any frame
        self.segments: list[Path] = []
        self.frames = 0
        self._current: VideoRecorder | None = None
        self._started = 0.0
        self._closed = False

    @property
    def path(self) -> Path:
        return self._target

    @property
    def recording_path(self) -> Path:
        """The file being written now (the first segment's, before any frame)."""
        return self._current.recording_path if self._current else self._segment_path(self._clock())

    def _segment_path(self, start: float) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(start))
        suffix = self._target.suffix
        name = unique_name(f"{self._target.stem}.{stamp}{suffix}", (),
                           lambda n: not (self._target.parent / n).exists())
        return self._target.parent / name

    def write(self, image: np.ndarray) -> None:
        if self._closed:
            raise RecordingError(f"{self.path}: the video is already closed")
        now = self._clock()
        if self._current is not None and now - self._started >= self.segment_s:
            self._finish_segment()
        if self._current is None:
            self._current, self._started = VideoRecorder(self._segment_path(now), self.fps), now
        self._current.write(image)
        self.frames += 1

    def _finish_segment(self) -> None:
        recorder, self._current = self._current, None
        written = recorder.close() if recorder is not None else None
        if written is not None:
            self.segments.append(written)

    def close(self) -> Path | None:
        """Finalise the last segment; the last segment's path (None when no frame came)."""
        if not self._closed:
            self._closed = True
            self._finish_segment()
        return self.segments[-1] if self.segments else None

    def __enter__(self) -> "SegmentedRecorder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JsonLinesLog:
    """One JSON object per line, flushed as written to `<stem>.recording.jsonl` (synced to
    the disk every SYNC_EVERY_S seconds); `close()` renames it into place."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._partial = RecordingFile(path)
        self._synced = time.monotonic()
        self._handle = open(self._partial.path, "w", encoding="utf-8")
        self.lines = 0
        self._result: Path | None = None

    @property
    def path(self) -> Path:
        return self._partial.target

    @property
    def recording_path(self) -> Path:
        """The visible file the log is written to until it is closed."""
        return self._partial.path

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        self.lines += 1
        if time.monotonic() - self._synced >= SYNC_EVERY_S:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()

    def close(self) -> Path | None:
        """Rename the log into place and return its path; None (and no file) when empty."""
        if not self._handle.closed:
            self._handle.close()
            if self.lines:
                self._result = self._partial.commit()
            else:
                self._partial.discard()
        return self._result

    def __enter__(self) -> "JsonLinesLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
