"""MOTChallenge files: reading (ground truth, detections, results), writing tracks, the
round trip, and malformed lines refused with the file and line named."""

from __future__ import annotations

import numpy as np
import pytest

from ssd_edge.runtime.tracking import Tracker, TrackingError
from ssd_edge.runtime.tracking.mot_format import mot_lines, read_mot, track_lines, write_mot

GT_MOT15 = "1,1,399,182,121,229,1,-1,-1,-1\n1,2,282,201,92,184,1,-1,-1,-1\n3,1,401.5,183,120,230,1,-1,-1,-1\n"
GT_MOT16 = "1,1,912,484,97,109,0,7,1\n2,1,912,484,97,109,1,1,0.5\n"
DET = "1,-1,281.931,187.466,79.93,209.537,0.997784,-1,-1,-1\n"


def test_read_ground_truth_and_detections(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text(GT_MOT15 + "\n")  # a blank line is skipped
    records = read_mot(path)
    assert records.frames.tolist() == [1, 1, 3] and records.ids.tolist() == [1, 2, 1]
    np.testing.assert_allclose(records.boxes[0], [399, 182, 520, 411])
    assert records.scores.tolist() == [1, 1, 1] and records.rest.shape == (3, 3)
    frames = [(frame, rows.ids.tolist()) for frame, rows in records.by_frame()]
    assert frames == [(1, [1, 2]), (2, []), (3, [1])]
    assert [frame for frame, _ in records.by_frame(last_frame=5)] == [1, 2, 3, 4, 5]
    path.write_text(GT_MOT16)
    mot16 = read_mot(path)
    assert mot16.scores.tolist() == [0, 1] and mot16.rest.tolist() == [[7, 1], [1, 0.5]]
    path.write_text(DET)
    detections = read_mot(path).as_detections()
    assert detections.labels.tolist() == [1] and detections.scores[0] == pytest.approx(0.997784)
    np.testing.assert_allclose(detections.boxes[0], [281.931, 187.466, 361.861, 397.003])
    path.write_text("4,7,10,20,30,40\n")  # six columns: conf reads as 1
    assert read_mot(path).scores.tolist() == [1.0]


def test_round_trip_of_tracks(tmp_path):
    rng = np.random.default_rng(0)
    tracker, lines, written = Tracker(), [], []
    for index in range(20):
        corners = np.array([[10.0, 20.0], [200.0, 40.0]]) + index * np.array([[3.0, 1.0], [-2.0, 0.5]])
        boxes = np.concatenate([corners, corners + [[40.0, 90.0], [35.5, 80.25]]], axis=1) + rng.normal(0, 0.5, (2, 4))
        tracks = tracker.update(type("D", (), {"boxes": boxes, "labels": [1, 1], "scores": [0.9, 0.8]})(), frame=index)
        lines += track_lines(index + 1, tracks)
        written += [(index + 1, i, b, s) for i, b, s in zip(tracks.ids.tolist(), tracks.boxes, tracks.scores)]
    path = write_mot(tmp_path / "out" / "seq.txt", lines)
    records = read_mot(path)
    assert len(records) == len(written) == 40
    assert records.frames.tolist() == [w[0] for w in written] and records.ids.tolist() == [w[1] for w in written]
    np.testing.assert_allclose(records.boxes, np.stack([w[2] for w in written]), atol=1e-3)
    np.testing.assert_allclose(records.scores, [w[3] for w in written], atol=1e-4)
    again = write_mot(tmp_path / "again.txt", mot_lines_of(records))
    assert again.read_text() == path.read_text()


def mot_lines_of(records):
    return [line for frame, rows in records.by_frame() for line in mot_lines(frame, rows.ids, rows.boxes, rows.scores)]


@pytest.mark.parametrize("line, message", [
    ("1,2,3,4,5", "at least 6 comma-separated columns"),
    ("1,2,3,4,five,6,1", "not a number"),
    ("0,2,3,4,5,6,1", "frame must be an integer >= 1"),
    ("1.5,2,3,4,5,6,1", "frame must be an integer >= 1"),
    ("1,2,3,4,-5,6,1", "negative box width or height"),
    ("1,2,nan,4,5,6,1", "must be finite"),
])
def test_malformed_lines_are_refused_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(GT_MOT15 + line + "\n")
    with pytest.raises(TrackingError, match=f"{path}:4: .*{message}"):
        read_mot(path)


def test_unreadable_file_and_bad_frame_number(tmp_path):
    with pytest.raises(TrackingError, match="cannot read the MOT file"):
        read_mot(tmp_path / "missing.txt")
    with pytest.raises(TrackingError, match="integer >= 1"):
        mot_lines(0, [1], [[0, 0, 1, 1]], [1.0])
