"""ONNX export: the contract (names, shapes, metadata), dynamic batch, parity with PyTorch on
onnxruntime CPU, simplification, the FP16 graph, and bad inputs."""

import copy
import json
import warnings

import numpy as np
import onnx
import pytest
import torch

from ssd_edge.export.onnx_model import ExportError, batch_size, fp16_graph, load_onnx, read_spec, simplify
from ssd_edge.export.parity import FP32_RTOL, ParityError, check_parity
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.runtime.backends.onnxruntime_backend import open_session
from ssd_edge.runtime.parity import onnx_outputs
from ssd_edge.runtime.preprocess import preprocess
from ssd_edge.runtime.spec import METADATA_KEY, ModelSpec, SpecError
from tests.helpers.export import calibrated_model


@pytest.fixture(scope="module")
def mobilenet(images):
    return calibrated_model("mobilenetv3_ssd", images[:4])


@pytest.fixture(scope="module")
def mobilenet_dynamic(mobilenet, tmp_path_factory):
    return export_onnx(mobilenet, tmp_path_factory.mktemp("onnx") / "mobilenet.onnx", dynamic=True)


@pytest.fixture(scope="module")
def vgg_onnx(images, tmp_path_factory):
    """vgg16_ssd is heavy on 2 cores: built and exported once, at batch 1."""
    model = calibrated_model("vgg16_ssd", images[:4])
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "vgg.onnx", batch=1)


def test_contract_names_shapes_and_metadata(mobilenet, mobilenet_dynamic):
    proto = onnx.load(str(mobilenet_dynamic))
    onnx.checker.check_model(proto)
    spec = mobilenet.spec
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["locs", "confs"]
    assert batch_size(proto) is None
    session = open_session(mobilenet_dynamic)
    assert session.get_inputs()[0].shape[1:] == [3, *spec.input_size]
    assert session.get_outputs()[0].shape[1:] == [spec.num_priors, 4]
    assert session.get_outputs()[1].shape[1:] == [spec.num_priors, spec.num_classes]
    assert session.get_inputs()[0].type == "tensor(float)"


def test_metadata_round_trip(mobilenet, mobilenet_dynamic):
    spec = read_spec(mobilenet_dynamic)
    assert spec == mobilenet.spec
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_dynamic_batch_really_runs_at_1_and_8(mobilenet, mobilenet_dynamic, images):
    x = preprocess((images * 2)[:8], mobilenet.spec.input_size)
    locs8, confs8 = onnx_outputs(mobilenet_dynamic, x, 8)
    locs1, confs1 = onnx_outputs(mobilenet_dynamic, x, 1)  # eight runs at batch 1
    assert locs8.shape == (8, mobilenet.spec.num_priors, 4)
    assert confs8.shape == (8, mobilenet.spec.num_priors, mobilenet.spec.num_classes)
    np.testing.assert_allclose(locs8, locs1, atol=1e-4)
    np.testing.assert_allclose(confs8, confs1, atol=1e-4)


def test_static_batch_is_fixed(mobilenet, images, tmp_path):
    path = export_onnx(mobilenet, tmp_path / "static.onnx", batch=2)
    assert batch_size(load_onnx(path)) == 2
    report = check_parity(mobilenet, path, images[8:11], batch=2)  # 3 images: the last batch is padded
    assert report.batch == 2 and report.images == 3
    with pytest.raises(SpecError, match="batch 2"):  # the runtime's parity runner: a model-file error
        onnx_outputs(path, preprocess(images[:1], mobilenet.spec.input_size), 1)


@pytest.mark.parametrize("batch", [1, 4])
def test_parity_with_pytorch(mobilenet, mobilenet_dynamic, images, batch):
    report = check_parity(mobilenet, mobilenet_dynamic, images[8:12], batch=batch)
    assert report.within(FP32_RTOL)
    assert report.images == 4 and report.detections_total > 0
    assert report.agreement >= 0.95, report.summary()  # random weights: a few near-ties may flip
    assert "detections agree" in report.summary()


