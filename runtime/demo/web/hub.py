"""`FrameHub`: what the web viewer serves, kept apart from the demo loop.

The loop hands over each processed frame (`on_frame`, on its own thread): the hub keeps per
source the newest record and, only while someone watches that source's video, the newest
picture (at most `video_fps` pictures a second; a copy, as the observer contract asks). One
encoder thread turns each kept picture into a JPEG once; every viewer of that source sends
that same JPEG. Nothing the loop calls waits on a viewer: a viewer that cannot keep up finds
a newer JPEG when it is ready again (the frames in between are dropped for it alone).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ssd_edge.runtime.demo.rates import RateMeter

RECENT_CROSSINGS = 20  # crossings kept per source for the page (events between two pushes are not lost)
SOURCE_STATES = {"dropped": "reconnecting", "reconnected": "live", "lost": "lost", "ended": "ended"}


@dataclass
class _Source:
    """One source's newest data; read and written under FrameHub's lock."""

    frames: int = 0
    record: dict[str, Any] | None = None
    received: float = 0.0  # time.monotonic() of the newest record
    rate: RateMeter = field(default_factory=lambda: RateMeter(window=30))
    crossings: deque = field(default_factory=lambda: deque(maxlen=RECENT_CROSSINGS))
    watchers: int = 0  # video viewers (and snapshots) waiting for JPEGs
    raw: np.ndarray | None = None  # a picture waiting for the encoder
    raw_seq: int = 0
    taken_at: float = float("-inf")  # when the newest picture was kept (video_fps limit)
    jpeg: bytes | None = None
    jpeg_seq: int = 0  # the frame number (frames) the JPEG shows
    size: tuple[int, int] | None = None  # (width, height) of the pictures
    health: dict[str, Any] | None = None  # the newest capture event: state, event, detail, time


class FrameHub:
    """Newest records and pictures per source, and the encoder thread (started here,
    stopped by close()). video_fps: pictures kept per second and source, at most;
    jpeg_quality: 1-100."""

    def __init__(self, video_fps: float = 25.0, jpeg_quality: int = 80) -> None:
        self._period_s = 1.0 / video_fps
        self._jpeg_params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        self._lock = threading.Lock()
        self._pictures = threading.Condition(self._lock)  # the encoder waits here for new pictures
        self._jpegs = threading.Condition(self._lock)  # video viewers wait here for new JPEGs
        self._sources: dict[int, _Source] = {}
        self._closed = False
        self.state_seq = 0  # changes with every record (viewers poll it)
        self.encoded = 0
        self.encode_s = 0.0
        self._encoder = threading.Thread(target=self._encode_loop, name="ssd-demo-web-encoder", daemon=True)
        self._encoder.start()

    # -- the loop's side: returns at once -------------------------------------------------------

    def on_frame(self, source: int, image: np.ndarray, record: dict[str, Any]) -> None:
        now = time.monotonic()
        current = self._sources.get(source)
        picture = None
        if current is not None and current.watchers and now - current.taken_at >= self._period_s:
            picture = image.copy()  # outside the lock: the encoder never waits for the copy
        with self._lock:
            state = self._sources.get(source)
            if state is None:
                state = self._sources[source] = _Source()
            state.frames += 1
            state.record, state.received = record, now
            state.rate.tick(now)
            if record.get("crossings"):
                state.crossings.extend(record["crossings"])
            self.state_seq += 1
            if picture is not None:
                state.raw, state.raw_seq, state.taken_at = picture, state.frames, now
                self._pictures.notify()

    def on_source(self, source: int, event: str, detail: str) -> None:
        """A capture event of the source (dropped, reconnected, lost, ended), from its grabber's
        thread: shown with the source until the next one."""
        with self._lock:
            state = self._sources.setdefault(source, _Source())
            state.health = {"state": SOURCE_STATES.get(event, event), "event": event, "detail": detail,
                            "time": round(time.time(), 3)}
            self.state_seq += 1

    # -- the viewers' side ----------------------------------------------------------------------

    def sources(self) -> list[int]:
        with self._lock:
            return sorted(self._sources)

    def watch(self, source: int) -> "_Watch":
        """A context in which the source's pictures are kept and encoded (a video viewer)."""
        return _Watch(self, source)

    def wait_jpeg(self, source: int, after: int, timeout: float) -> tuple[bytes, int] | None:
        """The source's newest JPEG and its frame number once it is newer than frame `after`;
        None after `timeout` seconds, or at once when the hub is closed."""
        with self._jpegs:
            state = self._sources[source]
            if not self._jpegs.wait_for(lambda: self._closed or state.jpeg_seq > after, timeout):
                return None
            return None if self._closed else (state.jpeg, state.jpeg_seq)

    def snapshot(self, source: int, timeout: float = 2.0) -> bytes | None:
        """A JPEG of the source's newest frame when a viewer's JPEG shows it, else of the next
        frame (kept and encoded for this), or None when none comes within `timeout` seconds."""
        with self.watch(source):
            with self._lock:
                state = self._sources[source]
                if state.jpeg is not None and state.jpeg_seq == state.frames:
                    return state.jpeg
                after = state.jpeg_seq
            found = self.wait_jpeg(source, after=after, timeout=timeout)
            return found[0] if found else None

    def state(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What /api/state and the event stream send: per source its newest record, its
        processed frames, their rate here, the age of the record, its newest capture event
        (health; None while it has had none) and recent crossings."""
        now = time.monotonic()
        with self._lock:
            sources = [
                {"source": number, "frames": s.frames, "fps": round(s.rate.rate, 2),
                 "age_s": round(now - s.received, 3) if s.frames else None,
                 "size": list(s.size) if s.size else None, "health": s.health,
                 "recent_crossings": list(s.crossings), "record": s.record}
                for number, s in sorted(self._sources.items())
            ]
            encoded, encode_s = self.encoded, self.encode_s
        return {"time": round(time.time(), 3), "sources": sources,
                "jpeg": {"encoded": encoded, "mean_ms": round(1000.0 * encode_s / encoded, 3) if encoded else None},
                **(extra or {})}

    def state_json(self, extra: dict[str, Any] | None = None) -> bytes:
        return json.dumps(self.state(extra), separators=(",", ":")).encode()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._pictures.notify_all()
            self._jpegs.notify_all()
        if self._encoder is not threading.current_thread():
            self._encoder.join(timeout=1.0)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the encoder thread ---------------------------------------------------------------------

    def _encode_loop(self) -> None:
        while True:
            with self._pictures:
                self._pictures.wait_for(lambda: self._closed or self._waiting())
                if self._closed:
                    return
                work = [(number, s.raw, s.raw_seq) for number, s in self._sources.items() if s.raw is not None]
                for number, _, _ in work:
                    self._sources[number].raw = None
            for number, picture, seq in work:
                begin = time.perf_counter()
                ok, jpeg = cv2.imencode(".jpg", picture, self._jpeg_params)  # OpenCV lets go of the GIL here
                seconds = time.perf_counter() - begin
                if not ok:
                    continue
                with self._jpegs:
                    state = self._sources[number]
                    state.jpeg, state.jpeg_seq = jpeg.tobytes(), seq
                    state.size = (picture.shape[1], picture.shape[0])
                    self.encoded += 1
                    self.encode_s += seconds
                    self._jpegs.notify_all()

    def _waiting(self) -> bool:
        return any(s.raw is not None for s in self._sources.values())


class _Watch:
    def __init__(self, hub: FrameHub, source: int) -> None:
        self.hub, self.source = hub, source

    def __enter__(self) -> "_Watch":
        with self.hub._lock:
            state = self.hub._sources[self.source]
            state.watchers += 1
            state.taken_at = float("-inf")  # the next frame is kept whatever the rate limit
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.hub._lock:
            self.hub._sources[self.source].watchers -= 1
