"""Every backend is one `Backend`: the same I/O check (metadata that disagrees with the
network is refused by onnxruntime and OpenVINO alike), options as small frozen dataclasses
validated where built, and one registry from which the Detector and every command take
their choices, so that a backend option is added in its backend's module alone."""

import pytest

from ssd_edge.runtime import Detector
from ssd_edge.runtime.spec import SpecError
from tests.test_model_metadata import CASES, with_metadata

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


# --- the Backend protocol, the I/O check and the input buffer ---------------------------------

import argparse  # noqa: E402
import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from ssd_edge.common.errors import UsageError  # noqa: E402
from ssd_edge.runtime.backends import onnxruntime_backend, registry  # noqa: E402
from ssd_edge.runtime.backends.base import Backend, HostInputBuffer, check_network_io, option  # noqa: E402
from ssd_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeOptions  # noqa: E402
from ssd_edge.runtime.backends.openvino_backend import OpenVinoOptions  # noqa: E402
from ssd_edge.runtime.backends.tensorrt_backend import TensorRTOptions  # noqa: E402
from ssd_edge.runtime.spec import DefaultBoxConfig, ModelSpec  # noqa: E402

SPEC = ModelSpec(arch="mobilenetv3_ssd", input_size=(160, 160), class_names=("background", "a", "b"),
                 default_boxes=DefaultBoxConfig(feature_maps=((4, 4), (2, 2)), scales=(0.2, 0.5, 1.0),
                                                aspect_ratios=((2.0,), (2.0,))))


def network(batch=1, classes=3, priors=None, size=(160, 160)):
    priors = SPEC.num_priors if priors is None else priors
    return ({"images": [batch, 3, *size]}, {"locs": [batch, priors, 4], "confs": [batch, priors, classes]})


def test_check_network_io_returns_the_fixed_batch_and_skips_dynamic_dimensions():
    assert check_network_io(SPEC, *network(4), "m.onnx") == 4
    assert check_network_io(SPEC, *network("batch"), "m.onnx") is None
    inputs, outputs = network(None)
    outputs["confs"][1] = None  # a dynamic number of boxes is not compared
    assert check_network_io(SPEC, inputs, outputs, "m.onnx") is None


@pytest.mark.parametrize("change, message", [
    (lambda i, o: o.update(confs=[1, SPEC.num_priors, 5]), "m.onnx: output 'confs' has 5 class scores per box, "
                                                           "expected 3; the ModelSpec lists 3 class names"),
    (lambda i, o: o.update(locs=[1, 7, 4]), "output 'locs' has 7 default boxes"),
    (lambda i, o: o.update(locs=[1, SPEC.num_priors]), r"output 'locs' has shape \[1, \d+\]; expected"),
    (lambda i, o: o.update(confs=[2, SPEC.num_priors, 3]), "output 'confs' has batch 2, but the input's is 1"),
    (lambda i, o: o.pop("confs"), r"outputs \['confs'\] missing"),
    (lambda i, o: i.update(images=[1, 3, 320, 320]), r"input shape \[1, 3, 320, 320\] does not match"),
    (lambda i, o: i.update(pixels=i.pop("images")), "no input 'images' \\(it has pixels\\)"),
])
def test_check_network_io_refuses_a_network_the_spec_does_not_describe(change, message):
    inputs, outputs = network()
    change(inputs, outputs)
    with pytest.raises(SpecError, match=message):
        check_network_io(SPEC, inputs, outputs, "m.onnx")


def test_check_network_io_words_a_mismatch_as_the_backend_asks():
    inputs, outputs = network(-1, classes=7)
    with pytest.raises(UsageError, match=r"confs: \(-1, \d+, 7\) vs \(-1, \d+, 3\)"):
        check_network_io(SPEC, inputs, outputs, "m.engine", error=UsageError,
                         explain=lambda name, shape, wanted: f"{name}: {shape} vs {wanted}")


def test_host_input_buffer_pads_a_fixed_batch_and_grows_a_dynamic_one():
    fixed = HostInputBuffer((8, 8), 4)
    assert fixed.view(2).shape == (2, 3, 8, 8) and fixed.network_input(2).shape == (4, 3, 8, 8)
    dynamic = HostInputBuffer((8, 8), None)
    dynamic.view(5)[:] = 1
    assert dynamic.network_input(5).shape == (5, 3, 8, 8) and np.all(dynamic.network_input(5) == 1)
    assert dynamic.view(2).base is dynamic.array  # reused, not reallocated


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_every_backend_is_a_backend(model_path, backend):  # noqa: F811
    _backend_available(backend)
    with Detector(model_path, backend=backend, threads=1) as detector:
        assert isinstance(detector._backend, Backend)
        assert detector._backend.config == detector.config and detector._backend.max_batch == 1  # a fixed batch
        assert detector._backend.input_buffer(1).shape == (1, 3, *detector.spec.input_size)
        assert isinstance(detector._backend.options, registry.BACKENDS[backend].options)


# --- backend options: frozen dataclasses, validated where built, chosen through the registry ----------

