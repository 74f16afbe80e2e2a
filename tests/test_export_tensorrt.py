"""TensorRT engine builds. The builds run wherever TensorRT and an NVIDIA GPU are present
(marked `tensorrt`, skipped with the reason elsewhere); the refusals, and the DLA hints by
TensorRT version, run everywhere. The feature detection that picks the 10.x or 11.x way of
building runs on the real bindings in test_tensorrt_bindings.py."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from ssd_edge.export.engine import (
    EngineOptions,
    TensorRTUnavailable,
    build_engine,
    build_environment,
    profile_shapes,
)
from ssd_edge.export.quantize import quantize_int8
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.runtime.backends.tensorrt_logging import create
from ssd_edge.runtime.backends.tensorrt_support import Capabilities
from ssd_edge.runtime.image_io import list_images
from ssd_edge.runtime.parity import onnx_outputs
from ssd_edge.runtime.preprocess import preprocess
from tests.helpers.export import calibrated_model, dataset_images, run_engine

# What TensorRT 10.3 offers (test_tensorrt_bindings.py checks Capabilities.of on the real 10.3 and 11.4 bindings).
TENSORRT_10 = Capabilities(fp16_flag=True, strongly_typed_flag=True, only_strongly_typed=False, memory_pools=True,
                           progress_monitor=True, dla=True)


def test_profile_shapes_static_and_dynamic():
    spec = SimpleNamespace(input_name="images", input_size=(320, 320))
    assert profile_shapes(spec, 2, 2) == {"images": {"min": [2, 3, 320, 320], "opt": [2, 3, 320, 320],
                                                     "max": [2, 3, 320, 320]}}
    assert profile_shapes(spec, None, 8)["images"] == {"min": [1, 3, 320, 320], "opt": [8, 3, 320, 320],
                                                       "max": [8, 3, 320, 320]}


def test_refused_in_one_line_without_tensorrt(monkeypatch, tmp_path):
    from ssd_edge.runtime.backends import tensorrt_support

    monkeypatch.setattr(tensorrt_support, "TEGRA_RELEASE", tmp_path / "not-a-jetson")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now fails, as on a CPU-only machine
    with pytest.raises(TensorRTUnavailable, match=r"^TensorRT is not installed \(import tensorrt: .*\)") as caught:
        build_engine(tmp_path / "model.onnx", tmp_path / "model.engine")
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_8_is_refused_as_unsupported_not_missing(monkeypatch, tmp_path):
    from tests.helpers.tensorrt_fakes import fake_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.2.1.8"))
    with pytest.raises(TensorRTUnavailable, match=r"^TensorRT 8\.2\.1\.8: this TensorRT/JetPack is not supported "
                                                  r"\(needs TensorRT 10\+, JetPack 6\)"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.engine")


@pytest.mark.parametrize("version, hint", [
    ("10.3.0", "this device has no DLA cores "
               "(on JetPack 6, Jetson AGX Orin and Orin NX have them; Orin Nano has none)"),
    ("11.2.1", "TensorRT 11.2.1 cannot use DLA on a Jetson (TensorRT 11.0 to 11.4.0 have no Jetson DLA support)"),
    ("11.4.0.106", "TensorRT 11.4.0.106 cannot use DLA on a Jetson"),
    ("11.4.1", "this device has no DLA cores "
               "(TensorRT 11.4.1 and newer run DLA only on Jetson AGX Orin with JetPack 7.2.2"),
])
def test_dla_hint_follows_the_tensorrt_version(version, hint):
    from ssd_edge.export.engine import _use_dla

    trt = SimpleNamespace(__version__=version)
    builder = SimpleNamespace(num_DLA_cores=0)
    with pytest.raises(TensorRTUnavailable) as caught:
        _use_dla(trt, builder, SimpleNamespace(), TENSORRT_10, EngineOptions(precision="fp16", dla_core=0))
    assert str(caught.value).startswith(f"--dla-core 0: {hint}")


def test_builder_that_cannot_start_is_refused_with_tensorrts_reason(tmp_path):
    from ssd_edge.export.engine import _serialize
    from ssd_edge.runtime.cuda.device import GpuInfo
    from tests.helpers.tensorrt_fakes import fake_tensorrt

    trt = fake_tensorrt("10.3.0", start_failure="Builder", reason="CUDA initialization failure with error: 35")
    with pytest.raises(TensorRTUnavailable, match=r"^TensorRT 10\.3\.0 could not create its Builder: CUDA "
                                                  r"initialization failure with error: 35$"):
        _serialize(trt, TENSORRT_10, GpuInfo("Orin", (8, 7)), None, tmp_path / "model.onnx",
                   EngineOptions(), {})


def test_build_callbacks_import_on_any_tensorrt(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT at all
    callbacks = importlib.reload(importlib.import_module("ssd_edge.export.tensorrt_callbacks"))
    assert callbacks.build_progress(SimpleNamespace()) is None  # a TensorRT without IProgressMonitor

    class IProgressMonitor:
        def __init__(self) -> None:
            self.initialised = True

    monitor = callbacks.build_progress(SimpleNamespace(IProgressMonitor=IProgressMonitor))
    assert isinstance(monitor, IProgressMonitor) and monitor.initialised
    monitor.phase_start("build", None, 3)
    monitor.phase_start("tactics", "build", 2)
    assert monitor.step_complete("tactics", 1) is True
    monitor.phase_finish("tactics")
    monitor.phase_finish("build")
    assert monitor._bars == {} and monitor._depth == {}


# --- real builds: TensorRT and a GPU ------------------------------------------------------


@pytest.fixture(scope="module")
def trt(tmp_path_factory):
    try:
        module, _, _ = build_environment()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    return module


@pytest.fixture(scope="module")
def exported(trt, tiny_coco, tmp_path_factory):
    images = dataset_images(tiny_coco)
    model = calibrated_model("mobilenetv3_ssd", images[:4])
    folder = tmp_path_factory.mktemp("engines")
    static = export_onnx(model, folder / "static.onnx", batch=2)
    dynamic = export_onnx(model, folder / "dynamic.onnx", dynamic=True)
    int8 = quantize_int8(dynamic, folder / "dynamic.int8.onnx", list_images(tiny_coco, 8, recursive=True), "tensorrt",
                         progress=False)
    return SimpleNamespace(spec=model.spec, static=static, dynamic=dynamic, int8=int8, images=images, folder=folder)


def _engine(trt, path):
    runtime = create(trt, "Runtime")  # with the process's logger, which TensorRT keeps for good
    return runtime.deserialize_cuda_engine(path.read_bytes())


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_dynamic_engine_builds_runs_and_matches_onnxruntime(trt, exported, precision, tolerance):
    engine_path = exported.folder / f"dynamic.{precision}.engine"
    build_engine(exported.dynamic, engine_path, EngineOptions(precision=precision, batch=4, progress=False))
    sidecar = json.loads((exported.folder / f"dynamic.{precision}.engine.json").read_text())
    assert sidecar["precision"] == precision and sidecar["tensorrt_version"] == trt.__version__
    assert sidecar["profile"]["images"] == {"min": [1, 3, 320, 320], "opt": [4, 3, 320, 320], "max": [4, 3, 320, 320]}
    assert sidecar["model_spec"] == exported.spec.to_dict() and sidecar["gpu"]["name"]
    engine = _engine(trt, engine_path)
    assert [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)] == ["images", "locs", "confs"]
    x = preprocess(exported.images[:4], exported.spec.input_size)
    for batch in (1, 4):
        locs, confs = run_engine(engine, x[:batch])
        reference = onnx_outputs(exported.dynamic, x[:batch], batch)
        assert np.abs(confs - reference[1]).max() <= tolerance * np.abs(reference[1]).max()


@pytest.mark.tensorrt
def test_static_engine_and_timing_cache(trt, exported, tmp_path):
    cache = tmp_path / "timing.cache"
    for name in ("first", "second"):  # the second build reuses the first one's timing cache
        build_engine(exported.static, tmp_path / f"{name}.engine",
                     EngineOptions(batch=2, timing_cache=cache, progress=False))
        assert cache.stat().st_size > 0
    sidecar = json.loads((tmp_path / "second.engine.json").read_text())
    assert sidecar["profile"]["images"]["min"] == sidecar["profile"]["images"]["max"] == [2, 3, 320, 320]


@pytest.mark.tensorrt
def test_int8_engine_from_the_tensorrt_flavour(trt, exported):
    engine_path = exported.folder / "dynamic.int8.engine"
    build_engine(exported.int8, engine_path, EngineOptions(precision="int8", batch=2, progress=False))
    assert json.loads(engine_path.with_name("dynamic.int8.engine.json").read_text())["precision"] == "int8"
    locs, confs = run_engine(_engine(trt, engine_path), preprocess(exported.images[:2], exported.spec.input_size))
    assert np.isfinite(confs).all() and confs.shape == (2, exported.spec.num_priors, exported.spec.num_classes)


@pytest.mark.tensorrt
def test_int8_refuses_the_cpu_flavour(trt, exported, tiny_coco):
    cpu = quantize_int8(exported.dynamic, exported.folder / "cpu.int8.onnx", list_images(tiny_coco, 4, recursive=True),
                        "cpu", progress=False)
    with pytest.raises(Exception, match="'cpu' flavour; TensorRT needs the 'tensorrt' flavour"):
        build_engine(cpu, exported.folder / "cpu.engine", EngineOptions(precision="int8", progress=False))


@pytest.mark.tensorrt
def test_dla_core_with_gpu_fallback(trt, exported):
    builder = create(trt, "Builder")
    if getattr(builder, "num_DLA_cores", 0) == 0:
        pytest.skip("this GPU has no DLA cores (Jetson AGX/NX Orin and Xavier have them)")
    engine_path = exported.folder / "dla.engine"
    build_engine(exported.static, engine_path, EngineOptions(precision="fp16", batch=2, dla_core=0, progress=False))
    assert json.loads(engine_path.with_name("dla.engine.json").read_text())["dla_core"] == 0
