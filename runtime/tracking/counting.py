"""`LineCounter`: counts tracks crossing a line segment, per class and per direction.

    counter = LineCounter((100, 400), (540, 400))     # the segment x1,y1 -> x2,y2 in pixels
    for tracks in ...:
        for crossing in counter.update(tracks):
            print(crossing.track_id, crossing.label, crossing.direction)
    counter.counts          # {(label, "top_to_bottom"): n, (label, "bottom_to_top"): m}

Directions are named by what the viewer sees on the screen, whichever end the line was
drawn from: across a line closer to vertical than to horizontal a track moves
"left_to_right" or "right_to_left", across any other "top_to_bottom" or "bottom_to_top"
(`LineCounter.directions` has the pair). A line at exactly 45 degrees counts as vertical.

A track is followed by one anchor point of its box (default the bottom centre, where an
object meets the ground). It crosses when its anchor moves from one side to the other
through the segment itself (not the line beyond its ends). Points closer to the line than
the margin have no side (hysteresis): the margin is the larger of `margin_px` and
`margin_ratio` times the box's height, because the jitter of a real tracker's box (its
bottom edge moves 10-60 px on a pedestrian) grows with the box.

Counting (`count="net"`, the default): each track counts at most once, in its net
direction: the first time it crosses from the side it was first seen on, it is counted in
that direction; if it crosses back, that count is withdrawn (a Crossing with
`withdrawn=True` reports it), and crossing out again counts it again. A person standing on
the line, or a track whose box bottom jumps across it, so adds at most one, and nothing once
back where it started. `count="every"` counts every crossing (the behaviour before).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple, Sequence

import numpy as np

from ssd_edge.runtime.tracking.errors import TrackingError
from ssd_edge.runtime.tracking.tracker import class_name

ANCHORS = ("bottom_center", "center", "top_center")
LEFT_TO_RIGHT, RIGHT_TO_LEFT = "left_to_right", "right_to_left"
TOP_TO_BOTTOM, BOTTOM_TO_TOP = "top_to_bottom", "bottom_to_top"
# Each direction as the on-screen overlay abbreviates it.
SHORT_NAMES = {LEFT_TO_RIGHT: "L>R", RIGHT_TO_LEFT: "R>L", TOP_TO_BOTTOM: "T>B", BOTTOM_TO_TOP: "B>T"}


def screen_directions(start: Sequence[float], end: Sequence[float]) -> tuple[str, str]:
    """(the direction of a move onto the segment's positive side, where signed_distance > 0;
    the direction of a move onto its negative side), named as the viewer sees them."""
    dx, dy = float(end[0]) - float(start[0]), float(end[1]) - float(start[1])
    normal_x, normal_y = -dy, dx  # points to the positive side (image coordinates, y down)
    if abs(normal_x) >= abs(normal_y):  # a line closer to vertical: tracks cross it sideways
        return (LEFT_TO_RIGHT, RIGHT_TO_LEFT) if normal_x > 0 else (RIGHT_TO_LEFT, LEFT_TO_RIGHT)
    return (TOP_TO_BOTTOM, BOTTOM_TO_TOP) if normal_y > 0 else (BOTTOM_TO_TOP, TOP_TO_BOTTOM)


def outside_frame(start: Sequence[float], end: Sequence[float], width: int, height: int) -> str | None:
    """None when the segment lies inside a width x height frame, else what a user should be
    told: that it lies wholly outside (nothing can cross it) or partly (only the part inside
    counts)."""
    inside = [0 <= x <= width - 1 and 0 <= y <= height - 1 for x, y in (start, end)]
    if all(inside):
        return None
    where = f"({start[0]:g},{start[1]:g})-({end[0]:g},{end[1]:g})"
    samples = np.linspace(0.0, 1.0, 257)[:, None] * (np.asarray(end, float) - start) + np.asarray(start, float)
    seen = ((samples[:, 0] >= 0) & (samples[:, 0] <= width - 1) & (samples[:, 1] >= 0)
            & (samples[:, 1] <= height - 1)).any()
    if not seen:
        return f"counting line {where} lies outside the {width}x{height} frame: nothing can cross it"
    return f"counting line {where} reaches outside the {width}x{height} frame: only the part inside counts"


COUNT_MODES = ("net", "every")


class Crossing(NamedTuple):
    """One crossing: the track, its label, "left_to_right" or "right_to_left", and the anchor
    point (x, y) in pixels where it was seen after crossing. withdrawn: the track went back
    across, so its earlier crossing in `direction` no longer counts (net counting)."""

    track_id: int
    label: int
    direction: str
    point: tuple[float, float]
    withdrawn: bool = False


def parse_line(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """'x1,y1,x2,y2' (pixels, as --count-line takes it) -> ((x1, y1), (x2, y2))."""
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise TrackingError(f"a counting line is 'x1,y1,x2,y2' in pixels, got {text!r}")
    if values[:2] == values[2:]:
        raise TrackingError(f"a counting line needs two different ends, got {text.strip()} (zero length)")
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
    origin: int = 0  # the side it was first clearly seen on (net counting)
    counted: tuple[int, str] | None = None  # (label, direction) it is counted in (net counting)


class LineCounter:
    """Counts crossings of the segment start -> end; see the module docstring.

    anchor: "bottom_center", "center" or "top_center" of each box. margin_px, margin_ratio:
    the band around the line where a point has no side is max(margin_px, margin_ratio x the
    box's height) wide on each side. count: "net" (each track once, in its net direction)
    or "every" (every crossing). forget_after: updates after which a track that was not
    seen is forgotten (bounds memory on long streams; a track that comes back later starts
    unsided, and counts anew).
    """

    def __init__(self, start: Sequence[float], end: Sequence[float], *, anchor: str = "bottom_center",
                 margin_px: float = 2.0, margin_ratio: float = 0.1, count: str = "net",
                 forget_after: int = 300) -> None:
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
        if not margin_px >= 0:
            raise TrackingError(f"margin_px must be at least 0, got {margin_px}")
        if not 0 <= margin_ratio < 1:
            raise TrackingError(f"margin_ratio must lie in [0, 1), got {margin_ratio}")
        if count not in COUNT_MODES:
            raise TrackingError(f"unknown count mode {count!r}; choose from {', '.join(COUNT_MODES)}")
        self.anchor, self.margin_px, self.forget_after = anchor, float(margin_px), int(forget_after)
        self.margin_ratio, self.count_mode = float(margin_ratio), count
        self.directions = screen_directions(self.start, self.end)
        # the two, left to right (top to bottom) first: the order of counts_by_name's entries
        self.pair = ((LEFT_TO_RIGHT, RIGHT_TO_LEFT) if LEFT_TO_RIGHT in self.directions
                     else (TOP_TO_BOTTOM, BOTTOM_TO_TOP))
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
        return the crossings made (and, net counting, withdrawn) since each track's previous
        sided point."""
        self._updates += 1
        boxes = np.asarray(tracks.boxes, dtype=np.float64).reshape(-1, 4)
        points = anchor_points(boxes, self.anchor)
        distances = self.signed_distance(points)
        margins = np.maximum(self.margin_px, self.margin_ratio * (boxes[:, 3] - boxes[:, 1]))
        crossings: list[Crossing] = []
        for track_id, label, point, distance, margin in zip(np.asarray(tracks.ids).tolist(),
                                                            np.asarray(tracks.labels).tolist(), points, distances,
                                                            margins):
            before = self._followed.get(track_id)
            if abs(distance) <= margin:
                if before is not None:  # on the line: still followed, side unchanged
                    self._followed[track_id] = before._replace(last_update=self._updates)
                continue
            side = 1 if distance > 0 else -1
            if before is None:
                self._followed[track_id] = _Followed(side, point, self._updates, origin=side)
                continue
            followed = before._replace(side=side, point=point, last_update=self._updates)
            if before.side != side:
                if self._through_segment(before.point, point):
                    followed = self._crossed(followed, track_id, label, side, point, crossings)
                elif followed.counted is None:  # went round an end of the segment: starts over there
                    followed = followed._replace(origin=side)
            self._followed[track_id] = followed
        self._forget()
        return crossings

    def _crossed(self, followed: _Followed, track_id: int, label: int, side: int, point: np.ndarray,
                 crossings: list[Crossing]) -> _Followed:
        """Count (or withdraw) one crossing through the segment onto `side`."""
        direction = self.directions[0] if side > 0 else self.directions[1]
        where = (float(point[0]), float(point[1]))
        if self.count_mode == "every":
            self.counts[(label, direction)] += 1
            crossings.append(Crossing(track_id, label, direction, where))
            return followed
        if side != followed.origin and followed.counted is None:
            self.counts[(label, direction)] += 1
            crossings.append(Crossing(track_id, label, direction, where))
            return followed._replace(counted=(label, direction))
        if side == followed.origin and followed.counted is not None:
            key = followed.counted
            self.counts[key] -= 1
            if self.counts[key] <= 0:
                del self.counts[key]
            crossings.append(Crossing(track_id, key[0], key[1], where, withdrawn=True))
            return followed._replace(counted=None)
        return followed

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
            table.setdefault(class_name(label, class_names), dict.fromkeys(self.pair, 0))[direction] = count
        return table
