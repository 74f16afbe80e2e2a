"""MOTChallenge text files: reading ground truth, public detections and tracker results, and
writing tracks in the format MOTChallenge's evaluation reads.

One object per line, comma-separated (motchallenge.net/instructions):

    frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z

frame is 1-based; id is -1 in detection files; the box is its top-left corner and size in
pixels; conf is the detection score (in MOT15 ground truth 1, in MOT16/17 ground truth the
"consider" flag 0/1, followed by class and visibility instead of x, y, z). Lines have at
least the first six columns; a missing conf reads as 1.

    records = read_mot("MOT15/train/TUD-Campus/det/det.txt")
    for frame, rows in records.by_frame():
        tracks = tracker.update(rows.as_detections(), frame=frame)
    write_mot("results/TUD-Campus.txt", mot_rows(frame, tracks) ...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.runtime.tracking.errors import TrackingError

MIN_COLUMNS = 6


class MotDetections(NamedTuple):
    """Rows of a MOT file as the tracker takes them: boxes (N, 4) xyxy, labels (N,) all
    `label`, scores (N,) the conf column."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


class MotRecords(NamedTuple):
    """The rows of a MOT file, in file order. frames (N,) int64 1-based; ids (N,) int64;
    boxes (N, 4) float64 xyxy pixels (converted from left, top, width, height); scores (N,)
    float64, the conf column (1 where absent); rest (N, K) float64, the columns after conf
    (x, y, z, or class and visibility; NaN where a line has fewer)."""

    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    rest: np.ndarray

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.frames)

    def select(self, rows: np.ndarray) -> "MotRecords":
        """The records at `rows` (indices or a boolean mask)."""
        return MotRecords(self.frames[rows], self.ids[rows], self.boxes[rows], self.scores[rows], self.rest[rows])

    def by_frame(self, last_frame: int | None = None) -> Iterator[tuple[int, "MotRecords"]]:
        """(frame, its records) for every frame from 1 to the last (or `last_frame`), frames
        without a line included (empty), in order."""
        last = int(self.frames.max(initial=0)) if last_frame is None else int(last_frame)
        order = np.argsort(self.frames, kind="stable")
        frames = self.frames[order]
        starts = np.searchsorted(frames, np.arange(1, last + 2))
        for frame in range(1, last + 1):
            yield frame, self.select(order[starts[frame - 1]:starts[frame]])

    def as_detections(self, label: int = 1) -> MotDetections:
        """These rows as detections for Tracker.update (every row of class `label`)."""
        return MotDetections(self.boxes.copy(), np.full(len(self), label, np.int64), self.scores.copy())


def _parse_line(text: str, path: Path, line_number: int) -> list[float]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) < MIN_COLUMNS:
        raise TrackingError(f"{path}:{line_number}: a MOT line has at least {MIN_COLUMNS} comma-separated "
                            f"columns (frame, id, left, top, width, height, ...), got {len(parts)}: {text!r}")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise TrackingError(f"{path}:{line_number}: not a number in {text!r}") from None
    frame, track_id, _, _, width, height = values[:6]
    if not all(np.isfinite(values[:7])):
        raise TrackingError(f"{path}:{line_number}: frame, id, box and conf must be finite, got {text!r}")
    if frame != int(frame) or frame < 1 or track_id != int(track_id):
        raise TrackingError(f"{path}:{line_number}: frame must be an integer >= 1 and id an integer, got {text!r}")
    if width < 0 or height < 0:
        raise TrackingError(f"{path}:{line_number}: negative box width or height in {text!r}")
    return values


def read_mot(path: str | Path) -> MotRecords:
    """Every line of the MOT file at `path` (blank lines skipped). A malformed line raises a
    TrackingError naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TrackingError(f"{path}: cannot read the MOT file ({error.strerror or error})") from error
    rows = [_parse_line(line, path, number) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()]
    width = max((len(row) for row in rows), default=7)
    table = np.full((len(rows), max(width, 7)), np.nan)
    for i, row in enumerate(rows):
        table[i, :len(row)] = row
    scores = np.where(np.isnan(table[:, 6]), 1.0, table[:, 6])
    left, top, box_w, box_h = table[:, 2], table[:, 3], table[:, 4], table[:, 5]
    boxes = np.stack([left, top, left + box_w, top + box_h], axis=1)
    return MotRecords(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), boxes, scores, table[:, 7:])


def _number(value: float) -> str:
    """Shortest text that reads back as the same float32-precision value: '12.5', '3', '0.9921'."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def mot_lines(frame: int, ids: Any, boxes_xyxy: Any, scores: Any) -> list[str]:
    """MOTChallenge result lines for one frame (1-based `frame`): ids (K,), boxes (K, 4) xyxy
    pixels, scores (K,); x, y, z written as -1."""
    if isinstance(frame, bool) or int(frame) != frame or frame < 1:
        raise TrackingError(f"a MOT frame number is an integer >= 1, got {frame!r}")
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    ids = np.asarray(ids).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(ids) == len(boxes) == len(scores):
        raise TrackingError(f"{len(ids)} ids, {len(boxes)} boxes and {len(scores)} scores for frame {frame}")
    return [f"{int(frame)},{int(i)},{_number(b[0])},{_number(b[1])},{_number(b[2] - b[0])},{_number(b[3] - b[1])},"
            f"{_number(s)},-1,-1,-1" for i, b, s in zip(ids.tolist(), boxes, scores.tolist())]


def track_lines(frame: int, tracks: Any) -> list[str]:
    """`mot_lines` of a frame's Tracks (anything with ids, boxes xyxy and scores)."""
    return mot_lines(frame, tracks.ids, tracks.boxes, tracks.scores)


def write_mot(path: str | Path, lines: Iterable[str]) -> Path:
    """Write MOT lines (from mot_lines / track_lines) to `path` atomically; returns the path."""
    path = Path(path)
    text = "".join(f"{line}\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
