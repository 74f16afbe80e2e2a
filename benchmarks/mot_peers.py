"""The trackers benchmarks/bench_mot.py runs on the same detections, behind one small
interface: `reset()` for a new sequence, `update(boxes_xyxy (N, 4), scores (N,))` ->
(ids (K,), boxes_xyxy (K, 4)) of the tracks reported in that frame.

- ssd-edge: `ssd_edge.runtime.tracking.Tracker` with a TrackerConfig (a preset by name).
- ByteTrack: the official code (github.com/ifzhang/ByteTrack, MIT, yolox/tracker/) as the
  PyPI package `bytetracker` 0.3.2 carries it: its STrack, KalmanFilter, matching
  (lap.lapjv with cost_limit, IoU with the +1 pixel convention of cython_bbox, fuse_score),
  joint/sub/remove_duplicate_stracks are imported from the package unchanged. The package's
  own `BYTETracker.update` mishandles its input (it gives STrack centre boxes as top-left
  boxes, and zips the low-score detections with the high-score classes, which drops
  low-score detections whenever there are more of them than high-score ones), so
  `ByteTrackPeer.update` below restates the official `BYTETracker.update` (ByteTrack commit
  d1bf019, yolox/tracker/byte_tracker.py, lines 159-287) step for step on the package's
  parts, with the official arguments: track_thresh, track_buffer, match_thresh, mot20.
  Install: pip install --no-deps bytetracker==0.3.2 lap (bytetracker pins torch 1.13,
  which the project does not need; it imports torch, which the .venv has).
- SORT: the official sort.py (github.com/abewley/sort, GPL-3.0) as the PyPI package
  `sort-tracker-py` 1.0.2 carries it (the demo's plotting removed; it returns the matched
  detection's score as a column before the id, nothing else changed), with its published
  settings max_age=1, min_hits=3, iou_threshold=0.3. Install: pip install
  sort-tracker-py==1.0.2 filterpy lap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ssd_edge.runtime.tracking import Tracker, TrackerConfig


class SsdEdgePeer:
    name = "ssd-edge"

    def __init__(self, config: TrackerConfig) -> None:
        self.tracker = Tracker(config)

    def reset(self) -> None:
        self.tracker.reset()

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        detections = _Detections(boxes, np.ones(len(boxes), np.int64), scores)
        tracks = self.tracker.update(detections)
        return tracks.ids, tracks.boxes


class _Detections:
    def __init__(self, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        self.boxes, self.labels, self.scores = boxes, labels, scores


class ByteTrackPeer:
    """The official BYTETracker.update on the bytetracker package's parts (see the module
    docstring); arguments as ByteTrack's tools/track.py and tools/demo_track.py name them."""

    name = "ByteTrack"

    def __init__(self, track_thresh: float = 0.5, track_buffer: int = 30, match_thresh: float = 0.8,
                 mot20: bool = False, frame_rate: int = 30) -> None:
        from bytetracker import byte_tracker, matching  # noqa: PLC0415 (benchmark-only package)
        from bytetracker.basetrack import BaseTrack, TrackState  # noqa: PLC0415
        from bytetracker.kalman_filter import KalmanFilter  # noqa: PLC0415

        self._bt, self._matching, self._base, self._state, self._kf_class = (
            byte_tracker, matching, BaseTrack, TrackState, KalmanFilter)
        self.track_thresh, self.match_thresh, self.mot20 = track_thresh, match_thresh, mot20
        self.det_thresh = track_thresh + 0.1
        self.max_time_lost = int(frame_rate / 30.0 * track_buffer)
        self.reset()

    def reset(self) -> None:
        self._base._count = 0
        self.tracked_stracks: list[Any] = []
        self.lost_stracks: list[Any] = []
        self.removed_stracks: list[Any] = []
        self.frame_id = 0
        self.kalman_filter = self._kf_class()

    def _stracks(self, boxes: np.ndarray, scores: np.ndarray) -> list[Any]:
        strack = self._bt.STrack
        return [strack(strack.tlbr_to_tlwh(tlbr), s, 0) for tlbr, s in zip(boxes, scores)]

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bt, matching, state = self._bt, self._matching, self._state
        self.frame_id += 1
        activated, refind, lost, removed = [], [], [], []
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        remain = scores > self.track_thresh
        second = (scores > 0.1) & (scores < self.track_thresh)
        detections = self._stracks(boxes[remain], scores[remain])
        unconfirmed = [t for t in self.tracked_stracks if not t.is_activated]
        tracked = [t for t in self.tracked_stracks if t.is_activated]
        # Step 2: first association, high-score detections
        pool = bt.joint_stracks(tracked, self.lost_stracks)
        bt.STrack.multi_predict(pool)
        dists = matching.iou_distance(pool, detections)
        if not self.mot20:
            dists = matching.fuse_score(dists, detections)
        matches, u_track, u_detection = matching.linear_assignment(dists, thresh=self.match_thresh)
        for itracked, idet in matches:
            track, det = pool[itracked], detections[idet]
            if track.state == state.Tracked:
                track.update(det, self.frame_id)
                activated.append(track)
            else:
                track.re_activate(det, self.frame_id, new_id=False)
                refind.append(track)
        # Step 3: second association, low-score detections, tracks seen last frame
        detections_second = self._stracks(boxes[second], scores[second])
        r_tracked = [pool[i] for i in u_track if pool[i].state == state.Tracked]
        dists = matching.iou_distance(r_tracked, detections_second)
        matches, u_track, _ = matching.linear_assignment(dists, thresh=0.5)
        for itracked, idet in matches:
            track, det = r_tracked[itracked], detections_second[idet]
            if track.state == state.Tracked:
                track.update(det, self.frame_id)
                activated.append(track)
            else:
                track.re_activate(det, self.frame_id, new_id=False)
                refind.append(track)
        for it in u_track:
            track = r_tracked[it]
            if not track.state == state.Lost:
                track.mark_lost()
                lost.append(track)
        # unconfirmed tracks (one frame old) against the high-score detections left
        detections = [detections[i] for i in u_detection]
        dists = matching.iou_distance(unconfirmed, detections)
        if not self.mot20:
            dists = matching.fuse_score(dists, detections)
        matches, u_unconfirmed, u_detection = matching.linear_assignment(dists, thresh=0.7)
        for itracked, idet in matches:
            unconfirmed[itracked].update(detections[idet], self.frame_id)
            activated.append(unconfirmed[itracked])
        for it in u_unconfirmed:
            unconfirmed[it].mark_removed()
            removed.append(unconfirmed[it])
        # Step 4: new tracks
        for inew in u_detection:
            track = detections[inew]
            if track.score < self.det_thresh:
                continue
            track.activate(self.kalman_filter, self.frame_id)
            activated.append(track)
        # Step 5: lost tracks past the buffer are removed
        for track in self.lost_stracks:
            if self.frame_id - track.end_frame > self.max_time_lost:
                track.mark_removed()
                removed.append(track)
        self.tracked_stracks = [t for t in self.tracked_stracks if t.state == state.Tracked]
        self.tracked_stracks = bt.joint_stracks(self.tracked_stracks, activated)
        self.tracked_stracks = bt.joint_stracks(self.tracked_stracks, refind)
        self.lost_stracks = bt.sub_stracks(self.lost_stracks, self.tracked_stracks)
        self.lost_stracks.extend(lost)
        self.lost_stracks = bt.sub_stracks(self.lost_stracks, self.removed_stracks)
        self.removed_stracks.extend(removed)
        self.tracked_stracks, self.lost_stracks = bt.remove_duplicate_stracks(self.tracked_stracks, self.lost_stracks)
        output = [t for t in self.tracked_stracks if t.is_activated]
        ids = np.array([t.track_id for t in output], np.int64)
        out_boxes = np.array([t.tlbr for t in output], np.float64).reshape(-1, 4)
        return ids, out_boxes


