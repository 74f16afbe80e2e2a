"""`Tracker`: multi-object tracking by detection, ByteTrack's association, torch-free.

    tracker = Tracker(min_hits=2, max_misses=30)
    for frame in frames:
        tracks = tracker.update(detector(frame.image), frame=frame.index)
        tracks.ids, tracks.boxes, tracks.labels, tracks.scores, tracks.ages

Each update, in ByteTrack's order:
1. every track is moved to this frame by its Kalman filter (through skipped frames too);
2. confirmed tracks (seen last frame or lost for a while) are matched to the
   high-score detections (score >= high_score) by IoU x score;
3. confirmed tracks still unmatched that were seen in the previous frame are matched to
   the low-score detections (low_score <= score < high_score) by IoU: an object whose score
   drops while it is partly hidden keeps its track and its ID;
4. tentative tracks are matched to the high-score detections left;
5. a matched track takes the detection into its filter; a tentative track becomes confirmed
   after `min_hits` consecutive hits and is dropped at its first miss; a confirmed track that
   has gone unmatched for more than `max_misses` frames is dropped; a high-score detection
   left over with score >= new_track_score starts a tentative track; in the tracker's
   first frame (after construction or reset()) new tracks are confirmed at once, as
   ByteTrack activates the tracks of its first frame, so frame 1 reports tracks.

Matching is per class (a track never takes a detection of another label) unless
`class_agnostic`. The tracker returns the confirmed tracks matched in this frame, with
their filtered boxes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from ssd_edge.runtime.detections import Detections, detection_record
from ssd_edge.runtime.tracking.association import associate
from ssd_edge.runtime.tracking.errors import TrackingError
from ssd_edge.runtime.tracking.kalman import BoxKalman, MotionNoise, state_boxes


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds and lifetimes (defaults: ByteTrack's demo settings, tools/demo_track.py:
    track_thresh 0.5 as high_score, its det_thresh = track_thresh + 0.1 as new_track_score,
    match_thresh 0.8 as match_similarity 1 - 0.8, its buffer of 30 frames as max_misses;
    `presets.PRESETS` holds its MOT17 and MOT20 evaluation settings by name).

    high_score: detections at or above it take part in the first association and may start
    tracks; low_score: detections below it are ignored, those between the two only keep
    confirmed tracks alive; new_track_score: the least score that starts a track.
    match_similarity / low_match_iou / tentative_match_similarity: the least IoU (times the
    score when fuse_score) for a pair in stages 2, 3 and 4. min_hits: consecutive hits a track
    needs to be reported; max_misses: frames a confirmed track survives unmatched.
    class_agnostic: match across labels (the track takes its latest detection's label).
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    match_similarity: float = 0.2
    low_match_iou: float = 0.5
    tentative_match_similarity: float = 0.3
    fuse_score: bool = True
    min_hits: int = 2
    max_misses: int = 30
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score:
            raise TrackingError(f"need 0 <= low_score <= high_score, got low_score={self.low_score}, "
                                f"high_score={self.high_score}")
        for name in ("match_similarity", "low_match_iou", "tentative_match_similarity"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise TrackingError(f"{name} must lie in (0, 1], got {value}")
        if self.min_hits < 1:
            raise TrackingError(f"min_hits must be at least 1, got {self.min_hits}")
        if self.max_misses < 0:
            raise TrackingError(f"max_misses must be at least 0, got {self.max_misses}")


def class_name(label: int, class_names: Sequence[str]) -> str:
    """The name of class `label` (the label as text when `class_names` has none for it)."""
    return class_names[label] if 0 <= label < len(class_names) else str(label)


class Tracks(NamedTuple):
    """The tracks reported for one frame (K of them, in ascending ID order).

    ids (K,) int64, unique for the tracker's life; boxes (K, 4) float32 xyxy pixels, the
    Kalman-filtered box; labels (K,) int64; scores (K,) float32, the score of the detection
    matched this frame; ages (K,) int64, frames since the track's first detection (0 in
    that frame); detection_index (K,) int64, which row of this frame's detections each track
    took (to reach its confs); class_names as the detections gave them."""

    ids: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    ages: np.ndarray
    detection_index: np.ndarray
    class_names: tuple[str, ...] = ()

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = ()) -> "Tracks":
        none = np.zeros((0,), np.int64)
        return cls(none, np.zeros((0, 4), np.float32), none, np.zeros((0,), np.float32), none, none,
                   tuple(class_names))

    @property
    def names(self) -> list[str]:
        """Each track's class name (the label as text when it has no name)."""
        return [class_name(label, self.class_names) for label in self.labels.tolist()]

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per track: its id, `detection_record`'s box, label, name and
        score, age (frames since the track's first detection) and detection (the row of
        this frame's detections it took)."""
        return [
            {"id": int(track_id), **detection_record(box, label, name, score), "age": int(age), "detection": int(row)}
            for track_id, box, label, name, score, age, row in zip(
                self.ids, self.boxes, self.labels, self.names, self.scores, self.ages, self.detection_index)
        ]


def check_detections(detections: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """boxes (N, 4) float64 xyxy, labels (N,) int64, scores (N,) float64 of a runtime
    `Detections` (or anything with those attributes), checked: a clear TrackingError for a wrong shape, a
    non-finite value or an inverted box."""
    try:
        boxes, labels, scores = detections.boxes, detections.labels, detections.scores
    except AttributeError as error:
        raise TrackingError(f"detections need boxes, labels and scores (a runtime Detections); "
                            f"got {type(detections).__name__}") from error
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise TrackingError(f"detections.boxes has shape {boxes.shape}; expected (N, 4) xyxy")
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(labels) != len(boxes) or len(scores) != len(boxes):
        raise TrackingError(f"{len(boxes)} boxes but {len(labels)} labels and {len(scores)} scores")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise TrackingError(f"detections.labels must be integers, got dtype {labels.dtype}")
    bad = ~np.isfinite(boxes).all(axis=1) | ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TrackingError(f"detection {i} is not finite: box {boxes[i].tolist()}, score {scores[i]} "
                            f"({int(bad.sum())} such detections in this frame)")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        raise TrackingError(f"detection {i} has x2 < x1 or y2 < y1: box {boxes[i].tolist()}; expected xyxy")
    return boxes, labels.astype(np.int64), scores


@dataclass
class _Table:
    """Every live track as one row of each array (structure of arrays, so that each frame's
    work is a handful of NumPy calls, not a loop over tracks)."""

    ids: np.ndarray
    labels: np.ndarray
    means: np.ndarray  # (T, 8), see kalman
    covariances: np.ndarray  # (T, 8, 8)
    scores: np.ndarray
    hits: np.ndarray  # detections taken (consecutive while tentative)
    born: np.ndarray  # frame of the first detection
    last_seen: np.ndarray  # frame of the latest detection
    confirmed: np.ndarray
    detection: np.ndarray  # row of the current frame's detections taken, or -1

    @classmethod
    def empty(cls) -> "_Table":
        i64 = np.zeros((0,), np.int64)
        return cls(i64, i64, np.zeros((0, 8)), np.zeros((0, 8, 8)), np.zeros((0,)), i64, i64, i64,
                   np.zeros((0,), bool), i64)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: np.ndarray) -> "_Table":
        return _Table(**{name: getattr(self, name)[rows] for name in _TABLE_FIELDS})

    def extend(self, other: "_Table") -> "_Table":
        return _Table(**{name: np.concatenate([getattr(self, name), getattr(other, name)]) for name in _TABLE_FIELDS})


_TABLE_FIELDS = tuple(f.name for f in dataclasses.fields(_Table))


class Tracker:
    """Tracks objects across the frames of one video; see the module docstring.

    Tracker(config) or Tracker(**settings) with TrackerConfig's fields (both: settings
    override the config). motion: the Kalman filter's noise (MotionNoise).
    `update(detections, frame=None)` takes each frame's Detections; frame is the frame's
    index in the source, strictly increasing (None: the previous one + 1); a gap (frames
    the caller skipped) is predicted through and counts as misses. `reset()` starts a new
    video. Not thread-safe: one Tracker per video stream.
    """

    def __init__(self, config: TrackerConfig | None = None, *, motion: MotionNoise | None = None,
                 **settings: Any) -> None:
        unknown = set(settings) - {f.name for f in dataclasses.fields(TrackerConfig)}
        if unknown:
            raise TrackingError(f"unknown tracker setting(s) {sorted(unknown)}; choose from "
                                f"{[f.name for f in dataclasses.fields(TrackerConfig)]}")
        self.config = dataclasses.replace(config or TrackerConfig(), **settings)
        self.kalman = BoxKalman(motion)
        self.reset()

    def reset(self) -> None:
        """Forget every track and the frame count (IDs start again at 1)."""
        self._table = _Table.empty()
        self._frame: int | None = None
        self._first_frame: int | None = None
        self._next_id = 1

    @property
    def frame(self) -> int | None:
        """The index of the last frame given to update (None before the first)."""
        return self._frame

    @property
    def num_tracks(self) -> int:
        """Live tracks: tentative, confirmed and lost."""
        return len(self._table)

    def _advance(self, frame: int | None) -> int:
        if frame is None:
            return 0 if self._frame is None else self._frame + 1
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise TrackingError(f"frame must be an integer frame index, got {frame!r}")
        if self._frame is not None and frame <= self._frame:
            raise TrackingError(f"frame {frame} is not after the previous frame {self._frame}: frames must "
                                f"come in order (reset() starts a new video)")
        return int(frame)

    def update(self, detections: Detections, frame: int | None = None) -> Tracks:
        """Take one frame's `Detections` (boxes (N, 4) xyxy pixels, labels (N,), scores (N,),
        as any Detector returns them), return the confirmed tracks seen in this frame."""
        boxes, labels, scores = check_detections(detections)
        class_names = tuple(getattr(detections, "class_names", ()) or ())
        now = self._advance(frame)
        steps = 1 if self._frame is None else now - self._frame
        previous, self._frame = self._frame, now
        if previous is None:
            self._first_frame = now
        table = self._table
        if len(table):
            table.means, table.covariances = self.kalman.predict(table.means, table.covariances, steps)
        track_of_det = self._associate(table, boxes, labels, scores, previous)
        self._apply(table, track_of_det, boxes, labels, scores, now)
        return self._report(class_names, now)

    def _associate(self, table: _Table, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                   previous: int | None) -> np.ndarray:
        """Stages 2-4: for each detection, the table row it was given to, or -1."""
        cfg = self.config
        same_class = not cfg.class_agnostic
        predicted = state_boxes(table.means)
        track_of_det = np.full(len(boxes), -1, np.int64)
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))

        def stage(rows: np.ndarray, dets: np.ndarray, threshold: float, fuse: bool) -> tuple[np.ndarray, np.ndarray]:
            found = associate(predicted[rows], table.labels[rows], boxes[dets], labels[dets], scores[dets],
                              threshold, fuse, same_class)
            track_of_det[dets[found.pairs[:, 1]]] = rows[found.pairs[:, 0]]
            return rows[found.unmatched_tracks], dets[found.unmatched_detections]

        confirmed = np.flatnonzero(table.confirmed)
        left_confirmed, left_high = stage(confirmed, high, cfg.match_similarity, cfg.fuse_score)
        seen_last_frame = left_confirmed[table.last_seen[left_confirmed] == previous]
        stage(seen_last_frame, low, cfg.low_match_iou, False)
        stage(np.flatnonzero(~table.confirmed), left_high, cfg.tentative_match_similarity, cfg.fuse_score)
        return track_of_det

    def _apply(self, table: _Table, track_of_det: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
               scores: np.ndarray, now: int) -> None:
        """Stage 5: filter updates, promotions, deaths and births."""
        cfg = self.config
        dets = np.flatnonzero(track_of_det >= 0)
        rows = track_of_det[dets]
        if len(rows):
            table.means[rows], table.covariances[rows] = self.kalman.update(
                table.means[rows], table.covariances[rows], boxes[dets])
            table.scores[rows] = scores[dets]
            table.labels[rows] = labels[dets]  # unchanged unless class_agnostic
            table.hits[rows] += 1
            table.last_seen[rows] = now
            table.confirmed[rows] |= table.hits[rows] >= cfg.min_hits
        table.detection[:] = -1
        table.detection[rows] = dets
        matched = table.last_seen == now
        alive = np.where(table.confirmed, now - table.last_seen <= cfg.max_misses, matched)
        table = table.select(alive)
        newborn = np.flatnonzero((track_of_det < 0) & (scores >= cfg.high_score) & (scores >= cfg.new_track_score))
        if len(newborn):
            table = table.extend(self._births(newborn, boxes[newborn], labels[newborn], scores[newborn], now))
        self._table = table

    def _births(self, dets: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                now: int) -> _Table:
        count = len(boxes)
        means, covariances = self.kalman.initiate(boxes)
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._next_id += count
        frames = np.full(count, now, np.int64)
        first_frame = self._first_frame == now  # ByteTrack activates its first frame's tracks at once
        return _Table(ids, labels.copy(), means, covariances, scores.copy(), np.ones(count, np.int64), frames,
                      frames.copy(), np.full(count, self.config.min_hits <= 1 or first_frame), dets.astype(np.int64))

    def _report(self, class_names: tuple[str, ...], now: int) -> Tracks:
        table = self._table
        shown = np.flatnonzero(table.confirmed & (table.last_seen == now))
        boxes = state_boxes(table.means[shown]).astype(np.float32)
        return Tracks(table.ids[shown].copy(), boxes, table.labels[shown].copy(),
                      table.scores[shown].astype(np.float32), now - table.born[shown],
                      table.detection[shown].copy(), class_names)
