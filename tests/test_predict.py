"""ssd-predict end to end on an exported model, and the drawing it uses."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from ssd_edge.cli import SHOW_SCORE_THRESHOLD
from ssd_edge.cli.predict import main
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.runtime import Detections, draw_detections


def exit_code(argv: list[str]) -> int:
    """ssd-predict's exit status for `argv`, run in this process."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model("mobilenetv3_ssd", ["bg", "cat", "dog"], imgsz=160)
    model = calibrate_batchnorm(model, torch.rand(4, 3, 160, 160))
    return export_onnx(model, tmp_path_factory.mktemp("predict") / "model.onnx", dynamic=True)


@pytest.fixture
def images(tiny_coco, tmp_path):
    first, second = sorted((tiny_coco / "val").glob("*.jpg"))[:2]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "b" / "y.png"]
    shutil.copy(first, paths[0])
    shutil.copy(second, paths[1])
    cv2.imwrite(str(paths[2]), cv2.imread(str(first)))
    return paths


def test_predict_writes_annotated_images_and_one_json(onnx_path, images, tmp_path, capsys):
    out = tmp_path / "out"
    code = exit_code(["--model", str(onnx_path), *map(str, images), "--output", str(out), "--score-threshold", "0.3",
                 "--batch", "2"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "x.jpg", "x_1.jpg", "y.png"]
    results = json.loads((out / "detections.json").read_text())
    assert results["classes"] == ["bg", "cat", "dog"] and results["postprocess"]["score_threshold"] == 0.3
    assert [entry["image"] for entry in results["images"]] == [str(p) for p in images]
    for entry in results["images"]:
        annotated = cv2.imread(entry["annotated"])
        assert annotated.shape == (entry["height"], entry["width"], 3)
        for found in entry["detections"]:
            assert found["name"] in ("cat", "dog") and found["score"] > 0.3 and len(found["box"]) == 4
    assert sum(len(e["detections"]) for e in results["images"]) > 0
    assert not list(out.glob(".*.tmp"))


def test_predict_stops_at_a_bad_image_before_writing(onnx_path, images, tmp_path, capsys):
    out = tmp_path / "out"
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    assert exit_code(["--model", str(onnx_path), str(images[0]), str(bad), "--output", str(out)]) == 2
    assert "notes.jpg: not an image format OpenCV reads" in capsys.readouterr().err
    assert not out.exists()
    assert exit_code(["--model", str(onnx_path), str(tmp_path / "gone.jpg"), "--output", str(out)]) == 2
    assert "gone.jpg: no such image file" in capsys.readouterr().err


def test_predict_reports_a_model_without_metadata(images, tmp_path, capsys):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"nope")
    assert exit_code(["--model", str(fake), str(images[0]), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    assert "fake.onnx" in capsys.readouterr().err


def test_draw_detections_draws_on_a_copy():
    image = np.full((120, 160, 3), 50, np.uint8)
    found = Detections(
        boxes=np.array([[10, 20, 80, 100]], np.float32), labels=np.array([2]), scores=np.array([0.9], np.float32),
        confs=np.zeros((1, 3), np.float32), class_names=("bg", "cat", "dog"),
    )
    drawn = draw_detections(image, found, status="capture 30.0 fps | inference 29.5 fps")
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 50).all(), "the input image must not be drawn on"
    assert (drawn[60, 10] != 50).any() and (drawn[100, 50] != 50).any()  # left and bottom edges
    assert (drawn[60, 45] == 50).all()  # inside the box
    assert (drawn[5, 5] != 50).any()  # the status band, top left


def test_predict_shows_confident_detections_by_default(onnx_path, images, tmp_path):
    # The model's own threshold (for mAP) would draw hundreds of boxes; the CLI shows the confident ones.
    out = tmp_path / "out"
    assert exit_code(["--model", str(onnx_path), str(images[0]), "--output", str(out), "--quiet"]) == 0
    results = json.loads((out / "detections.json").read_text())
    assert results["postprocess"]["score_threshold"] == SHOW_SCORE_THRESHOLD
    assert all(found["score"] > SHOW_SCORE_THRESHOLD for found in results["images"][0]["detections"])


def _snapshot(paths) -> dict:
    return {str(p): p.read_bytes() for p in paths}


def test_predict_into_the_folder_of_its_inputs_never_replaces_an_input(onnx_path, tiny_coco, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    inputs = [folder / p.name for p in sorted((tiny_coco / "val").glob("*.jpg"))[:2]]
    for path in inputs:
        shutil.copy(tiny_coco / "val" / path.name, path)
    before = _snapshot(inputs)
    spelled_otherwise = tmp_path / "link"
    spelled_otherwise.symlink_to(folder)
    assert exit_code(["--model", str(onnx_path), *map(str, inputs), "--output", str(spelled_otherwise)]) == 0
    assert _snapshot(inputs) == before
    results = json.loads((folder / "detections.json").read_text())
    annotated = [entry["annotated"] for entry in results["images"]]
    assert len(set(annotated)) == len(inputs)
    assert all(not any(os.path.samefile(a, i) for i in inputs) for a in annotated)
    assert "is taken" in capsys.readouterr().err


def test_predict_gives_every_result_its_own_name(onnx_path, tiny_coco, tmp_path):
    jpgs = sorted((tiny_coco / "val").glob("*.jpg"))[:3]
    (tmp_path / "c1").mkdir()
    (tmp_path / "c2").mkdir()
    inputs = [tmp_path / "c1" / "a.jpg", tmp_path / "c2" / "a.jpg", tmp_path / "c1" / "a_1.jpg"]
    for source, target in zip(jpgs, inputs):
        shutil.copy(source, target)
    out = tmp_path / "out"
    assert exit_code(["--model", str(onnx_path), *map(str, inputs), "--output", str(out)]) == 0
    results = json.loads((out / "detections.json").read_text())
    annotated = [entry["annotated"] for entry in results["images"]]
    assert len(set(annotated)) == 3 and len(list(out.glob("*.jpg"))) == 3
    for entry, source in zip(results["images"], inputs):  # each result is its own image's
        assert cv2.imread(entry["annotated"]).shape == cv2.imread(str(source)).shape
        assert entry["image"] == str(source)


def test_predict_takes_a_folder_of_images(onnx_path, tiny_coco, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((tiny_coco / "val").glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert exit_code(["--model", str(onnx_path), str(folder), "--output", str(out)]) == 0
    results = json.loads((out / "detections.json").read_text())
    assert sorted(os.path.basename(e["image"]) for e in results["images"]) == sorted(
        p.name for p in folder.glob("*.jpg"))


def test_a_failed_predict_leaves_no_empty_output_folder(images, tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    out = tmp_path / "new" / "out"
    assert exit_code(["--model", str(broken), *map(str, images), "--output", str(out)]) == 2
    assert "broken.onnx" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_predict_refuses_to_write_its_results_over_the_model(onnx_path, images, tmp_path, capsys):
    model = tmp_path / "detections.json"
    shutil.copy(onnx_path, model)  # a model under an odd name, in the output folder
    before = model.read_bytes()
    assert exit_code(["--model", str(model), *map(str, images), "--output", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err and model.read_bytes() == before


def test_predict_never_replaces_a_file_in_the_output_folder_that_is_not_an_earlier_result(
        onnx_path, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.jpg").write_bytes(b"the user's own photo, not an input")
    assert exit_code(["--model", str(onnx_path), str(images[0]), "--output", str(out)]) == 0
    assert (out / "x.jpg").read_bytes() == b"the user's own photo, not an input"
    assert "is taken" in capsys.readouterr().err
    first = json.loads((out / "detections.json").read_text())["images"][0]["annotated"]
    assert first.endswith("x_1.jpg")
    # a second run replaces its own earlier result, and only that
    assert exit_code(["--model", str(onnx_path), str(images[0]), "--output", str(out)]) == 0
    assert json.loads((out / "detections.json").read_text())["images"][0]["annotated"] == first
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "x.jpg", "x_1.jpg"]


def test_predict_never_replaces_a_results_file_that_is_not_its_own(onnx_path, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "detections.json").write_text("the user's notes")
    assert exit_code(["--model", str(onnx_path), str(images[0]), "--output", str(out)]) == 2
    assert "is not an ssd-predict result" in capsys.readouterr().err
    assert (out / "detections.json").read_text() == "the user's notes"
