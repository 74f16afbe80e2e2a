"""Class-agnostic NMS (issue 27): NMS across the classes of the merged candidates, score
descending, ties by lower default box then lower class; the same detections from the plain
reference, the fast NumPy path and the torch PostProcessor; configured through
PostprocessConfig, PostprocessOverrides and the ModelSpec (JSON compatible both ways)."""

import json

import numpy as np
import pytest
import torch

from ssd_edge.models.postprocessor import PostProcessor
from ssd_edge.runtime.boxes import pairwise_iou
from ssd_edge.runtime.detections import ConfigError, PostprocessConfig, PostprocessOverrides
from ssd_edge.runtime.postprocess.fast import postprocess
from ssd_edge.runtime.postprocess.reference import reference_postprocess_image
from ssd_edge.runtime.spec import ModelSpec, SpecError
from tests.helpers.postprocess_cases import (
    AGNOSTIC_CONFIGS,
    AGNOSTIC_KINDS,
    agnostic_outputs,
    random_outputs,
    random_priors,
)
from tests.test_spec import make_spec


def torch_detections(locs, logits, priors, sizes, cfg):
    out = PostProcessor(cfg)(torch.from_numpy(locs), torch.from_numpy(logits), torch.from_numpy(priors), sizes)
    return [tuple(t[b].numpy() for t in out) for b in range(len(locs))]


@pytest.mark.parametrize("kind", AGNOSTIC_KINDS)
@pytest.mark.parametrize("cfg", AGNOSTIC_CONFIGS)
def test_reference_fast_path_and_torch_agree(kind, cfg):
    rng = np.random.default_rng(11)
    priors = random_priors(rng, 150)
    locs, logits = agnostic_outputs(kind, rng, 2, 150, 6)
    sizes = [(240, 320), (100, 100)]
    fast = postprocess(locs, logits, priors, sizes, cfg)
    by_torch = torch_detections(locs, logits, priors, sizes, cfg)
    for b in range(2):
        ref = reference_postprocess_image(locs[b], logits[b], priors, sizes[b], cfg)
        assert len(ref.labels) > 0
        for labels, scores, confs, boxes in ((fast[b].labels, fast[b].scores, fast[b].confs, fast[b].boxes),
                                             (by_torch[b][1], by_torch[b][2], by_torch[b][3], by_torch[b][0])):
            np.testing.assert_array_equal(labels, ref.labels)
            np.testing.assert_allclose(scores, ref.scores, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(confs, ref.confs, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(boxes, ref.boxes, atol=1e-3)
        np.testing.assert_array_equal(fast[b].confs, ref.confs)  # the fast path: the same boxes, bit for bit


def test_no_overlapping_pair_of_any_classes_survives():
    rng = np.random.default_rng(4)
    priors = random_priors(rng, 400)
    locs, logits = random_outputs(rng, 1, 400, 8)
    per_class = PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, top_k=100, max_detections=200)
    agnostic = per_class.replace(agnostic_nms=True)
    crossed = []
    for cfg in (per_class, agnostic):
        det = postprocess(locs, logits, priors, [(100, 100)], cfg)[0]
        iou = np.triu(pairwise_iou(det.boxes / 100, det.boxes / 100), k=1)
        crossed.append(int(np.count_nonzero((iou > 0.5) & (det.labels[:, None] != det.labels[None]))))
    assert crossed[0] > 0 and crossed[1] == 0


def test_one_default_box_in_two_classes_keeps_the_better_class_and_ties_keep_the_lower():
    priors = np.array([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]], np.float32)
    locs = np.zeros((1, 2, 4), np.float32)
    logits = np.array([[[0.0, 2.0, 3.0], [0.0, 1.0, 1.0]]], np.float32)  # box 1 ties classes 1 and 2
    cfg = PostprocessConfig(score_threshold=0.1, iou_threshold=0.5, agnostic_nms=True)
    det = postprocess(locs, logits, priors, [(10, 10)], cfg)[0]
    assert det.labels.tolist() == [2, 1]  # box 0 as class 2 (better), box 1 as class 1 (the lower of a tie)
    # per class: 0.705 (box 0, class 2), 0.422 twice (box 1, classes 1 then 2), 0.259 (box 0, class 1)
    assert postprocess(locs, logits, priors, [(10, 10)], cfg.replace(agnostic_nms=False))[0].labels.tolist() == [
        2, 1, 2, 1]


