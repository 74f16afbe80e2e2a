"""ssd-predict --track's work (runtime/predict_tracks.py): an image sequence (pattern, folder
or files) in, annotated frames, a MOTChallenge result file that the evaluation reads back,
and the JSON records out."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.runtime.predict_tracks import sequence_frames, track_images
from ssd_edge.runtime.tracking import TrackerConfig
from ssd_edge.runtime.tracking.mot_format import read_mot
from ssd_edge.runtime.tracking.mot_metrics import mot_scores


def write_frames(folder, count=6, first=1):
    folder.mkdir(parents=True)
    for i in range(count):
        image = np.full((120, 160, 3), 60, np.uint8)
        cv2.rectangle(image, (10 + 8 * i, 30), (50 + 8 * i, 90), (40, 140, 255), -1)
        cv2.circle(image, (130 - 6 * i, 60), 18, (255, 90, 20), -1)
        cv2.imwrite(str(folder / f"{first + i:06d}.jpg"), image)
    return sorted(folder.glob("*.jpg"))


def test_sequence_inputs(tmp_path):
    frames = write_frames(tmp_path / "TUD-Demo" / "img1")
    name, found = sequence_frames([str(tmp_path / "TUD-Demo" / "img1" / "%06d.jpg")])
    assert name == "TUD-Demo" and found == frames
    assert sequence_frames([tmp_path / "TUD-Demo" / "img1"]) == ("TUD-Demo", frames)
    assert sequence_frames([str(p) for p in frames[:2]]) == ("TUD-Demo", frames[:2])
    with pytest.raises(SSDEdgeError, match="no image of this sequence exists"):
        sequence_frames([str(tmp_path / "nowhere" / "%06d.jpg")])


def test_track_images_writes_mot_and_json_that_read_back(model_path, tmp_path):
    write_frames(tmp_path / "seq" / "img1", count=8)
    config = TrackerConfig(high_score=0.2, low_score=0.05, new_track_score=0.2, min_hits=1)
    lines = []
    mot, results = track_images(model_path, [str(tmp_path / "seq" / "img1" / "%06d.jpg")], tmp_path / "out",
                                config, batch=3, on_image=lines.append)
    assert mot == tmp_path / "out" / "seq.txt"
    assert len(lines) == 8 and lines[0].startswith("1/8 ") and lines[0].endswith(" tracks")
    summary = json.loads(results.read_text())
    assert summary["sequence"] == "seq" and summary["tracker"]["low_score"] == 0.05
    assert summary["postprocess"]["score_threshold"] == pytest.approx(0.05)  # the model runs at the low score
    assert [entry["frame"] for entry in summary["images"]] == list(range(1, 9))
    records = read_mot(mot)
    by_frame = dict(records.by_frame(8))
    total = 0
    for entry in summary["images"]:
        rows = by_frame[entry["frame"]]
        assert rows.ids.tolist() == [track["id"] for track in entry["tracks"]]
        boxes = np.array([track["box"] for track in entry["tracks"]], np.float64).reshape(-1, 4)
        np.testing.assert_allclose(rows.boxes, boxes, atol=0.006)  # the JSON rounds boxes to 0.01 px
        assert all(d["score"] >= 0.05 for d in entry["detections"])
        total += len(rows)
    assert total > 0  # an untrained model still finds boxes at 0.05, so tracks exist to check
    # the evaluation reads the file back: scored against itself it is perfect
    frames = [(r.ids, r.boxes, r.ids, r.boxes) for _, r in records.by_frame(8)]
    scores = mot_scores(frames)
    assert scores.mota == 1.0 and scores.idf1 == 1.0


def test_ssd_predict_track_on_a_folder(model_path, tmp_path, capsys):
    from ssd_edge.cli.predict import main

    frames = write_frames(tmp_path / "walk" / "img1", count=5)
    out = tmp_path / "out"
    code = main(["--model", model_path, "--track", str(tmp_path / "walk" / "img1"), "--output", str(out),
                 "--tracker-preset", "bytetrack-mot17", "--track-high", "0.2", "--track-new", "0.2",
                 "--track-low", "0.05", "--track-buffer", "10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'walk.txt'} and {out / 'detections.json'}" in printed
    summary = json.loads((out / "detections.json").read_text())
    assert summary["tracker"]["max_misses"] == 10 and summary["tracker"]["match_similarity"] == pytest.approx(0.1)
    records = read_mot(out / "walk.txt")  # what the evaluation (benchmarks/bench_mot.py --score) reads
    assert set(records.frames.tolist()) <= set(range(1, len(frames) + 1))
    assert sorted(p.name for p in out.glob("*.jpg")) == [p.name for p in frames]


def test_ssd_predict_track_refuses_several_folders(model_path, tmp_path, capsys):
    from ssd_edge.cli.predict import main

    write_frames(tmp_path / "a", count=2)
    write_frames(tmp_path / "b", count=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", model_path, "--track", str(tmp_path / "a"), str(tmp_path / "b"), "--output",
              str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--track takes one sequence" in capsys.readouterr().err
