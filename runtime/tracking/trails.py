"""Short trails for the demo to draw: each track's recent box centres."""

from __future__ import annotations

from collections import deque

import numpy as np

from ssd_edge.runtime.tracking.errors import TrackingError
from ssd_edge.runtime.tracking.tracker import Tracks


class Trails:
    """The last `length` box centres (x, y) of every track, for drawing short trails;
    tracks not reported for `forget_after` updates are dropped."""

    def __init__(self, length: int = 20, forget_after: int = 30) -> None:
        if length < 2:
            raise TrackingError(f"a trail needs at least 2 points, got length={length}")
        self.length, self.forget_after = length, forget_after
        self._points: dict[int, deque[tuple[float, float]]] = {}
        self._last_update: dict[int, int] = {}
        self._updates = 0

    def update(self, tracks: Tracks) -> dict[int, np.ndarray]:
        """Add this frame's centres; return {track id: (P, 2) points, oldest first} of the
        tracks in `tracks`."""
        self._updates += 1
        centres = 0.5 * (tracks.boxes[:, :2] + tracks.boxes[:, 2:])
        shown = {}
        for track_id, (x, y) in zip(tracks.ids.tolist(), centres.tolist()):
            points = self._points.setdefault(track_id, deque(maxlen=self.length))
            points.append((x, y))
            self._last_update[track_id] = self._updates
            shown[track_id] = np.array(points, np.float32)
        for track_id in [t for t, last in self._last_update.items() if self._updates - last > self.forget_after]:
            del self._points[track_id], self._last_update[track_id]
        return shown
