"""INT8 and FP16 that keep the accuracy (issue 24): each calibration method, the calibrated
ranges reused, the FP16/bf16 emulation, the sensitivity fallback (a planted sensitive
layer is found and kept float) and the accuracy table of ssd-export and ssd-eval."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from ssd_edge.data.sources import load_splits
from ssd_edge.evaluation.precision import LabelledImages
from ssd_edge.export.emulate import EMULATION_KEY, emulated, round_to
from ssd_edge.export.int8_search import SearchConfig, choose_int8, output_error, with_float_layer
from ssd_edge.export.onnx_model import ExportError, load_onnx, metadata, read_spec, save
from ssd_edge.export.quantize import METHODS, quantize_int8, quantized_layers
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.image_io import list_images
from ssd_edge.runtime.model_file import QUANTIZATION_KEY
from ssd_edge.runtime.parity import onnx_outputs
from ssd_edge.runtime.preprocess import preprocess
from tests.helpers.export import calibrated_model, correlation


@pytest.fixture(scope="module")
def fp32(images, tmp_path_factory):
    model = calibrated_model("mobilenetv3_small_ssd", images[:4], imgsz=160)
    return export_onnx(model, tmp_path_factory.mktemp("fp32") / "model.onnx", dynamic=True)


@pytest.fixture(scope="module")
def calibration(tiny_coco):
    return list_images(tiny_coco / "train", 8)


def _activation_scales(path) -> dict[str, float]:
    """Scale of every activation QuantizeLinear (per tensor), by the tensor it quantizes."""
    proto = onnx.load(str(path))
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {node.input[0]: float(values[node.input[1]]) for node in proto.graph.node
            if node.op_type == "QuantizeLinear" and node.input[0] not in values and values[node.input[1]].size == 1}


@pytest.fixture(scope="module")
def per_method(fp32, calibration, tmp_path_factory):
    folder = tmp_path_factory.mktemp("methods")
    return {name: quantize_int8(fp32, folder / f"{name}.onnx", calibration, "tensorrt", progress=False,
                                method_name=name, ranges_cache=folder / f"{name}.ranges")
            for name in METHODS}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_calibration_method_is_used_recorded_and_close_to_fp32(per_method, method, fp32, images):
    path = per_method[method]
    record = json.loads(metadata(onnx.load(str(path)))[QUANTIZATION_KEY])
    assert record["calibration"] == method and record["flavour"] == "tensorrt"
    x = preprocess(images[:4], (160, 160))
    (ref_locs, ref_confs), (locs, confs) = onnx_outputs(fp32, x, 4), onnx_outputs(path, x, 4)
    # random weights: a floor, as in test_export_int8
    assert correlation(locs, ref_locs) > 0.5 and correlation(confs, ref_confs) > 0.5
    if method != "minmax":
        # Percentile and entropy clip outliers: no activation range is wider than MinMax's,
        # and some are narrower (the method really changed the ranges).
        minmax, clipped = _activation_scales(per_method["minmax"]), _activation_scales(path)
        assert minmax.keys() == clipped.keys()
        assert all(clipped[name] <= minmax[name] * (1 + 1e-6) for name in minmax)
        assert sum(clipped[name] < minmax[name] * 0.99 for name in minmax) >= len(minmax) // 10


def test_cached_ranges_need_no_calibration_images(per_method, fp32, tmp_path):
    """The second quantization of a model reads its ranges from the cache: the images it is
    given are never read (a missing file would fail), and the scales are the same."""
    cache = per_method["entropy"].with_name("entropy.ranges")
    again = quantize_int8(fp32, tmp_path / "again.onnx", [tmp_path / "missing.jpg"], "tensorrt", progress=False,
                          method_name="entropy", ranges_cache=cache)
    assert _activation_scales(again) == _activation_scales(per_method["entropy"])


def test_unknown_method_and_float_layer_are_refused(fp32, calibration, tmp_path):
    with pytest.raises(ExportError, match="unknown calibration method 'kl'; choose from minmax, percentile, entropy"):
        quantize_int8(fp32, tmp_path / "x.onnx", calibration, "cpu", method_name="kl")
    with pytest.raises(ExportError, match="no layer named nope to keep in float"):
        quantize_int8(fp32, tmp_path / "x.onnx", calibration, "cpu", float_layers={"nope": "why"})


@pytest.mark.parametrize("flavour", ["tensorrt", "cpu"])
def test_float_layers_stay_float_and_are_recorded_with_their_reason(fp32, calibration, flavour, tmp_path):
    layer = quantized_layers(load_onnx(fp32), flavour)[-1]
    path = quantize_int8(fp32, tmp_path / "mixed.onnx", calibration, flavour, progress=False,
                         float_layers={layer: "planted reason"})
    proto = onnx.load(str(path))
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    node = next(n for n in proto.graph.node if n.name == layer)
    # Its weights are float and it computes in float; its input may still pass a Q/DQ pair where
    # another consumer of that tensor (or, in the `cpu` flavour, its producer) is quantized.
    assert producers.get(node.input[1]) != "DequantizeLinear"
    record = json.loads(metadata(proto)[QUANTIZATION_KEY])
    assert record["float_layers"][layer] == "planted reason"


# --- FP16 / bf16 emulation ---------------------------------------------------------------

def test_rounding_matches_torch_fp16_and_bf16():
    values = np.random.default_rng(0).normal(0, 50, 10000).astype(np.float32)
    values[:4] = [1 + 2**-9, 1 + 3 * 2**-9, 70000.0, -0.0]
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        expected = torch.from_numpy(values).to(dtype).to(torch.float32).numpy()
        np.testing.assert_array_equal(round_to(values, precision), expected)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_emulated_network_rounds_every_tensor_and_keeps_float32_io(fp32, images, precision, tmp_path):
    proto = load_onnx(fp32)
    model = emulated(proto, precision)
    path = tmp_path / f"model.{precision}.onnx"
    save(model, path)
    assert metadata(model)[EMULATION_KEY] == precision and read_spec(path) == read_spec(fp32)
    assert [i.name for i in model.graph.input] == [i.name for i in proto.graph.input]
    assert [o.name for o in model.graph.output] == [o.name for o in proto.graph.output]
    for tensor in model.graph.initializer:  # every weight representable in the precision
        if tensor.data_type == onnx.TensorProto.FLOAT:
            weights = numpy_helper.to_array(tensor)
            np.testing.assert_array_equal(round_to(weights, precision), weights)
    convs = sum(node.op_type == "Conv" for node in proto.graph.node)
    casts = sum(node.op_type == "Cast" and node.attribute[0].i != onnx.TensorProto.FLOAT for node in model.graph.node)
    assert casts >= convs + 1  # the input and at least every convolution's output
    x = preprocess(images[:4], (160, 160))
    (ref_locs, ref_confs), (locs, confs) = onnx_outputs(fp32, x, 4), onnx_outputs(path, x, 4)
    assert locs.dtype == np.float32 and confs.dtype == np.float32
    error = max(np.abs(locs - ref_locs).max(), np.abs(confs - ref_confs).max())
    bits = 10 if precision == "fp16" else 7  # mantissa bits: the error scales with 2**-bits
    assert 0 < error < 2 ** -bits * 200 * max(np.abs(ref_locs).max(), np.abs(ref_confs).max())
    assert correlation(confs, ref_confs) > (0.999 if precision == "fp16" else 0.98)  # random weights amplify


def test_bf16_loses_more_than_fp16(fp32, images):
    x = preprocess(images[:4], (160, 160))
    reference = onnx_outputs(fp32, x, 4)
    errors = {}
    for precision in ("fp16", "bf16"):
        session_model = emulated(load_onnx(fp32), precision)
        import onnxruntime as ort

        session = ort.InferenceSession(session_model.SerializeToString(), providers=["CPUExecutionProvider"])
        errors[precision] = output_error(reference, onnx_outputs("emulated", x, 4, session=session))
    assert 0 < errors["fp16"] < errors["bf16"]


# --- sensitivity fallback ----------------------------------------------------------------

def _plant_sensitive_layer(fp32_path, out_path) -> str:
    """The FP32 model with one layer made fragile under INT8: its input gets a channel of
    constant 1e4 (an Add before it) whose weights are zero, so FP32 computes the same sums
    as before, but a per-tensor int8 activation range of +-1e4 rounds every real input of
    that layer to 0. Returns the layer's name."""
    proto = load_onnx(fp32_path)
    weights = {t.name: t for t in proto.graph.initializer}
    layer = next(n for n in reversed(proto.graph.node) if n.op_type == "Conv" and "regression_headers.0" in n.name)
    kernel = numpy_helper.to_array(weights[layer.input[1]]).copy()
    group = next((a.i for a in layer.attribute if a.name == "group"), 1)
    channels = kernel.shape[1] * group
    if group == 1:
        kernel[:, 0] = 0
    else:
        kernel[0] = 0
    weights[layer.input[1]].CopyFrom(numpy_helper.from_array(kernel, layer.input[1]))
    offset = np.zeros((1, channels, 1, 1), np.float32)
    offset[0, 0] = 1e4
    proto.graph.initializer.append(numpy_helper.from_array(offset, "planted_offset"))
    planted = f"{layer.input[0]}/planted"
    add = helper.make_node("Add", [layer.input[0], "planted_offset"], [planted], name="planted_add")
    position = list(proto.graph.node).index(layer)
    layer.input[0] = planted
    proto.graph.node.insert(position, add)
    save(proto, out_path)
    return layer.name


