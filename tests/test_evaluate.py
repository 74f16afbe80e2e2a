"""COCO evaluation (pycocotools) on known answers, and ssd-eval end to end."""

import json

import numpy as np
import pytest
import torch

from ssd_edge.checkpoint import save_checkpoint
from ssd_edge.cli.eval import main as eval_main
from ssd_edge.data.sources import load_splits
from ssd_edge.evaluation.coco import coco_metrics, coco_results
from ssd_edge.models import build_model
from ssd_edge.runtime.detections import Detections


def perfect(record):
    n = len(record.labels)
    scores = np.linspace(1.0, 0.5, n, dtype=np.float32)
    return Detections(record.boxes.copy(), record.labels.copy(), scores, np.zeros((n, 4)))


def test_detections_equal_to_ground_truth_score_ap_one(tiny_coco):
    split = load_splits(tiny_coco)["val"]
    ids = [r.image_id for r in split.records]
    metrics = coco_metrics(split, coco_results(split, ids, [perfect(r) for r in split.records]), ids)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def planted_split(tmp_path):
    """One 100x100 image with two objects of one class (flat layout)."""
    (tmp_path / "images").mkdir()
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "thing"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(document))
    return load_splits(tmp_path)["train"]


@pytest.mark.parametrize(
    "scores, expected",
    [
        # The exact detection ranks first: precision 1 up to recall 0.5, then nothing:
        # 101-point interpolated AP = 51/101 at every IoU threshold.
        ((0.9, 0.8), 51 / 101),
        # The false positive ranks first: precision 0.5 at recall 0.5: 0.5 * 51/101.
        ((0.7, 0.8), 0.5 * 51 / 101),
    ],
)
def test_planted_case_has_the_known_ap(tmp_path, scores, expected):
    split = planted_split(tmp_path)
    boxes = np.array([[10, 10, 40, 40], [0, 50, 5, 55]], np.float32)  # exact match of object 1; a false positive
    det = Detections(boxes, np.array([1, 1]), np.array(scores, np.float32), np.zeros((2, 2), np.float32))
    metrics = coco_metrics(split, coco_results(split, [1], [det]), [1])
    assert metrics["AP50"] == pytest.approx(expected, abs=1e-9)
    assert metrics["AP"] == pytest.approx(expected, abs=1e-9)


def test_no_detections_score_zero(tiny_coco):
    split = load_splits(tiny_coco)["val"]
    assert coco_metrics(split, [])["AP"] == 0.0


def test_ssd_eval_cli_on_a_checkpoint(tiny_coco, tmp_path, capsys):
    model = build_model("mobilenetv3_small_ssd", load_splits(tiny_coco)["val"].class_names, imgsz=160)
    save_checkpoint(tmp_path / "m.pt", model, epoch=0)
    eval_main(["--weights", str(tmp_path / "m.pt"), "--datapath", str(tiny_coco), "--json", str(tmp_path / "r.json"),
               "--no-progress"])
    out = capsys.readouterr().out
    assert "m.pt" in out and "PyTorch" in out and "AP50" in out
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert set(rows[0]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "ms_per_image", "size_mb", "format"}


def test_ssd_eval_bad_inputs(tiny_coco, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for weights, message in ((tmp_path / "missing.pt", "no such model file"),
                             (tmp_path / "junk.pt", "not a readable PyTorch weights file")):
        with pytest.raises(SystemExit) as exit_info:
            eval_main(["--weights", str(weights), "--datapath", str(tiny_coco), "--no-progress"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit):
        eval_main(["--weights", str(tmp_path / "other.pt"), "--datapath", str(tiny_coco), "--no-progress"])
    assert "neither an ssd-edge checkpoint nor a torchvision" in capsys.readouterr().err


def test_ssd_eval_on_onnx_runs_without_torch(tiny_coco, tmp_path):
    """An exported model is evaluated with torch unimportable, as on a torch-free Jetson;
    an engine by any of its names (.engine, .trt, .plan) is taken for an engine, not a checkpoint."""
    import subprocess
    import sys
    import textwrap

    from ssd_edge.export.to_onnx import export_onnx

    model = build_model("mobilenetv3_small_ssd", load_splits(tiny_coco)["val"].class_names, imgsz=160).eval()
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    (tmp_path / "m.plan").write_bytes(b"not an engine")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["torchvision"] = None
        from ssd_edge.cli.eval import main
        try:
            main(["--weights", {str(tmp_path / "m.plan")!r}, "--datapath", {str(tiny_coco)!r}, "--no-progress"])
        except SystemExit as exc:
            print("plan exit", exc.code)
        main(["--weights", {str(onnx_path)!r}, "--datapath", {str(tiny_coco)!r}, "--no-progress",
              "--json", {str(tmp_path / "r.json")!r}])
        assert not any(n == "torch" or n.startswith("torch.") for n, m in sys.modules.items() if m)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "plan exit 2" in result.stdout
    assert "m.plan.json" in result.stderr and "sidecar" in result.stderr  # read as an engine
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert rows[0]["format"] == "ONNX" and 0.0 <= rows[0]["AP50"] <= 1.0
