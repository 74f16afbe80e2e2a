"""`LineCounter`: counts tracks crossing a line segment, per class and per direction.

    counter = LineCounter((100, 400), (540, 400))     # the segment x1,y1 -> x2,y2 in pixels
    for tracks in ...:
        for crossing in counter.update(tracks):
            print(crossing.track_id, crossing.label, crossing.direction)
    counter.counts          # {(label, "left_to_right"): n, (label, "right_to_left"): m}

Sides are as seen walking along the segment from its start to its end on the image (y
down): a track passing from the walker's left to their right crosses "left_to_right". For
the horizontal segment above, drawn left to right, that is top to bottom.

A track is followed by one anchor point of its box (default the bottom centre, where an
object meets the ground). It crosses when its anchor moves from one side to the other
through the segment itself (not the line beyond its ends). Points closer than `margin_px`
to the line have no side, so a track jittering on the line counts once, not every frame.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple, Sequence

import numpy as np

from ssd_edge.runtime.tracking.errors import TrackingError
from ssd_edge.runtime.tracking.tracker import class_name

ANCHORS = ("bottom_center", "center", "top_center")
LEFT_TO_RIGHT, RIGHT_TO_LEFT = "left_to_right", "right_to_left"


class Crossing(NamedTuple):
    """One crossing: the track, its label, "left_to_right" or "right_to_left", and the anchor
    point (x, y) in pixels where it was seen after crossing."""

    track_id: int
    label: int
    direction: str
    point: tuple[float, float]


def parse_line(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """'x1,y1,x2,y2' (pixels, as --count-line takes it) -> ((x1, y1), (x2, y2))."""
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise TrackingError(f"a counting line is 'x1,y1,x2,y2' in pixels, got {text!r}")
    return (values[0], values[1]), (values[2], values[3])


def anchor_points(boxes_xyxy: np.ndarray, anchor: str) -> np.ndarray:
    """(N, 4) xyxy -> (N, 2) anchor points."""
    x = 0.5 * (boxes_xyxy[:, 0] + boxes_xyxy[:, 2])
    if anchor == "center":
        y = 0.5 * (boxes_xyxy[:, 1] + boxes_xyxy[:, 3])
    else:
        y = boxes_xyxy[:, 3] if anchor == "bottom_center" else boxes_xyxy[:, 1]
    return np.stack([x, y], axis=1)


class _Followed(NamedTuple):
    side: int  # -1 left, +1 right: the last side the anchor was clearly on
    point: np.ndarray  # the anchor when it was last clearly on that side
    last_update: int


class LineCounter:
    """Counts crossings of the segment start -> end; see the module docstring.

    anchor: "bottom_center", "center" or "top_center" of each box. margin_px: the band
    around the line where a point has no side. forget_after: updates after which a track
    that was not seen is forgotten (bounds memory on long streams; a track that comes back
    later starts unsided).
    """

    def __init__(self, start: Sequence[float], end: Sequence[float], *, anchor: str = "bottom_center",
                 margin_px: float = 2.0, forget_after: int = 300) -> None:
        self.start = np.asarray(start, dtype=np.float64).reshape(-1)
        self.end = np.asarray(end, dtype=np.float64).reshape(-1)
        if self.start.shape != (2,) or self.end.shape != (2,):
            raise TrackingError(f"a counting line needs two (x, y) points, got {start!r} and {end!r}")
        if not (np.isfinite(self.start).all() and np.isfinite(self.end).all()):
            raise TrackingError(f"counting line ends must be finite, got {start!r} and {end!r}")
        self.length = float(np.hypot(*(self.end - self.start)))
        if self.length == 0:
            raise TrackingError(f"counting line has zero length: both ends are {tuple(self.start)}")
        if anchor not in ANCHORS:
            raise TrackingError(f"unknown anchor {anchor!r}; choose from {', '.join(ANCHORS)}")
        if margin_px < 0:
            raise TrackingError(f"margin_px must be at least 0, got {margin_px}")
        self.anchor, self.margin_px, self.forget_after = anchor, float(margin_px), int(forget_after)
        self.counts: Counter[tuple[int, str]] = Counter()
        self._followed: dict[int, _Followed] = {}
        self._updates = 0

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) points -> (N,) distance to the line in pixels, positive on the right side."""
        direction = (self.end - self.start) / self.length
        offset = points - self.start
        return direction[0] * offset[:, 1] - direction[1] * offset[:, 0]

    def _through_segment(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Whether the move before -> after (on opposite sides) passes between the ends."""
        d_before, d_after = self.signed_distance(np.stack([before, after]))
        t = d_before / (d_before - d_after)
        crossing = before + t * (after - before)
        along = np.dot(crossing - self.start, self.end - self.start) / self.length ** 2
        return 0.0 <= along <= 1.0

    def update(self, tracks: Any) -> list[Crossing]:
        """Take one frame's tracks (ids (K,), boxes (K, 4) xyxy, labels (K,): a Tracks) and
        return the crossings made since each track's previous sided point."""
        self._updates += 1
        points = anchor_points(np.asarray(tracks.boxes, dtype=np.float64).reshape(-1, 4), self.anchor)
        distances = self.signed_distance(points)
        crossings = []
        for track_id, label, point, distance in zip(tracks.ids.tolist(), tracks.labels.tolist(), points, distances):
            if abs(distance) <= self.margin_px:
                if track_id in self._followed:  # on the line: still followed, side unchanged
                    self._followed[track_id] = self._followed[track_id]._replace(last_update=self._updates)
                continue
            side = 1 if distance > 0 else -1
            before = self._followed.get(track_id)
            if before is not None and before.side != side and self._through_segment(before.point, point):
                direction = LEFT_TO_RIGHT if side > 0 else RIGHT_TO_LEFT
                self.counts[(label, direction)] += 1
                crossings.append(Crossing(track_id, label, direction, (float(point[0]), float(point[1]))))
            self._followed[track_id] = _Followed(side, point, self._updates)
        self._forget()
        return crossings

    def _forget(self) -> None:
        if self._updates % 32:
            return
        stale = [tid for tid, f in self._followed.items() if self._updates - f.last_update > self.forget_after]
        for track_id in stale:
            del self._followed[track_id]

    def counts_by_name(self, class_names: Sequence[str]) -> dict[str, dict[str, int]]:
        """{class name: {direction: count}} (the label as text when it has no name)."""
        table: dict[str, dict[str, int]] = {}
        for (label, direction), count in sorted(self.counts.items()):
            table.setdefault(class_name(label, class_names), {LEFT_TO_RIGHT: 0, RIGHT_TO_LEFT: 0})[direction] = count
        return table
