"""INT8 QDQ quantization on onnxruntime CPU: both flavours run, keep their promises about
the Q/DQ graph, and stay close to FP32.

With random weights INT8 cannot be as close to FP32 as with trained ones (every layer's
rounding noise survives to the output instead of being averaged away by learned
structure), so "close" here is a floor on correlation and detection agreement; the mAP
drop of a trained model is measured with ssd-eval (see benchmarks/)."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ssd_edge.export.onnx_model import ExportError, metadata, read_spec
from ssd_edge.export.parity import compare_onnx
from ssd_edge.export.quantize import CalibrationImages, quantize_int8, stem_conv
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.runtime.image_io import ImageError, list_images
from ssd_edge.runtime.model_file import QUANTIZATION_KEY
from ssd_edge.runtime.parity import onnx_outputs
from ssd_edge.runtime.preprocess import preprocess
from tests.helpers.export import calibrated_model, correlation


@pytest.fixture(scope="module")
def fp32(images, tmp_path_factory):
    model = calibrated_model("mobilenetv3_ssd", images[:4])
    return model.spec, export_onnx(model, tmp_path_factory.mktemp("int8") / "model.onnx", dynamic=True)


@pytest.fixture(scope="module")
def quantized(fp32, tiny_coco, tmp_path_factory):
    """Both flavours of the FP32 model, calibrated on 8 dataset images."""
    _, path = fp32
    folder = tmp_path_factory.mktemp("int8")
    calibration = list_images(tiny_coco, 8, recursive=True)
    return {
        flavour: quantize_int8(path, folder / f"model.int8-{flavour}.onnx", calibration, flavour, progress=False)
        for flavour in ("tensorrt", "cpu")
    }


def _initializers(proto) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def _producers(proto) -> dict:
    return {out: node for node in proto.graph.node for out in node.output}


@pytest.mark.parametrize("flavour", ["tensorrt", "cpu"])
def test_runs_at_batch_1_and_8_and_stays_close_to_fp32(quantized, flavour, fp32, images):
    path = quantized[flavour]
    spec, fp32_path = fp32
    x = preprocess((images * 2)[:8], spec.input_size)
    locs8, confs8 = onnx_outputs(path, x, 8)
    locs1, confs1 = onnx_outputs(path, x, 1)
    np.testing.assert_allclose(confs8, confs1, atol=1e-4)
    reference = onnx_outputs(fp32_path, x, 8)
    correlations = correlation(locs8, reference[0]), correlation(confs8, reference[1])
    report = compare_onnx(spec, path, fp32_path, images[10:14], batch=4)
    print(f"INT8 {flavour} vs FP32: correlation of locs, confs {correlations[0]:.3f}, {correlations[1]:.3f}; "
          f"{report.summary()}")
    assert min(correlations) > 0.5
    assert report.agreement > 0.4, report.summary()


@pytest.mark.parametrize("flavour", ["tensorrt", "cpu"])
def test_metadata_carried_over_and_flavour_recorded(quantized, flavour, fp32):
    path = quantized[flavour]
    spec, _ = fp32
    assert read_spec(path) == spec
    record = json.loads(metadata(onnx.load(str(path)))[QUANTIZATION_KEY])
    stem = {stem_conv(onnx.load(str(fp32[1]))): "stem: the 3-channel input convolution (flavour rule)"}
    assert record == {"flavour": flavour, "calibration_images": 8, "format": "QDQ", "calibration": "minmax",
                      "float_layers": stem if flavour == "tensorrt" else {}}


def test_tensorrt_flavour_is_what_tensorrt_takes(quantized):
    proto = onnx.load(str(quantized["tensorrt"]))
    values, producers = _initializers(proto), _producers(proto)
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:  # symmetric int8 everywhere: zero points 0 (TensorRT rejects others)
        zero_point = values[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    stem = stem_conv(proto)
    for conv in convs:
        weight = producers.get(conv.input[1])
        if conv.name == stem:  # the 3-channel stem stays float: input and weight
            assert weight is None and producers[conv.input[0]].op_type != "DequantizeLinear"
            continue
        assert weight is not None and weight.op_type == "DequantizeLinear"
        assert values[weight.input[1]].shape == (values[weight.input[0]].shape[0],)  # per-channel scales
        if len(conv.input) > 2:  # biases unquantized
            assert conv.input[2] in values and values[conv.input[2]].dtype == np.float32
    assert not any(n.op_type == "DequantizeLinear" and values.get(n.input[0], np.zeros(0)).dtype == np.int32
                   for n in proto.graph.node)
    weighted = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
    for node in qdq:  # Q/DQ only where a weighted layer reads the tensor, not on every Conv's output
        if node.op_type == "DequantizeLinear" and node.input[0] not in values:
            readers = {n.op_type for n in proto.graph.node if node.output[0] in n.input}
            assert readers & weighted, (node.name, readers)


def test_cpu_flavour_is_tuned_for_onnxruntime(quantized):
    proto = onnx.load(str(quantized["cpu"]))
    values = _initializers(proto)
    dequantized = [values[n.input[0]] for n in proto.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in values]
    activations = [values[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert activations and all(z.dtype == np.uint8 for z in activations)  # asymmetric uint8 activations
    assert any(w.dtype == np.int8 for w in dequantized)  # int8 weights
    assert any(b.dtype == np.int32 for b in dequantized)  # int32 biases, fused by onnxruntime


def test_calibration_reader_batches_and_pads(images, fp32):
    spec, _ = fp32
    reader = CalibrationImages(images[:3], spec.input_name, spec.input_size, batch=2, progress=False)
    batches = list(iter(reader.get_next, None))
    assert len(reader) == 2 and len(batches) == 2
    assert all(b[spec.input_name].shape == (2, 3, *spec.input_size) for b in batches)
    np.testing.assert_array_equal(batches[1][spec.input_name][1], batches[0][spec.input_name][0])  # padded
    reader.rewind()
    assert reader.get_next() is not None


def test_corrupt_calibration_image_is_named(fp32, tiny_coco, tmp_path):
    _, path = fp32
    bad = tmp_path / "calib" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ImageError, match=r"broken\.jpg: not a readable image"):
        quantize_int8(path, tmp_path / "out.onnx", [bad], "cpu", progress=False)
    assert not (tmp_path / "out.onnx").exists()


def test_unknown_flavour_and_empty_folder(fp32, tmp_path):
    _, path = fp32
    with pytest.raises(ExportError, match="unknown INT8 flavour 'gpu'"):
        quantize_int8(path, tmp_path / "out.onnx", [], "gpu")
    with pytest.raises(ImageError, match="no images found"):
        list_images(tmp_path, recursive=True)
