"""Quantization-aware fine-tuning (issue 24): the fake-quantized network, its QDQ export
(placed as the tensorrt PTQ flavour places it, run by onnxruntime as PyTorch runs it),
`ssd-train --qat` with resume, and the export of its checkpoint through ssd-export into the
Detector. A small random model (BatchNorm statistics from real images) keeps it quick; with
random weights int8 rounding noise is large, so closeness to float is a floor on correlation,
as in test_export_int8.py, while the QDQ graph must match PyTorch's fake quantization exactly."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from ssd_edge.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from ssd_edge.common.errors import SSDEdgeError, UsageError
from ssd_edge.export.onnx_model import ExportError, metadata, read_spec
from ssd_edge.export.pipeline import ExportOptions, run_export
from ssd_edge.export.qat import export_qat_int8
from ssd_edge.export.quantize import STEM_REASON, quantize_int8, stem_conv
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.runtime.image_io import list_images
from ssd_edge.runtime.model_file import QUANTIZATION_KEY
from ssd_edge.runtime.preprocess import preprocess
from ssd_edge.training.qat import (
    BINS,
    QMAX,
    QuantConv2d,
    _percentile,
    calibrate_inputs,
    fake_quant_disabled,
    fake_quantize_weight,
    prepare_qat,
    qat_record,
    quant_convs,
    weight_scale,
)
from ssd_edge.training.train import TrainConfig, train
from tests.helpers.export import calibrated_model, correlation, run_engine
from tests.helpers.training import train_interrupted_after_epoch_one

ARCH, SIZE = "mobilenetv3_small_ssd", 160


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def float_model(images):
    return calibrated_model(ARCH, images[:4], imgsz=SIZE)


@pytest.fixture(scope="module")
def qat_model(float_model, images):
    model = calibrated_model(ARCH, images[:4], imgsz=SIZE)
    prepare_qat(model)
    calibrate_inputs(model, [torch.from_numpy(preprocess(images[:8], model.spec.input_size))])
    return model.eval()


@pytest.fixture(scope="module")
def exported(qat_model, tiny_coco, tmp_path_factory):
    """The QAT model's QDQ ONNX, and the tensorrt PTQ flavour of its float network."""
    folder = tmp_path_factory.mktemp("qat")
    qdq = export_qat_int8(qat_model, folder / "model.int8.onnx", dynamic=True)
    with fake_quant_disabled(qat_model):
        fp32 = export_onnx(qat_model, folder / "model.onnx", dynamic=True)
    ptq = quantize_int8(fp32, folder / "model.int8-ptq.onnx", list_images(tiny_coco, 4, recursive=True), "tensorrt",
                        progress=False)
    return {"qat": qdq, "fp32": fp32, "ptq": ptq}


def test_weights_are_rounded_per_output_channel_to_symmetric_int8():
    torch.manual_seed(0)
    weight = torch.randn(6, 4, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    weight[2] = 0
    quantized = fake_quantize_weight(weight)
    scale = weight_scale(weight).view(6, 1, 1, 1)
    codes = quantized / scale
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)  # on the int8 grid of its own channel
    codes = codes.round()
    assert codes.abs().max() <= QMAX and (codes.abs().flatten(1).amax(1)[[0, 1, 3, 4, 5]] == QMAX).all()
    assert ((quantized - weight).abs() <= scale / 2 + 1e-6).all() and not quantized[2].any()


def test_prepared_model_folds_batchnorm_keeps_the_stem_float_and_stays_near_float(float_model, qat_model, images):
    record = qat_record(qat_model)
    assert record.stem == "backbone.features.0.0.0" and record.stem not in record.layers
    assert not isinstance(qat_model.get_submodule(record.stem), QuantConv2d)
    assert all(isinstance(qat_model.get_submodule(name), QuantConv2d) for name in record.layers)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in qat_model.modules())
    assert all(float(qat_model.get_submodule(name).input_amax) > 0 for name in record.layers)
    x = torch.from_numpy(preprocess(images[8:12], float_model.spec.input_size))
    with torch.no_grad():
        reference = float_model.raw(x)
        with fake_quant_disabled(qat_model):
            folded = qat_model.raw(x)
        quantized = qat_model.raw(x)
    for ours, theirs in zip(folded, reference):  # folding BatchNorm changes nothing but float rounding
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    correlations = [correlation(q.numpy(), r.numpy()) for q, r in zip(quantized, reference)]
    assert min(correlations) > 0.5, correlations  # int8 noise of a random network (see the module docstring)
    assert not torch.equal(quantized[1], reference[1])


