"""What the demo records: the annotated video and a JSON-lines log, each written to a
temporary file beside its target and renamed over it when closed, so a target is never
left half-written (a crash leaves only a `.NAME.*.partial` file behind)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ssd_edge.runtime.atomic import PartialFile
from ssd_edge.runtime.errors import SSDEdgeError

# container suffix -> FourCC; MJPG in .avi is built into OpenCV and needs no FFmpeg/GStreamer encoder
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_FPS = 30.0


class RecordingError(SSDEdgeError, OSError):
    """An output file cannot be written (the message names it and says what to change)."""


def _partial_file(path: str | os.PathLike) -> PartialFile:
    try:
        return PartialFile(path)
    except OSError as exc:  # a missing or read-only output directory
        raise RecordingError(str(exc)) from None


class VideoRecorder:
    """Writes BGR frames to `path`; the writer opens at the first frame (its size sets the
    video's; later frames of another size are resized to it). `close()` finalises the
    video and returns its path, or None when no frame was written."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None) -> None:
        path = Path(path)
        if path.suffix.lower() not in VIDEO_CODECS:
            choices = ", ".join(VIDEO_CODECS)
            raise RecordingError(f"{path}: cannot tell the video format from '{path.suffix}'; use one of {choices}")
        self.fourcc = VIDEO_CODECS[path.suffix.lower()]
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        self.frames = 0
        self._partial = _partial_file(path)
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._closed = False
        self._result: Path | None = None

    @property
    def path(self) -> Path:
        return self._partial.target

    def write(self, image: np.ndarray) -> None:
        if self._closed:
            raise RecordingError(f"{self.path}: the video is already closed")
        if self._writer is None:
            self._open(image.shape[1], image.shape[0])
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        writer = cv2.VideoWriter(str(self._partial.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not writer.isOpened():
            raise RecordingError(
                f"{self.path}: this OpenCV cannot write {self.path.suffix} video with codec {self.fourcc}; "
                "try an .avi output (MJPG, built into OpenCV)"
            )
        self._writer, self._size = writer, (width, height)

    def close(self) -> Path | None:
        if self._closed:
            return self._result
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0:
            self._partial.discard()
        else:
            self._result = self._partial.commit()
        return self._result

    def __enter__(self) -> "VideoRecorder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JsonLinesLog:
    """One JSON object per line, flushed as written; `close()` renames it into place."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._partial = _partial_file(path)
        self._handle = open(self._partial.path, "w", encoding="utf-8")
        self.lines = 0
        self._result: Path | None = None

    @property
    def path(self) -> Path:
        return self._partial.target

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        self.lines += 1

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
