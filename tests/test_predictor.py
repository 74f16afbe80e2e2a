"""One named predictor: the Detector, ssd-serve's client and the PyTorch model play it, and
one opener (runtime/predictor.py) opens a model file, an engine or a server."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from ssd_edge.common.errors import UsageError
from ssd_edge.evaluation.predictor import TorchPredictor
from ssd_edge.evaluation.predictor import open_predictor as open_evaluated
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.models import build_model
from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.predictor import Predictor, open_predictor
from ssd_edge.runtime.serve.client import DetectionClient

MEMBERS = ("__call__", "class_names", "config", "backend", "close", "__enter__", "__exit__")
NAMES = ("bg", "cat", "dog")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mobilenetv3_small_ssd", list(NAMES), imgsz=160).eval()


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("predictor") / "model.onnx", dynamic=True)


@pytest.mark.parametrize("cls", [Detector, DetectionClient, TorchPredictor])
def test_every_predictor_has_the_protocols_members(cls):
    assert [name for name in MEMBERS if not hasattr(cls, name)] == []


def test_the_opener_opens_a_model_file_as_a_predictor(onnx_path):
    image = np.zeros((120, 200, 3), np.uint8)
    with open_predictor(onnx_path, score_threshold=0.01) as predictor:
        assert isinstance(predictor, Predictor) and isinstance(predictor, Detector)
        assert predictor.class_names == NAMES and predictor.config.score_threshold == 0.01
        (found,) = predictor([image])
    assert found.class_names == NAMES


def test_evaluation_opens_a_checkpoint_as_a_torch_predictor_and_a_model_file_as_the_runtime_does(
        model, onnx_path, tmp_path):
    from ssd_edge.checkpoint import save_checkpoint

    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model)
    image = np.zeros((120, 200, 3), np.uint8)
    with open_evaluated(checkpoint) as torch_predictor, open_evaluated(onnx_path) as detector:
        assert isinstance(torch_predictor, TorchPredictor) and isinstance(torch_predictor, Predictor)
        assert isinstance(detector, Detector)
        assert torch_predictor.class_names == detector.class_names == NAMES
        assert torch_predictor.config == model.post_processor.config
        (found,) = torch_predictor([image])
    assert found.class_names == NAMES and found.names == [NAMES[int(label)] for label in found.labels]


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give a model file"),
    ({"model": "ssd.onnx", "server": "127.0.0.1:8000"}, "not both"),
    ({"server": "127.0.0.1:8000", "backend": "openvino"}, "on a server the backend is ssd-serve's"),
    ({"server": "127.0.0.1:8000", "threads": 2}, "threads: options of a local model"),
])
def test_the_opener_refuses_what_does_not_fit_before_connecting(kwargs, message):
    with pytest.raises(UsageError, match=message):
        open_predictor(**kwargs)


def test_predict_does_not_import_the_serving_package():
    code = ("import sys; import ssd_edge.runtime.predict; "
            "print(sorted(m for m in sys.modules if m.startswith('ssd_edge.runtime.serve')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