def _small_network() -> torch.nn.Module:
    """A stem, a pointwise, a depthwise (each with BatchNorm and an activation) and a head
    convolution: the kinds of layer an SSDLite has, few enough that PyTorch's and
    onnxruntime's float rounding (their convolutions sum in other orders) cannot move an
    int8 code and then grow through the layers, as it does in a deep random network."""
    from torch import nn

    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.Hardswish(),
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
        nn.Conv2d(16, 6, 1),
    )


def _ranges_as_the_cpu_copies_gave(network, batches, method) -> tuple[dict, dict]:
    """The input ranges calibrate_inputs set before it kept its statistics on the activations'
    device: each activation copied to the CPU, the running max of |x|, and for "percentile"
    a float64 sum of each batch's float32 torch.histc over [0, max]. Returns (ranges as the
    float32 input_amax holds them, maxima)."""
    convs = quant_convs(network)
    seen = {name: [] for name in convs}
    handles = [conv.register_forward_pre_hook(
        lambda module, args, name=name: seen[name].append(args[0].detach().abs().float().cpu()))
        for name, conv in convs.items()]
    try:
        with torch.no_grad(), fake_quant_disabled(network):
            for x in batches:
                network(x)
    finally:
        for handle in handles:
            handle.remove()
    ranges, maxima = {}, {}
    for name, activations in seen.items():
        amax = torch.zeros(())
        for x in activations:
            amax = torch.maximum(amax, x.max())
        value = float(amax)
        if method == "percentile":
            hist = torch.zeros(BINS, dtype=torch.float64)
            for x in activations:
                hist += torch.histc(x, BINS, 0.0, float(amax)).double()
            value = _percentile(hist, float(amax))
        ranges[name], maxima[name] = float(torch.tensor(value if value > 0 else 1.0)), float(amax)
    return ranges, maxima


