"""Every backend is one `Backend`: the same I/O check (metadata that disagrees with the
network is refused by onnxruntime and OpenVINO alike), options as small frozen dataclasses
validated where built, and one registry from which the Detector and every command take
their choices, so that a backend option is added in its backend's module alone."""

import pytest

from ssd_edge.runtime import Detector
from ssd_edge.runtime.spec import SpecError
from tests.test_model_metadata import CASES, with_metadata
from tests.test_demo import model_path  # noqa: F401  (a fixture: a small exported SSD, 160x160, 3 classes)

ONNX_BACKENDS = ["onnxruntime-cpu", "openvino"]


def _backend_available(name):
    if name == "openvino":
        pytest.importorskip("openvino", reason="backend 'openvino' needs `pip install 'ssd-edge[openvino]'`")


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_more_class_names_than_scores_is_refused_on_every_backend(model_path, tmp_path, backend):  # noqa: F811
    _backend_available(backend)
    change, _ = CASES["fewer class names than scores"]
    bad = with_metadata(model_path, tmp_path / "disagreeing.onnx", change)
    with pytest.raises(SpecError, match=r"disagreeing.onnx: output 'confs' has 3 class scores per box, expected 2"):
        Detector(bad, backend=backend)


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_metadata_that_disagrees_with_the_network_is_refused_by_every_backend(
        model_path, tmp_path, backend, case):  # noqa: F811
    _backend_available(backend)
    change, message = CASES[case]
    bad = with_metadata(model_path, tmp_path / "disagreeing.onnx", change)
    with pytest.raises(SpecError, match=message) as raised:
        Detector(bad, backend=backend)
    assert "disagreeing.onnx" in str(raised.value)
