"""Tracking a video stream as the demo does: per frame, the Tracker's tracks, the trails to
draw and, with a counting line, the crossings; `record` gives the JSON-lines log's fields.

    stream = StreamTracking(line=((100, 400), (540, 400)))
    for frame in frames:
        tracked = stream.update(detector(frame.image), frame=frame.index)
        draw_tracks(frame.image, tracked.tracks, tracked.trails, line=stream.line, counts=stream.counts())
        log.write({**other_fields, **stream.record(tracked)})
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.tracking.counting import Crossing, LineCounter
from ssd_edge.runtime.tracking.tracker import Tracker, Tracks, class_name
from ssd_edge.runtime.tracking.trails import Trails

Line = tuple[tuple[float, float], tuple[float, float]]


class TrackedFrame(NamedTuple):
    """One frame's result: the confirmed tracks seen in it, {track id: (P, 2) recent centres,
    oldest first} of those tracks, and the crossings of the counting line they made."""

    tracks: Tracks
    trails: dict[int, np.ndarray]
    crossings: list[Crossing]


class StreamTracking:
    """A Tracker (default settings unless given), Trails of `trail_length` centres and, when
    `line` ((x1, y1), (x2, y2)) in pixels is given, a LineCounter, fed one frame at a time.
    One per video stream."""

    def __init__(self, tracker: Tracker | None = None, line: Line | None = None, trail_length: int = 20) -> None:
        self.tracker = tracker or Tracker()
        self.trails = Trails(length=trail_length, forget_after=self.tracker.config.max_misses)
        self.counter = LineCounter(*line) if line is not None else None
        self.class_names: tuple[str, ...] = ()

    @property
    def line(self) -> Line | None:
        """The counting line's ends, or None without one."""
        if self.counter is None:
            return None
        return (tuple(self.counter.start.tolist()), tuple(self.counter.end.tolist()))  # type: ignore[return-value]

    def update(self, detections: Detections, frame: int | None = None) -> TrackedFrame:
        """Track this frame's detections (frame: its index in the source, increasing)."""
        tracks = self.tracker.update(detections, frame=frame)
        self.class_names = tracks.class_names or self.class_names
        crossings = self.counter.update(tracks) if self.counter is not None else []
        return TrackedFrame(tracks, self.trails.update(tracks), crossings)

    def counts(self) -> dict[str, dict[str, int]]:
        """Crossings so far, {class name: {"left_to_right": n, "right_to_left": m}} ({} without a line)."""
        return self.counter.counts_by_name(self.class_names) if self.counter is not None else {}

    def record(self, tracked: TrackedFrame) -> dict[str, Any]:
        """The log's fields for this frame: "tracks" (Tracks.to_records), and with a line
        "crossings" (this frame's: id, label, name, direction) and "counts" (so far)."""
        fields: dict[str, Any] = {"tracks": tracked.tracks.to_records()}
        if self.counter is not None:
            fields["crossings"] = [
                {"id": c.track_id, "label": c.label, "name": class_name(c.label, self.class_names),
                 "direction": c.direction}
                for c in tracked.crossings
            ]
            fields["counts"] = self.counts()
        return fields