def test_config_overrides_and_spec():
    assert PostprocessConfig().agnostic_nms is False
    with pytest.raises(ConfigError, match="agnostic_nms"):
        PostprocessConfig(agnostic_nms="yes")
    with pytest.raises(ConfigError, match="agnostic_nms"):
        PostprocessOverrides(agnostic_nms=1)
    assert PostprocessOverrides(agnostic_nms=True).apply(PostprocessConfig()).agnostic_nms is True
    assert PostprocessOverrides().apply(PostprocessConfig(agnostic_nms=True)).agnostic_nms is True
    # A spec without the option writes what older toolkits wrote (they refuse unknown fields) ...
    spec = make_spec()
    assert "agnostic_nms" not in json.loads(spec.to_json())
    assert ModelSpec.from_json(spec.to_json()).postprocess.agnostic_nms is False
    # ... and one with it round-trips.
    on = make_spec(agnostic_nms=True)
    assert json.loads(on.to_json())["agnostic_nms"] is True
    assert ModelSpec.from_json(on.to_json()) == on and on.postprocess.agnostic_nms is True
    with pytest.raises(SpecError, match="agnostic_nms"):
        ModelSpec.from_dict({**json.loads(on.to_json()), "agnostic_nms": "no"})


@pytest.mark.parametrize("module,required", [
    ("predict", ["--model", "m.onnx", "--output", "out", "a.jpg"]),
    ("demo", ["--model", "m.onnx"]),
    ("serve", ["--model", "m.onnx"]),
    ("eval", ["--weights", "m.onnx", "--datapath", "data"]),
    ("bench", ["--model", "m.onnx"]),
])
def test_every_cli_takes_agnostic_nms(module, required):
    import importlib

    parser = importlib.import_module(f"ssd_edge.cli.{module}").build_parser()
    assert parser.parse_args(required + ["--agnostic-nms"]).agnostic_nms is True
    assert parser.parse_args(required).agnostic_nms is None  # the model's own


def test_predict_with_agnostic_nms_leaves_no_overlapping_pair_of_two_classes(model_path, tmp_path):
    import cv2

    from ssd_edge.cli.predict import main
    from ssd_edge.runtime.detector import Detector

    rng = np.random.default_rng(0)
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), rng.integers(0, 255, (120, 160, 3), np.uint8))
    with Detector(model_path, agnostic_nms=True) as detector:
        iou_threshold = detector.config.iou_threshold
        assert detector.config.agnostic_nms
    crossed = []
    for flags in ([], ["--agnostic-nms"]):
        out = tmp_path / f"out{len(flags)}"
        assert main(["--model", model_path, "--output", str(out), "--score-threshold", "0.001", "--quiet",
                     str(image), *flags]) == 0
        result = json.loads((out / "detections.json").read_text())
        assert result["postprocess"]["agnostic_nms"] is bool(flags)
        found = result["images"][0]["detections"]
        boxes = np.array([d["box"] for d in found], np.float32).reshape(-1, 4)
        labels = np.array([d["label"] for d in found])
        iou = np.triu(pairwise_iou(boxes, boxes), k=1)
        # boxes are rounded to 0.01 px in the JSON: a margin for pairs right at the threshold
        crossed.append(int(np.count_nonzero((iou > iou_threshold + 1e-3) & (labels[:, None] != labels[None]))))
    assert crossed[0] > 0 and crossed[1] == 0
