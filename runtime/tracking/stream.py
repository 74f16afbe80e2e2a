"""Tracking a video stream as the demo does: per frame, the Tracker's tracks, the trails to
draw and, with a counting line, the crossings and the counts so far; `record` gives the
JSON-lines log's fields.

    stream = StreamTracking(line=((100, 400), (540, 400)))
    for frame in frames:
        tracked = stream.update(detector(frame.image), frame=frame.index)
        draw_tracks(frame.image, tracked.tracks, tracked.trails, line=stream.line, counts=tracked.counts)
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
Counts = dict[str, dict[str, int]]


class TrackedFrame(NamedTuple):
    """One frame's result: the confirmed tracks seen in it, {track id: (P, 2) recent centres,
    oldest first} of those tracks, the crossings of the counting line they made, and the
    crossings so far, {class name: {direction: n}} (LineCounter.pair's two; {} without a line)."""

    tracks: Tracks
    trails: dict[int, np.ndarray]
    crossings: list[Crossing]
    counts: Counts


class StreamTracking:
    """A Tracker (default settings unless given), Trails of `trail_length` centres and, when
    `line` ((x1, y1), (x2, y2)) in pixels is given, a LineCounter, fed one frame at a time.
    One per video stream. `line` keeps the counting line's ends as given (floats), for drawing."""

    def __init__(self, tracker: Tracker | None = None, line: Line | None = None, trail_length: int = 20) -> None:
        self.tracker = tracker or Tracker()
        self.trails = Trails(length=trail_length, forget_after=self.tracker.config.max_misses)
        self.counter = LineCounter(*line) if line is not None else None  # checks the line
        self.line: Line | None = None
        if line is not None:
            (x1, y1), (x2, y2) = line
            self.line = ((float(x1), float(y1)), (float(x2), float(y2)))
        self.class_names: tuple[str, ...] = ()
        self._counts: Counts = {}

    def update(self, detections: Detections, frame: int | None = None) -> TrackedFrame:
        """Track this frame's detections (frame: its index in the source, increasing)."""
        tracks = self.tracker.update(detections, frame=frame)
        crossings = self.counter.update(tracks) if self.counter is not None else []
        names = tracks.class_names or self.class_names
        if self.counter is not None and (crossings or names != self.class_names):
            self._counts = self.counter.counts_by_name(names)  # the counts change only then
        self.class_names = names
        return TrackedFrame(tracks, self.trails.update(tracks), crossings, self._counts)

    def counts(self) -> Counts:
        """Crossings so far, {class name: {direction: n}} (LineCounter.pair's two; {} without a line)."""
        return self._counts

    def record(self, tracked: TrackedFrame) -> dict[str, Any]:
        """The log's fields for this frame: "tracks" (Tracks.to_records), and with a line
        "crossings" (this frame's: id, label, name, direction, and "withdrawn": true when a
        track went back across, so its earlier crossing no longer counts) and "counts" (so far)."""
        fields: dict[str, Any] = {"tracks": tracked.tracks.to_records()}
        if self.counter is not None:
            fields["crossings"] = [
                {"id": c.track_id, "label": c.label, "name": class_name(c.label, self.class_names),
                 "direction": c.direction, **({"withdrawn": True} if c.withdrawn else {})}
                for c in tracked.crossings
            ]
            fields["counts"] = tracked.counts
        return fields
