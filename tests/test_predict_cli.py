"""ssd-predict as Ultralytics users expect it (issue 27): with no --output a new folder
runs/predict, runs/predict2, ... that never replaces anything; a line per image; a video
refused with the ssd-demo command that runs it."""

import json
from pathlib import Path

from ssd_edge.cli.predict import main
from tests.helpers.demo import write_video


def exit_code(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def test_default_output_folders_never_replace_an_earlier_run(model_path, tiny_coco, tmp_path, monkeypatch, capsys):
    images = sorted((tiny_coco / "val").glob("*.jpg"))[:2]
    monkeypatch.chdir(tmp_path)
    assert exit_code(["--model", model_path, *images, "--score-threshold", "0.05"]) == 0
    first = (tmp_path / "runs" / "predict" / "detections.json").read_text()
    printed = capsys.readouterr().out.splitlines()
    for n, image in enumerate(images, 1):
        line = printed[n - 1]
        assert line.startswith(f"{n}/2 {image}: ") and " ms" in line, line
        assert "x" in line.split(": ", 1)[1].split(",")[0]  # WxH
    assert printed[-1] == "wrote runs/predict/detections.json"
    assert exit_code(["--model", model_path, images[0]]) == 0
    assert exit_code(["--model", model_path, images[1], "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "wrote runs/predict2/detections.json"
    assert (tmp_path / "runs" / "predict" / "detections.json").read_text() == first
    third = json.loads((tmp_path / "runs" / "predict3" / "detections.json").read_text())
    assert [entry["image"] for entry in third["images"]] == [str(images[1])]


def test_a_video_is_refused_with_the_demo_command(model_path, tmp_path, monkeypatch, capsys):
    clip = write_video(tmp_path / "clip.mp4", 3)
    monkeypatch.chdir(tmp_path)
    assert exit_code(["--model", model_path, clip]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"--source {clip} --headless" in message and "ssd-demo" in message
    assert not (tmp_path / "runs").exists()


def test_summary_line_counts_by_class():
    import numpy as np

    from ssd_edge.runtime.detections import Detections
    from ssd_edge.runtime.predict import summary_line

    found = Detections(boxes=np.zeros((3, 4), np.float32), labels=np.array([2, 1, 2]), scores=np.ones(3, np.float32),
                       confs=np.zeros((3, 3), np.float32), class_names=("bg", "circle", "square"))
    assert summary_line(Path("a") / "b.jpg", 64, 48, found) == "a/b.jpg: 64x48, 2 square, 1 circle"