class SortPeer:
    name = "SORT"

    def __init__(self, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3) -> None:
        from sort_tracker import sort  # noqa: PLC0415 (benchmark-only package)

        self._sort = sort
        self.settings = dict(max_age=max_age, min_hits=min_hits, iou_threshold=iou_threshold)
        self.reset()

    def reset(self) -> None:
        self._sort.KalmanBoxTracker.count = 0
        self.tracker = self._sort.Sort(**self.settings)

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dets = np.concatenate([np.asarray(boxes, np.float64).reshape(-1, 4),
                               np.asarray(scores, np.float64).reshape(-1, 1)], axis=1)
        out = self.tracker.update(dets)  # x1, y1, x2, y2, score (the package's one addition), id
        return out[:, -1].astype(np.int64), out[:, :4]


# --- ablation: ssd-edge's Tracker as it was before issue 23 ----------------------------------


def _assign_by_count(similarity: np.ndarray, min_similarity: float):
    """The assignment before issue 23: pairs under the threshold cost 1e6, so the solver
    first maximises the number of pairs, then their similarity."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

    from ssd_edge.runtime.tracking.association import _matches  # noqa: PLC0415

    feasible = similarity >= min_similarity
    rows, cols = linear_sum_assignment(np.where(feasible, 1.0 - similarity, 1e6))
    kept = feasible[rows, cols]
    return _matches([np.stack([rows[kept], cols[kept]], axis=1)], *similarity.shape)


class _StdFloorKalman:
    """Mixin: the noise floor before issue 23, on each std (inflating the velocity noise of
    boxes under 160 px) instead of on the size."""

    def noise_std(self, means: np.ndarray, fraction: float) -> np.ndarray:
        wh = np.maximum(means[:, 2:4], 0.0)
        return np.maximum(fraction * np.concatenate([wh, wh], axis=1), self.noise.min_std_px)


class LegacySsdEdgePeer(SsdEdgePeer):
    """ssd-edge's Tracker with any of issue 23's fixes undone: `assignment` (count-first
    matching), `noise_floor` (the floor on each std), `first_frame` (no tracks reported in
    the first frame)."""

    def __init__(self, config: TrackerConfig, *, assignment: bool = True, noise_floor: bool = True,
                 first_frame: bool = True) -> None:
        from ssd_edge.runtime.tracking import association  # noqa: PLC0415
        from ssd_edge.runtime.tracking.kalman import BoxKalman  # noqa: PLC0415

        super().__init__(config)
        self._association, self._undo_assignment, self._undo_first = association, assignment, first_frame
        if noise_floor:
            self.tracker.kalman = type("StdFloorKalman", (_StdFloorKalman, BoxKalman), {})(self.tracker.kalman.noise)

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        saved = self._association.assign
        if self._undo_assignment:
            self._association.assign = _assign_by_count
        try:
            if self._undo_first and self.tracker.frame is None:  # the first frame's births stay tentative
                ids, out = self._first_update(boxes, scores)
            else:
                ids, out = super().update(boxes, scores)
        finally:
            self._association.assign = saved
        return ids, out

    def _first_update(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tracker = self.tracker
        original = tracker._births

        def births(*args, **kwargs):
            tracker._first_frame = None
            return original(*args, **kwargs)

        tracker._births = births
        try:
            return super().update(boxes, scores)
        finally:
            del tracker._births