def _pseudo_labelled(root, model_path, out):
    """tiny_coco's training images labelled with `model_path`'s own top detections: the FP32
    model scores high on it by construction, so a layer that breaks the boxes shows in mAP."""
    shutil.copytree(root / "train", out / "train")
    document = json.loads((root / "annotations" / "instances_train.json").read_text())
    category_ids = [c["id"] for c in document["categories"]]
    annotations = []
    with Detector(model_path, backend="onnxruntime", score_threshold=0.0) as detector:
        for entry in document["images"]:
            found = detector(str(out / "train" / entry["file_name"]))
            for (x1, y1, x2, y2), label in list(zip(found.boxes.tolist(), found.labels.tolist()))[:3]:
                annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], "iscrowd": 0,
                                    "category_id": category_ids[label - 1], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": (x2 - x1) * (y2 - y1)})
    (out / "annotations").mkdir()
    (out / "annotations" / "instances_train.json").write_text(json.dumps({**document, "annotations": annotations}))
    return load_splits(out)["train"]


@pytest.mark.slow
def test_a_planted_sensitive_layer_is_found_and_kept_float(fp32, tiny_coco, tmp_path):
    planted_path = tmp_path / "planted.onnx"
    layer = _plant_sensitive_layer(fp32, planted_path)
    split = _pseudo_labelled(tiny_coco, planted_path, tmp_path / "labelled")
    selection = LabelledImages.of(split, name="pseudo-labelled train")
    calibration = [record.path for record in split.records]
    lines = []
    choice = choose_int8(planted_path, tmp_path / "planted.int8.onnx", "tensorrt", calibration, selection,
                         SearchConfig(methods=("minmax",), budget=0.05, probe_images=4), lines.append, progress=False)
    assert choice.sensitivity[0][0] == layer, choice.sensitivity[:3]
    assert layer in choice.float_layers and "sensitivity rank 1/" in choice.float_layers[layer]
    assert choice.scores["minmax"]["AP50"] < choice.final["AP50"]  # the fallback bought accuracy back
    proto = onnx.load(str(tmp_path / "planted.int8.onnx"))
    record = json.loads(metadata(proto)[QUANTIZATION_KEY])
    assert record["float_layers"][layer] == choice.float_layers[layer]
    assert record["selection_map"]["int8 final"] == choice.final and "budget" in record
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    node = next(n for n in proto.graph.node if n.name == layer)
    assert producers.get(node.input[0]) == "Add" and producers.get(node.input[1]) != "DequantizeLinear"
    assert any("over budget" in line for line in lines)