@pytest.mark.parametrize("method", ["percentile", "max"])
def test_calibration_on_the_activations_device_sets_the_ranges_the_cpu_copies_set(method):
    network = _small_network().eval()
    prepare_qat(network)
    torch.manual_seed(2)
    batches = [torch.randn(4, 3, 96, 96) * scale for scale in (1.0, 3.0, 0.5)]
    expected, maxima = _ranges_as_the_cpu_copies_gave(network, batches, method)
    calibrate_inputs(network, batches, method, forward=network)
    assert {name: float(conv.input_amax) for name, conv in quant_convs(network).items()} == expected
    if method == "percentile":  # the histogram decided: the percentile is below the max somewhere
        assert any(expected[name] < maxima[name] for name in expected), (expected, maxima)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_onnxruntime_runs_the_qdq_export_as_pytorch_runs_the_fake_quantization(images, tmp_path):
    network = _small_network()
    x = torch.from_numpy(preprocess(images[:4], (64, 64)))
    network.train()
    with torch.no_grad():
        network(x)  # BatchNorm statistics of real images
    network.eval()
    record = prepare_qat(network)
    assert record.stem == "0" and record.layers == ("3", "6", "9")
    calibrate_inputs(network, [x], forward=network)
    path = tmp_path / "small.onnx"
    torch.onnx.export(network, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    options = ort.SessionOptions()  # the graph as written (the default rewrites HardSwish: ulps)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.from_numpy(preprocess(images[4:8], (64, 64)))
    with torch.no_grad():
        expected = network(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, rtol=1e-5, atol=1e-5)
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("QuantizeLinear") == 6  # 3 inputs, 3 weights


def _placement(path) -> dict:
    """Conv node name -> (input dequantized, weight dequantized)."""
    proto = onnx.load(str(path))
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    return {node.name: tuple(producers.get(name) == "DequantizeLinear" for name in node.input[:2])
            for node in proto.graph.node if node.op_type == "Conv"}


def test_qdq_placement_is_the_tensorrt_flavours(exported):
    qat, ptq = _placement(exported["qat"]), _placement(exported["ptq"])
    assert qat == ptq
    proto = onnx.load(str(exported["qat"]))
    stem = stem_conv(proto)
    assert qat.pop(stem) == (False, False) and set(qat.values()) == {(True, True)}
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producers = {out: node for node in proto.graph.node for out in node.output}
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):  # symmetric int8: zero points 0
            zero_point = values[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any()
        if node.op_type == "Conv" and node.name != stem:
            weight_dq = producers[node.input[1]]
            scale = values[weight_dq.input[1]]
            assert scale.shape == (proto_dims(proto, values, weight_dq)[0],)  # per output channel
            assert len(node.input) < 3 or values[node.input[2]].dtype == np.float32  # float bias


def proto_dims(proto, values, dequantize) -> tuple:
    """The shape of the weight a DequantizeLinear gives (its input, or the input of its QuantizeLinear)."""
    if dequantize.input[0] in values:
        return values[dequantize.input[0]].shape
    quantize = next(n for n in proto.graph.node if dequantize.input[0] in n.output)
    return values[quantize.input[0]].shape


def test_qdq_export_records_spec_and_qat_tensorrt_flavour(exported, qat_model):
    proto = onnx.load(str(exported["qat"]))
    onnx.checker.check_model(proto)
    constants = {node.output[0] for node in proto.graph.node if node.op_type == "Constant"}
    assert not constants & {t.name for t in proto.graph.initializer}  # each name defined once
    assert read_spec(exported["qat"]) == qat_model.spec
    record = json.loads(metadata(proto)[QUANTIZATION_KEY])
    assert record == {"flavour": "tensorrt", "format": "QDQ", "qat": True, "calibration": "qat (percentile ranges)",
                      "calibration_images": 0, "float_layers": {stem_conv(proto): STEM_REASON}}


# ------------------------------------------------------------------ ssd-train --qat


def qat_config(data, save, weights, **changes):
    values = dict(datapath=str(data), arch=ARCH, imgsz=SIZE, epochs=1, batch_size=4, lr=1e-4, workers=0,
                  save=str(save), progress=False, threads=1, qat=True, weights=str(weights))
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def float_checkpoint(float_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("float") / "ssd.pt"
    save_checkpoint(path, float_model)
    return path


def test_qat_is_refused_without_weights_and_its_checkpoint_as_weights(tiny_coco, tmp_path, float_checkpoint,
                                                                        capsys):
    from ssd_edge.cli.train import main

    with pytest.raises(UsageError, match="--qat fine-tunes a trained model for INT8: give its checkpoint with "
                                         "--weights"):
        TrainConfig(datapath=str(tiny_coco), qat=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["--datapath", str(tiny_coco), "--qat", "--save", str(tmp_path / "q.pt"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--weights" in err, err
    checkpoint = load_checkpoint(float_checkpoint)
    qat_file = tmp_path / "qat.pt"
    model = load_model(float_checkpoint)
    prepare_qat(model)
    save_checkpoint(qat_file, model, qat=qat_record(model).to_dict())
    with pytest.raises(SSDEdgeError, match=f"{qat_file}: a quantization-aware \\(QAT\\) checkpoint.*--resume"):
        train(qat_config(tiny_coco, tmp_path / "again.pt", qat_file))
    assert checkpoint["spec"] == load_checkpoint(qat_file)["spec"]
    damaged = tmp_path / "damaged.pt"
    save_checkpoint(damaged, model, qat={"layers": []})  # no stem: not a record this toolkit wrote
    with pytest.raises(CheckpointError, match=f"{damaged}: the checkpoint does not describe a usable model"):
        load_model(damaged)


def test_ssd_train_qat_then_ssd_export_int8_runs_in_the_detector(tiny_coco, tmp_path, float_checkpoint, capsys,
                                                                 monkeypatch):
    from ssd_edge.cli.export import main as export_main
    from ssd_edge.cli.train import main as train_main
    from ssd_edge.runtime.detector import Detector
    from ssd_edge.runtime.image_io import read_image

    save = tmp_path / "qat.pt"
    train_main(["--datapath", str(tiny_coco), "--arch", ARCH, "--imgsz", str(SIZE), "--qat", "--weights",
                str(float_checkpoint), "--epochs", "1", "--batch-size", "4", "--lr", "1e-4", "--workers", "0",
                "--threads", "1", "--save", str(save), "--no-progress"])
    out = capsys.readouterr().out
    assert "qat: 87 convolutions fake-quantized to int8" in out and "stem backbone.features.0.0.0 float" in out, out
    checkpoint = torch.load(save, weights_only=True)
    assert checkpoint["qat"]["calibration_images"] == 10 and checkpoint["config"]["qat"] is True
    assert any(key.endswith("input_amax") for key in checkpoint["model"])

    real_load, loaded = torch.load, []
    monkeypatch.setattr(torch, "load", lambda f, *args, **kwargs: loaded.append(f) or real_load(f, *args, **kwargs))
    assert export_main(["--weights", str(save), "--format", "int8"]) == 0
    monkeypatch.setattr(torch, "load", real_load)
    assert loaded == [save]  # the checkpoint read once: the FP32 and QAT exports share its model
    out = capsys.readouterr().out
    assert "no calibration" in out, out
    int8 = tmp_path / "qat.int8.onnx"
    record = json.loads(metadata(onnx.load(str(int8)))[QUANTIZATION_KEY])
    assert record["flavour"] == "tensorrt" and record["qat"] is True and record["calibration_images"] == 10
    assert QUANTIZATION_KEY not in metadata(onnx.load(str(tmp_path / "qat.onnx")))  # FP32 of the tuned weights
    assert _placement(int8) == {name: (name != stem_conv(onnx.load(str(int8))),) * 2 for name in _placement(int8)}

    with pytest.raises(ExportError, match=f"{save}: a QAT checkpoint, fine-tuned for the tensorrt flavour"):
        run_export(ExportOptions(weights=save, formats=("int8",), int8_flavour="cpu", output=tmp_path / "cpu"))
    resized = run_export(ExportOptions(weights=save, formats=("int8",), imgsz=(128, 128), output=tmp_path / "128"))
    assert read_spec(resized.files[-1]).input_size == (128, 128) and len(resized.files) == 2
    measured = run_export(ExportOptions(weights=save, formats=("int8",), calib_data=tiny_coco, output=tmp_path / "m"))
    rows = {(row.precision, Path(row.model).name) for row in measured.accuracy.rows}
    assert {("fp32", "qat.onnx"), ("int8", "qat.int8.onnx")} <= rows, rows
    assert (tmp_path / "m" / "qat.accuracy.md").is_file()

    detector = Detector(str(int8))
    image = read_image(list_images(tiny_coco, 1, recursive=True)[0])
    detections = detector(image)
    assert detections.boxes.shape[1:] == (4,) and detector.spec == read_spec(int8)


def test_a_qat_run_resumes_exactly(tiny_coco, tmp_path, float_checkpoint, monkeypatch):
    straight = train(qat_config(tiny_coco, tmp_path / "straight.pt", float_checkpoint, epochs=2))
    interrupted = qat_config(tiny_coco, tmp_path / "run.pt", float_checkpoint, epochs=2)
    train_interrupted_after_epoch_one(monkeypatch, interrupted)
    assert load_checkpoint(tmp_path / "run.pt")["epoch"] == 1

    resumed = train(qat_config(tiny_coco, tmp_path / "run.pt", float_checkpoint, epochs=2,
                               resume=str(tmp_path / "run.pt")))
    assert [row["epoch"] for row in resumed] == [1, 2]
    assert resumed[1]["loss"] == pytest.approx(straight[1]["loss"], rel=1e-6)
    a, b = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "run.pt")
    assert a["qat"] == b["qat"] and set(a["model"]) == set(b["model"])
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.tensorrt
def test_tensorrt_builds_the_qat_export_into_an_int8_engine_as_it_is(exported, qat_model, images):
    """Where TensorRT is installed (a GPU machine): the QDQ file is what a strongly typed INT8
    build takes, unchanged, and its engine agrees with onnxruntime's run of the same file."""
    from ssd_edge.export.engine import EngineOptions, TensorRTUnavailable, build_engine, build_environment
    from ssd_edge.runtime.backends.tensorrt_logging import create
    from ssd_edge.runtime.parity import onnx_outputs

    try:
        trt, _, _ = build_environment()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    engine_path = exported["qat"].with_name("qat.int8.engine")
    build_engine(exported["qat"], engine_path, EngineOptions(precision="int8", batch=2, progress=False))
    assert json.loads(engine_path.with_name("qat.int8.engine.json").read_text())["precision"] == "int8"
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here: the engine was built but cannot be run from the tests")
    engine = create(trt, "Runtime").deserialize_cuda_engine(engine_path.read_bytes())
    x = preprocess(images[:2], qat_model.spec.input_size)
    _, confs = run_engine(engine, x)
    reference = onnx_outputs(exported["qat"], x, 2)
    assert correlation(confs, reference[1]) > 0.5  # int8 rounding of a random network (see the module docstring)
