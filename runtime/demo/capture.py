"""Reading a video source in its own thread.

A live source (camera, stream) is read as fast as it delivers and the consumer always gets
the newest frame: a slow model skips frames instead of building a backlog. When a live
source stops delivering, the grabber reconnects with exponential backoff and, once the
attempts are spent, ends. A file is handed over frame by frame (none skipped); at its end
the grabber ends, or starts the file again with `loop`.

    with FrameGrabber(lambda: open_capture(source)[0], live=source.live) as grabber:
        while not grabber.finished:
            frame = grabber.get(timeout=0.1)    # None: nothing new yet, or the end
            if frame is not None:
                ...
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import cv2
import numpy as np

from ssd_edge.common.errors import UsageError
from ssd_edge.runtime.demo.rates import RateMeter
from ssd_edge.runtime.demo.sources import CameraError

JOIN_TIMEOUT_S = 1.0  # a read blocked inside a driver is left to its daemon thread after this (SIGTERM stops fast)
POLL_S = 0.05  # how often a wait for a frame looks at the stop event


class Reader(Protocol):
    """What the grabber reads from: cv2.VideoCapture, or anything with the same two calls."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


class TimedReader:
    """A Reader whose read() gives up after `timeout_s` (or as soon as `stop` is set) and
    then reports no frame, so a stream that stalls mid-run counts as dropped out after the
    stated timeout, however long the backend itself would block. Reads run in a helper
    thread; a read that was given up on is left to it, and the capture is released there
    once OpenCV returns."""

    def __init__(self, reader: Reader, timeout_s: float, stop: threading.Event | None = None) -> None:
        self.reader, self.timeout_s = reader, timeout_s
        self._stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._ready = threading.Event()
        self._result: tuple[bool, np.ndarray | None] = (False, None)
        self._busy = False  # a read is under way in the helper
        self._released = False
        self._thread = threading.Thread(target=self._serve, name="timed-read", daemon=True)
        self._thread.start()

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self._lock:
            if self._released or self._busy:  # a read given up on earlier still blocks
                return False, None
            self._ready.clear()
            self._busy = True
            self._wanted.set()
        deadline = time.monotonic() + self.timeout_s
        while not self._ready.wait(POLL_S):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return False, None
        return self._result

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            busy = self._busy
            self._wanted.set()  # wakes the helper so that it ends
        if not busy:
            self.reader.release()
        # else: the helper releases the reader when its read returns

    def _serve(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self._lock:
                if self._released and not self._busy:
                    return
            result = self.reader.read()
            with self._lock:
                self._result, self._busy = result, False
                self._ready.set()
                if self._released:
                    self.reader.release()
                    return


@dataclass(frozen=True)
class RetryPolicy:
    """Reconnection of a live source: `attempts` tries, waiting first_delay_s, then
    `factor` times longer each time, at most max_delay_s. The count starts again after a
    frame arrives, so a source that comes back and drops out later gets every attempt."""

    attempts: int = 5
    first_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.first_delay_s < 0 or self.factor < 1 or self.max_delay_s < 0:
            raise UsageError(f"invalid retry policy {self}: attempts and delays must be >= 0 and factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (0-based)."""
        return min(self.first_delay_s * self.factor**attempt, self.max_delay_s)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR uint8, owned by the consumer once handed over
    index: int  # frames read from the source before this one (all opens together)
    timestamp: float  # time.monotonic() when it was read
    capture_fps: float  # the rate frames were arriving at


@dataclass
class CaptureStats:
    frames_read: int = 0
    frames_dropped: int = 0  # read but replaced by a newer one before the consumer took them
    reconnects: int = 0
    loops: int = 0
    end_reason: str = ""
    source_lost: bool = False  # a live source that did not come back


class FrameGrabber:
    """Owns a Reader and the thread that reads it; see the module docstring.

    open_reader: makes a fresh Reader (called at start, on reconnection and to loop a file;
    it raises CameraError when the source cannot be opened). notify: receives one line per
    event worth telling the user (drop-out, reconnection attempts, loop). read_timeout_s:
    a live source that delivers no frame for this long counts as dropped out (see
    TimedReader); None waits as long as the backend does. wake: set whenever a frame is
    ready or the source ended (one event shared by several grabbers lets a consumer wait
    for whichever delivers first). on_event: called from the reader thread with
    ("dropped", line) when a live source stops delivering, ("reconnected", line),
    ("lost", reason) when the attempts are spent and ("ended", reason) when reading ends
    (after "lost" too); it must return at once.
    """

    def __init__(self, open_reader: Callable[[], Reader], *, live: bool, loop: bool = False,
                 retry: RetryPolicy = RetryPolicy(), notify: Callable[[str], None] = lambda line: None,
                 read_timeout_s: float | None = None, wake: threading.Event | None = None,
                 on_event: Callable[[str, str], None] = lambda event, detail: None) -> None:
        self._wake = wake
        self._on_event = on_event
        self._read_timeout_s = read_timeout_s if live else None
        self._open_reader = open_reader
        self.live = live
        self.loop = loop
        self.retry = retry
        self._notify = notify
        self.stats = CaptureStats()
        self._rate = RateMeter()
        self._slot: Frame | None = None
        self._ended = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._frames_this_open = 0

    # -- consumer side -------------------------------------------------------------
    def start(self) -> "FrameGrabber":
        """Open the source (CameraError raises here, in the caller's thread) and start reading."""
        reader = self._open()
        self._thread = threading.Thread(target=self._run, args=(reader,), name="frame-grabber", daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame (live: the newest), or None after `timeout` or once the source ended."""
        with self._cond:
            if self._slot is None and not self._ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            self._cond.notify_all()  # a file reader waits for the slot to empty
            return frame

    @property
    def finished(self) -> bool:
        """The source ended (or was stopped) and every frame read was handed over or dropped."""
        with self._cond:
            return self._ended and self._slot is None

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)

    def __enter__(self) -> "FrameGrabber":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- reader thread -------------------------------------------------------------
    def _open(self) -> Reader:
        reader = self._open_reader()
        if self._read_timeout_s is not None:
            return TimedReader(reader, self._read_timeout_s, self._stop)
        return reader

    def _run(self, reader: Reader | None) -> None:
        try:
            while reader is not None and not self._stop.is_set():
                ok, image = reader.read()
                if ok and image is not None:
                    self._publish(image)
                    continue
                reader.release()
                reader = self._after_last_frame()
        except Exception as exc:  # reported through stats; the consumer ends cleanly
            self.stats.end_reason = f"reading the source failed: {type(exc).__name__}: {exc}"
        finally:
            if reader is not None:
                reader.release()
            if not self.stats.end_reason:
                self.stats.end_reason = "stopped"
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            if self._wake is not None:
                self._wake.set()
            self._on_event("ended", self.stats.end_reason)

    def _publish(self, image: np.ndarray) -> None:
        now = time.monotonic()
        self._rate.tick(now)
        frame = Frame(image, self.stats.frames_read, now, self._rate.rate)
        self.stats.frames_read += 1
        self._frames_this_open += 1
        self._failures = 0
        with self._cond:
            if not self.live:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif self._slot is not None:
                self.stats.frames_dropped += 1
            self._slot = frame
            self._cond.notify_all()
        if self._wake is not None:
            self._wake.set()

    def _after_last_frame(self) -> Reader | None:
        """The reader gave no frame: the next reader to read, or None to end."""
        if self._stop.is_set():
            return None
        if self.live:
            return self._reconnect()
        if self.loop and self._frames_this_open > 0:
            self.stats.loops += 1
            self._frames_this_open = 0
            return self._open()
        self.stats.end_reason = "end of file"
        return None

    def _reconnect(self) -> Reader | None:
        line = f"source stopped delivering frames after {self.stats.frames_read} frames; reconnecting"
        self._notify(line)
        self._on_event("dropped", line)
        while self._failures < self.retry.attempts:
            delay = self.retry.delay(self._failures)
            self._failures += 1
            self._notify(f"reconnection attempt {self._failures}/{self.retry.attempts} in {delay:.1f} s")
            if self._stop.wait(delay):
                return None
            try:
                reader = self._open()
            except (CameraError, cv2.error) as exc:
                self._notify(f"reconnection attempt {self._failures}/{self.retry.attempts} failed: {exc}")
                continue
            self.stats.reconnects += 1
            self._frames_this_open = 0
            self._notify("source reopened")
            self._on_event("reconnected", f"source reopened after {self.stats.reconnects} reconnection(s)")
            return reader
        self.stats.source_lost = True
        self.stats.end_reason = f"source lost: no frames after {self.retry.attempts} reconnection attempts"
        self._on_event("lost", self.stats.end_reason)
        return None