def test_parity_fails_loudly_past_tolerance(mobilenet, mobilenet_dynamic, images):
    other = copy.deepcopy(mobilenet)
    with torch.no_grad():
        other.classification_headers[0][1].weight.mul_(1.5)  # the PyTorch side no longer matches the file
    with pytest.raises(ParityError, match="relative tolerance"):
        check_parity(other, mobilenet_dynamic, images[8:9], batch=1)


def test_vgg16_exports_and_matches(vgg_onnx, images):
    model, path = vgg_onnx
    assert read_spec(path) == model.spec
    report = check_parity(model, path, images[8:9], batch=1)
    assert report.within(FP32_RTOL), report.summary()


def test_simplified_is_smaller_and_equal(mobilenet, mobilenet_dynamic, images, tmp_path):
    plain = export_onnx(mobilenet, tmp_path / "plain.onnx", dynamic=True, simplified=False)
    assert len(onnx.load(str(mobilenet_dynamic)).graph.node) < len(onnx.load(str(plain)).graph.node)
    assert read_spec(plain) == read_spec(mobilenet_dynamic)
    x = preprocess(images[:2], mobilenet.spec.input_size)
    for a, b in zip(onnx_outputs(plain, x, 2), onnx_outputs(mobilenet_dynamic, x, 2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_simplify_failure_warns_and_keeps_the_model(mobilenet_dynamic):
    broken = load_onnx(mobilenet_dynamic)
    nodes = list(broken.graph.node)[::-1]  # not topologically sorted: onnxsim refuses the graph
    del broken.graph.node[:]
    broken.graph.node.extend(nodes)
    with pytest.warns(UserWarning, match=r"broken\.onnx: onnxsim failed .*keeping the unsimplified model"):
        kept = simplify(broken, "broken.onnx")
    assert kept is broken


def test_fp16_graph_keeps_float32_io_and_metadata(mobilenet, mobilenet_dynamic, images):
    half = fp16_graph(load_onnx(mobilenet_dynamic))
    onnx.checker.check_model(half)
    weights = [t for t in half.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    io = list(half.graph.input) + list(half.graph.output)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
    assert {p.key: p.value for p in half.metadata_props}[METADATA_KEY] == mobilenet.spec.to_json()


class _FailsHalfway(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("this block cannot run")


def test_output_replaced_only_when_complete(mobilenet, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    broken = copy.deepcopy(mobilenet)
    broken.extras[2] = _FailsHalfway()  # the export dies while tracing, after it began writing
    with pytest.raises(RuntimeError, match="cannot run"):
        export_onnx(broken, target)
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("opset", [11, 21])
def test_opset_out_of_range(mobilenet, tmp_path, opset):
    with pytest.raises(ExportError, match=f"opset {opset}: choose 14 to 20"):
        export_onnx(mobilenet, tmp_path / "model.onnx", opset=opset)


def test_onnx_without_our_metadata_is_refused(mobilenet_dynamic, tmp_path):
    proto = load_onnx(mobilenet_dynamic)
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(SpecError, match=r"bare\.onnx: no ssd-edge metadata"):
        read_spec(bare)


def test_corrupt_and_missing_onnx_files(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(ExportError, match=r"corrupt\.onnx: not a readable ONNX model"):
        read_spec(corrupt)
    with pytest.raises(ExportError, match=r"missing\.onnx: no such file"):
        read_spec(tmp_path / "missing.onnx")


def test_malformed_spec_in_metadata(mobilenet_dynamic, tmp_path):
    proto = load_onnx(mobilenet_dynamic)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            data = json.loads(prop.value)
            data["format_version"] = 99
            prop.value = json.dumps(data)
    path = tmp_path / "future.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(SpecError, match=r"future\.onnx: the stored ModelSpec is unusable: .*format_version"):
        read_spec(path)


def test_no_warnings_on_a_normal_export(mobilenet, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        export_onnx(mobilenet, tmp_path / "quiet.onnx")