def test_with_float_layer_restores_that_layers_float_inputs(fp32, per_method):
    qdq, proto = load_onnx(per_method["minmax"]), load_onnx(fp32)
    layer = quantized_layers(proto, "tensorrt")[3]
    probe = with_float_layer(qdq, proto, layer)
    source = next(n for n in proto.graph.node if n.name == layer)
    inputs = list(next(n for n in probe.graph.node if n.name == layer).input)
    assert inputs[0] == source.input[0] and inputs[1:] == [f"{name}/float_fallback" for name in source.input[1:]]
    fallback = {t.name: t for t in probe.graph.initializer}
    assert numpy_helper.to_array(fallback[inputs[1]]).tolist() == numpy_helper.to_array(
        next(t for t in proto.graph.initializer if t.name == source.input[1])).tolist()
    onnx.checker.check_model(probe)


# --- the accuracy table ------------------------------------------------------------------

@pytest.mark.slow
def test_export_and_eval_print_and_write_the_accuracy_table(fp32, tiny_coco, tmp_path, capsys):
    from ssd_edge.cli.eval import main as eval_main
    from ssd_edge.cli.export import main as export_main

    weights = tmp_path / "ssd.onnx"
    shutil.copyfile(fp32, weights)
    assert export_main(["--weights", str(weights), "--format", "int8", "--int8-flavour", "cpu,tensorrt",
                        "--calib-data", str(tiny_coco), "--calib-images", "4", "--select-images", "4",
                        "--calib-method", "minmax,entropy", "--int8-budget", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "INT8 cpu: " in stdout and "INT8 tensorrt: " in stdout and "| FP16 |" in stdout
    report = json.loads((tmp_path / "ssd.accuracy.json").read_text())
    rows = [(row["precision"], row["model"].rsplit("/", 1)[-1]) for row in report["rows"]]
    assert rows == [("fp32", "ssd.onnx"), ("fp16", "ssd.onnx"), ("bf16", "ssd.onnx"), ("int8", "ssd.int8.onnx"),
                    ("int8", "ssd.int8-tensorrt.onnx")]
    assert all(row["verdict"] in ("within budget", "over budget") for row in report["rows"][1:])
    assert "| INT8 | ssd.int8-tensorrt.onnx | tensorrt flavour" in (tmp_path / "ssd.accuracy.md").read_text()
    record = json.loads(metadata(onnx.load(str(tmp_path / "ssd.int8.onnx")))[QUANTIZATION_KEY])
    assert record["calibration"] in ("minmax", "entropy") and record["calibration_candidates"] == ["minmax", "entropy"]

    eval_main(["--weights", str(weights), "--datapath", str(tiny_coco), "--precision", "fp32,fp16,int8",
               "--json", str(tmp_path / "eval.json")])
    again = json.loads((tmp_path / "eval.json").read_text())
    assert [(r["precision"], r["model"].rsplit("/", 1)[-1]) for r in again["rows"]] == [
        ("fp32", "ssd.onnx"), ("fp16", "ssd.onnx"), ("int8", "ssd.int8.onnx"), ("int8", "ssd.int8-tensorrt.onnx")]
    by_model = {(r["precision"], r["model"]): r for r in report["rows"]}
    for row in again["rows"]:  # the same files on the same val split: the same numbers
        assert row["AP50"] == pytest.approx(by_model[(row["precision"], row["model"])]["AP50"], abs=1e-9)
