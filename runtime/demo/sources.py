"""Video sources for the demo: what the user types (`0`, `/dev/video0`, `csi://0`,
`rtsp://...`, a file) turned into the OpenCV captures to try, and opening them.

    source = parse_source("csi://0", width=1280, height=720, fps=30)
    capture, attempt = open_capture(source)      # CameraError lists every attempt on failure

Opening runs in a helper thread while the caller waits, so that a stream that accepts the
connection and never answers fails after STREAM_TIMEOUT_MS whichever backend OpenCV tries
(all attempts together), and a stop event (SIGTERM, Ctrl-C) ends the wait at once.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2

from ssd_edge.common.errors import SSDEdgeError, UsageError
from ssd_edge.runtime.demo.gstreamer import csi_pipeline, require_gstreamer

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
STREAM_TIMEOUT_MS = 5000  # open and read timeouts of network streams, so a dead one fails instead of hanging
STOP_POLL_S = 0.05  # how often a wait for a source looks at the stop event
CSI_DEFAULT_SIZE = (1280, 720)
CSI_DEFAULT_FPS = 30

SOURCE_FORMS = ("a camera index (0), a V4L2 device (/dev/video0), a Jetson CSI camera (csi://0), "
                "a stream (rtsp://...), a video file or an image sequence (frames/%06d.jpg)")
SEQUENCE_PATTERN = re.compile(r"%0?\d*d")  # printf-style frame number of an image sequence
SEQUENCE_FIRST = 5  # the sequence's first number is one of 0..4 (as OpenCV's CAP_IMAGES looks)

HINTS = {
    "camera": "Check that the camera is plugged in (`ls /dev/video*` on Linux), that no other program holds it, "
              "and that your user may read it (the 'video' group)",
    "csi": "Check the ribbon cable and the sensor id, and that nvargus-daemon runs "
           "(`sudo systemctl restart nvargus-daemon`)",
    "stream": "Check the URL and its credentials, and that the stream is reachable from this machine",
    "pipeline": "Run the pipeline with `gst-launch-1.0` to see GStreamer's own error",
    "file": "The file may be damaged or use a codec this OpenCV cannot decode",
    "sequence": "Check that the pattern's numbers match the files (frames/%06d.jpg: frames/000000.jpg, ...)",
}


class CameraError(SSDEdgeError, RuntimeError):
    """A video source that cannot be opened (the message lists what was tried)."""


class OpenInterrupted(CameraError):
    """The stop event was set while a source was opening."""

    exit_code = 130


@dataclass(frozen=True)
class Attempt:
    """One way to open a source: cv2.VideoCapture(target, api, params)."""

    target: str | int
    api: int
    api_name: str
    params: tuple[int, ...] = ()

    def describe(self) -> str:
        what = f"GStreamer pipeline '{self.target}'" if self.api_name == "CAP_GSTREAMER" else repr(self.target)
        return f"{what} via cv2.{self.api_name}"


@dataclass(frozen=True)
class Source:
    """A parsed source. kind: camera | csi | stream | pipeline | file | sequence (numbered
    image files). A live source (everything but a file or a sequence) is reconnected when
    it drops out; a file or a sequence ends."""

    text: str
    kind: str
    attempts: tuple[Attempt, ...]
    size: tuple[int, int] | None = None  # (width, height) to ask a camera for
    fps: float | None = None

    @property
    def live(self) -> bool:
        return self.kind not in ("file", "sequence")

    def input_files(self) -> list[Path]:
        """The files this source reads (outputs must not replace them)."""
        if self.kind == "file":
            return [Path(self.text)]
        if self.kind == "sequence":
            return _sequence_files(self.text)
        return []

    @property
    def needs_gstreamer(self) -> bool:
        return all(a.api_name == "CAP_GSTREAMER" for a in self.attempts)


def parse_source(text: str | int, width: int | None = None, height: int | None = None,
                 fps: float | None = None) -> Source:
    """What to try for a source given as on the command line; see SOURCE_FORMS."""
    text = str(text).strip()
    if (width is None) != (height is None):
        raise UsageError(f"give both width and height, or neither (got width={width}, height={height})")
    size = (width, height) if width is not None else None
    if text.isdigit():
        return Source(text, "camera", _camera_attempts(int(text)), size, fps)
    if text.startswith("/dev/"):
        return Source(text, "camera", _device_attempts(text), size, fps)
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() == "csi":
        return _csi_source(text, rest, size, fps)
    if sep and scheme.lower() in STREAM_SCHEMES:
        return Source(text, "stream", _stream_attempts(text), size, fps)
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise UsageError(f"source {text!r}: unknown scheme '{scheme}://'; give {SOURCE_FORMS}")
    if text.startswith("gst:") or " ! " in text:
        pipeline = text[4:].strip() if text.startswith("gst:") else text
        return Source(text, "pipeline", (Attempt(pipeline, cv2.CAP_GSTREAMER, "CAP_GSTREAMER"),), size, fps)
    if SEQUENCE_PATTERN.search(Path(text).name):
        return _sequence_source(text)
    return _file_source(text)


def _camera_attempts(index: int) -> tuple[Attempt, ...]:
    any_backend = Attempt(index, cv2.CAP_ANY, "CAP_ANY")
    if sys.platform.startswith("linux"):
        return (Attempt(index, cv2.CAP_V4L2, "CAP_V4L2"), any_backend)
    return (any_backend,)  # DirectShow / Media Foundation / AVFoundation, chosen by OpenCV


def _device_attempts(path: str) -> tuple[Attempt, ...]:
    attempts = [Attempt(path, cv2.CAP_V4L2, "CAP_V4L2")]
    match = re.fullmatch(r"/dev/video(\d+)", path)
    if match:
        attempts.append(Attempt(int(match.group(1)), cv2.CAP_V4L2, "CAP_V4L2"))
    return tuple(attempts)


def _stream_attempts(url: str) -> tuple[Attempt, ...]:
    timeouts = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS)
    return (Attempt(url, cv2.CAP_FFMPEG, "CAP_FFMPEG", timeouts), Attempt(url, cv2.CAP_ANY, "CAP_ANY"))


def _csi_source(text: str, rest: str, size: tuple[int, int] | None, fps: float | None) -> Source:
    if not rest.isdigit():
        raise UsageError(f"source {text!r}: a CSI camera is csi://N with N the sensor id (csi://0)")
    width, height = size or CSI_DEFAULT_SIZE
    rate = int(round(fps)) if fps else CSI_DEFAULT_FPS
    pipeline = csi_pipeline(int(rest), width, height, rate)
    # the pipeline sets size and rate itself; nothing is asked of the capture afterwards
    return Source(text, "csi", (Attempt(pipeline, cv2.CAP_GSTREAMER, "CAP_GSTREAMER"),), None, None)


def _file_source(text: str) -> Source:
    path = Path(text)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CameraError(f"source {text!r}: {what}; give {SOURCE_FORMS}")
    attempts = (Attempt(str(path), cv2.CAP_FFMPEG, "CAP_FFMPEG"), Attempt(str(path), cv2.CAP_ANY, "CAP_ANY"))
    return Source(text, "file", attempts)


def _sequence_files(pattern: str, limit: int = 100_000) -> list[Path]:
    """The files of an image sequence, from its first number (0..SEQUENCE_FIRST-1) on while
    they exist."""
    def name(number: int) -> Path:
        return Path(SEQUENCE_PATTERN.sub(lambda m: m.group(0) % number, pattern, count=1))

    first = next((n for n in range(SEQUENCE_FIRST) if name(n).is_file()), None)
    files = []
    while first is not None and len(files) < limit and name(first + len(files)).is_file():
        files.append(name(first + len(files)))
    return files


def _sequence_source(text: str) -> Source:
    if not _sequence_files(text, limit=1):
        raise CameraError(f"source {text!r}: no image of this sequence exists (its first number is "
                          f"0 to {SEQUENCE_FIRST - 1}); give {SOURCE_FORMS}")
    return Source(text, "sequence", (Attempt(text, cv2.CAP_IMAGES, "CAP_IMAGES"),))


def open_capture(source: Source, stop: threading.Event | None = None) -> tuple[cv2.VideoCapture, Attempt]:
    """Open `source` with the first attempt that works; CameraError lists every failed
    one. A stream gets STREAM_TIMEOUT_MS for all its attempts together; OpenInterrupted
    when `stop` is set meanwhile (checked every STOP_POLL_S)."""
    if source.needs_gstreamer:
        require_gstreamer(f"source {source.text!r}")
    deadline = time.monotonic() + STREAM_TIMEOUT_MS / 1000.0 if source.kind == "stream" else None
    failures = []
    for attempt in source.attempts:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            failures.append(f"{attempt.describe()}: not tried, the {STREAM_TIMEOUT_MS / 1000:g} s timeout was spent")
            continue
        capture, problem = _try_open(attempt, remaining, stop)
        if capture is not None:
            _ask_capture_format(capture, source)
            return capture, attempt
        failures.append(f"{attempt.describe()}: {problem}")
    tried = "; ".join(failures)
    raise CameraError(f"cannot open source {source.text!r}. Tried: {tried}. {HINTS[source.kind]}.")


def _try_open(attempt: Attempt, timeout_s: float | None = None,
              stop: threading.Event | None = None) -> tuple[cv2.VideoCapture | None, str]:
    """cv2.VideoCapture for `attempt`, opened in a helper thread; (None, why) when it does
    not open or takes longer than `timeout_s` (the capture is then released by the helper
    once OpenCV returns)."""
    result: list = []
    abandoned = threading.Event()
    done = threading.Event()

    def work() -> None:
        capture, problem = _open_now(attempt)
        result.extend((capture, problem))
        done.set()
        if abandoned.is_set() and capture is not None:
            capture.release()

    threading.Thread(target=work, name="open-source", daemon=True).start()
    waited = 0.0
    while not done.wait(STOP_POLL_S):
        waited += STOP_POLL_S
        if stop is not None and stop.is_set():
            _abandon(abandoned, done, result)
            raise OpenInterrupted(f"stopped while opening {attempt.describe()}")
        if timeout_s is not None and waited >= timeout_s:
            _abandon(abandoned, done, result)
            return None, f"no answer in {timeout_s:.1f} s"
    return result[0], result[1]


def _abandon(abandoned: threading.Event, done: threading.Event, result: list) -> None:
    """Leave an open that takes too long to its thread; release it if it finished meanwhile."""
    abandoned.set()
    if done.is_set() and result and result[0] is not None:
        result[0].release()


def _open_now(attempt: Attempt) -> tuple[cv2.VideoCapture | None, str]:
    with quiet_opencv():
        try:
            capture = cv2.VideoCapture(attempt.target, attempt.api, list(attempt.params))
        except cv2.error as exc:
            return None, f"OpenCV error: {str(exc).strip().splitlines()[-1]}"
        if capture.isOpened():
            return capture, ""
        capture.release()
    return None, "did not open"


def _ask_capture_format(capture: cv2.VideoCapture, source: Source) -> None:
    if source.kind != "camera":
        return
    if source.size is not None:
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, source.size[0])
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, source.size[1])
    if source.fps:
        capture.set(cv2.CAP_PROP_FPS, source.fps)


def describe_capture(capture: cv2.VideoCapture) -> str:
    """What an opened capture delivers, e.g. '640x480 at 30.0 fps (backend V4L2)'."""
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    rate = f"{fps:.1f} fps" if fps and fps > 0 else "an unknown frame rate"
    try:
        backend = f" (backend {capture.getBackendName()})"
    except cv2.error:
        backend = ""
    return f"{width}x{height} at {rate}{backend}"


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log while trying captures: the failures are reported by us."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None:
        yield
        return
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_api.setLogLevel(previous)
