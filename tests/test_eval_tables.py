"""ssd-eval's report (issue 27): the backend (with its precision) in the table and every
output, AP and AP50 per class from pycocotools' precision array, markdown and CSV tables."""

import csv
import json

import numpy as np
import pytest

from ssd_edge.cli.eval import main
from ssd_edge.data.sources import load_splits
from ssd_edge.evaluation.coco import coco_results, coco_scores
from ssd_edge.runtime.detections import Detections


def test_per_class_ap_averages_to_the_summary(tiny_coco):
    split = load_splits(tiny_coco)["val"]
    rng = np.random.default_rng(0)
    detections, ids = [], []
    for record in split.records:  # the ground truth, jittered, with random scores and a class swapped at times
        boxes = record.boxes + rng.normal(0, 4, record.boxes.shape)
        labels = record.labels.copy()
        labels[rng.random(len(labels)) < 0.2] = 1
        detections.append(Detections(boxes.astype(np.float32), labels, rng.random(len(labels)).astype(np.float32),
                                     np.zeros((len(labels), len(split.class_names)), np.float32)))
        ids.append(record.image_id)
    metrics, per_class = coco_scores(split, coco_results(split, ids, detections), ids)
    assert list(per_class) == list(split.class_names[1:])
    assert 0 < min(v["AP"] for v in per_class.values()) < max(v["AP"] for v in per_class.values()) < 1
    assert np.mean([v["AP"] for v in per_class.values()]) == pytest.approx(metrics["AP"], abs=1e-9)
    assert np.mean([v["AP50"] for v in per_class.values()]) == pytest.approx(metrics["AP50"], abs=1e-9)


def test_backend_per_class_markdown_and_csv(model_path, tiny_coco, tmp_path, capsys):
    out = {kind: tmp_path / f"eval.{kind}" for kind in ("json", "md", "csv")}
    assert main(["--weights", model_path, "--datapath", str(tiny_coco), "--no-progress", "--json", str(out["json"]),
                 "--markdown", str(out["md"]), "--csv", str(out["csv"])]) == 0
    printed = capsys.readouterr().out
    row = json.loads(out["json"].read_text())["results"][0]
    assert row["backend"].startswith("onnxruntime") and row["backend"] in printed
    assert set(row["per_class"]) == set(load_splits(tiny_coco)["val"].class_names[1:])
    assert "per class AP / AP50, demo.onnx: " in printed
    markdown = out["md"].read_text()
    assert "| model | format | backend | size MB | AP | AP50 | AP75 | APs | APm | APl | ms/image | images |" in markdown
    assert f"| demo.onnx | ONNX | {row['backend']} | " in markdown and "| class | demo.onnx |" in markdown
    rows = list(csv.DictReader(out["csv"].open()))
    assert [r["class"] for r in rows] == ["all", *row["per_class"]]
    assert float(rows[0]["AP"]) == pytest.approx(row["AP"], abs=1e-5) and rows[0]["backend"] == row["backend"]
