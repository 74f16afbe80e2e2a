"""The export carries the whole ModelSpec: a checkpoint whose spec has non-default
variances and tensor names keeps them through `--imgsz` and into the ONNX graph."""

import onnx
import pytest

from ssd_edge.checkpoint import save_checkpoint
from ssd_edge.data.synth import sample_images
from ssd_edge.export.onnx_model import spec_of
from ssd_edge.export.pipeline import ExportOptions, run_export
from ssd_edge.models import build_model, model_from_spec
from tests.helpers.export import calibrated_model

VARIANCES = (0.15, 0.25)
NAMES = ("pixels", ("deltas", "logits"))


@pytest.fixture(scope="module")
def custom_checkpoint(tmp_path_factory):
    base = calibrated_model("mobilenetv3_small_ssd", sample_images(4), imgsz=160)
    spec = base.spec.replace(variances=VARIANCES, input_name=NAMES[0], output_names=NAMES[1], top_k=77)
    model = model_from_spec(spec)
    model.load_state_dict(base.state_dict())
    path = tmp_path_factory.mktemp("custom") / "custom.pt"
    save_checkpoint(path, model.eval())
    return path, spec


def test_imgsz_change_keeps_the_spec_and_the_onnx_uses_its_names(custom_checkpoint, tmp_path):
    path, spec = custom_checkpoint
    result = run_export(ExportOptions(weights=path, imgsz=(192, 224), simplify=False, output=tmp_path, progress=False))
    proto = onnx.load(str(result.files[0]))
    exported = spec_of(proto, result.files[0])
    assert exported.input_size == (192, 224)
    assert exported.default_boxes == build_model(spec.arch, 2, (192, 224), **spec.arch_options).spec.default_boxes
    assert exported.default_boxes != spec.default_boxes
    assert exported == spec.replace(input_size=(192, 224), default_boxes=exported.default_boxes)
    assert exported.variances == VARIANCES and exported.top_k == 77
    assert [i.name for i in proto.graph.input] == [NAMES[0]]
    assert [o.name for o in proto.graph.output] == list(NAMES[1])
    assert result.parity is not None and result.parity.within(1e-3)


def test_export_at_the_own_size_keeps_the_spec(custom_checkpoint, tmp_path):
    path, spec = custom_checkpoint
    result = run_export(ExportOptions(weights=path, simplify=False, output=tmp_path, progress=False))
    proto = onnx.load(str(result.files[0]))
    assert spec_of(proto, result.files[0]) == spec
    assert [o.name for o in proto.graph.output] == list(NAMES[1])