def test_options_are_validated_where_they_are_built():
    with pytest.raises(UsageError, match="threads must be at least 1, got 0"):
        OnnxRuntimeOptions(threads=0)
    with pytest.raises(UsageError, match="spinning is on \\(True\\) or off \\(False\\), got 'yes'"):
        OnnxRuntimeOptions(spinning="yes")
    with pytest.raises(UsageError, match="unknown OpenVINO device 'TPU'; choose from CPU, GPU, NPU, AUTO"):
        OpenVinoOptions(device="TPU")
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        OpenVinoOptions(precision="fp8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        OpenVinoOptions().device = "GPU"


def test_the_registry_is_the_one_list_of_backends():
    assert registry.CHOICES == ("auto", "onnxruntime", "onnxruntime-cpu", "onnxruntime-tensorrt", "openvino",
                                "tensorrt")
    from ssd_edge.runtime.detector import BACKENDS

    assert BACKENDS == registry.CHOICES
    assert [registry.BACKENDS[n].options for n in registry.BACKENDS] == [
        OnnxRuntimeOptions, OnnxRuntimeOptions, OnnxRuntimeOptions, OpenVinoOptions, TensorRTOptions]
    for name, field in registry.option_fields().items():
        assert field.metadata.get("help"), f"backend option {name} has no help line"


def test_the_detector_takes_an_options_object_or_the_keywords_not_both(model_path):  # noqa: F811
    with Detector(model_path, backend="onnxruntime-cpu", options=OnnxRuntimeOptions(threads=1, spinning=True)) as det:
        assert det._backend.options == OnnxRuntimeOptions(threads=1, spinning=True) and det._backend.spinning
    with pytest.raises(UsageError, match="not both"):
        Detector(model_path, backend="onnxruntime-cpu", options=OnnxRuntimeOptions(), threads=1)
    with pytest.raises(UsageError, match="OpenVinoOptions are not OnnxRuntimeOptions"):
        Detector(model_path, options=OpenVinoOptions())
    with pytest.raises(UsageError, match="device is an OpenVINO option; backend is 'onnxruntime-cpu'"):
        Detector(model_path, backend="onnxruntime-cpu", options={"device": "CPU"})
    with pytest.raises(UsageError, match="option threads given twice: 1 and 2"):
        Detector(model_path, threads=1, options={"threads": 2})


# --- adding a backend option touches one file --------------------------------------------------------

COMMANDS = ("predict", "eval", "serve", "bench", "demo")


def command_parser(name):
    from importlib import import_module

    return import_module(f"ssd_edge.cli.{name}").build_parser()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_backend_option_has_a_flag_on_every_command_with_a_backend(command):
    from ssd_edge.cli.backend_args import option_flags

    flags = option_flags(command_parser(command))
    assert set(flags) == set(registry.option_fields())
    if command == "eval":  # its --device is the PyTorch device of .pt models
        assert flags["device"] == "--openvino-device"
    else:
        assert flags["device"] == "--device"


def test_an_option_added_to_a_backends_options_class_reaches_the_backend(model_path, monkeypatch, tmp_path):  # noqa: F811
    """What a new backend option needs is its field: the flag, the parsing, the Detector's
    routing and the refusal by other backends all follow from the options class."""
    from ssd_edge.cli.backend_args import backend_options

    extended = dataclasses.make_dataclass(
        "OnnxRuntimeOptions", [("graph_level", "int | None", option(None, "graph optimisation level", parse=int))],
        bases=(OnnxRuntimeOptions,), frozen=True)
    monkeypatch.setattr(onnxruntime_backend, "OnnxRuntimeOptions", extended)
    for command in COMMANDS:
        assert "--graph-level" in command_parser(command)._option_string_actions, command
    args = command_parser("predict").parse_args(["--model", str(model_path), "a.jpg", "--output", str(tmp_path),
                                                 "--graph-level", "2", "--spinning", "on"])
    chosen = backend_options(args)
    assert chosen == {"graph_level": 2, "spinning": True}
    with Detector(model_path, backend="onnxruntime-cpu", options=chosen) as detector:
        assert detector._backend.options == extended(graph_level=2, spinning=True)
    with pytest.raises(UsageError, match="graph_level is an onnxruntime option; backend is 'openvino'"):
        Detector(model_path, backend="openvino", options={"graph_level": 2})


def test_a_backend_option_the_backend_does_not_take_is_one_line_on_the_command_line(model_path, tmp_path, capsys):  # noqa: F811
    import cv2

    from ssd_edge.cli.predict import main

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SystemExit) as exited:
        main(["--model", str(model_path), str(image), "--output", str(tmp_path / "out"), "--backend",
              "onnxruntime-cpu", "--precision", "bf16"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "ssd-predict: error: precision is an OpenVINO option; backend is 'onnxruntime-cpu'"


def test_backend_options_leaves_out_what_was_not_given():
    from ssd_edge.cli.backend_args import add_backend_arguments, backend_options

    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    assert backend_options(parser.parse_args([])) == {}
    assert backend_options(parser.parse_args(["--threads", "2", "--spinning", "off"])) == {"threads": 2,
                                                                                        "spinning": False}
