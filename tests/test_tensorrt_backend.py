"""The TensorRT backend's checks before it runs an engine: the engine's own tensor shapes
against its sidecar (a stale sidecar would size buffers TensorRT writes past), TensorRT
older than 10 and old JetPacks refused by name. Engines come from tests/tensorrt_fakes.py
(whose API is checked against the real bindings in test_tensorrt_bindings.py); device
memory is replaced by host stand-ins, the only part not under test."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssd_edge.runtime.backends import tensorrt_backend, tensorrt_support
from ssd_edge.runtime.backends.tensorrt_backend import EngineError, EngineRunner, import_tensorrt
from ssd_edge.runtime.cuda.resources import GpuError
from ssd_edge.runtime.model_file import EngineSidecar
from ssd_edge.runtime.spec import DefaultBoxConfig, ModelSpec
from tests.helpers.tensorrt_fakes import fake_tensorrt, ssd_engine

SPEC = ModelSpec(
    arch="mobilenetv3_ssd", input_size=(64, 64), class_names=("bg", "a", "b"),
    default_boxes=DefaultBoxConfig(feature_maps=((4, 4), (2, 2)), scales=(0.2, 0.5, 1.0),
                                   aspect_ratios=((2.0,), (2.0,))),
)


class HostBuffer:
    """Stands in for DeviceBuffer / PinnedBuffer: records the size asked for."""

    def __init__(self, size_or_shape, *args) -> None:
        self.size = size_or_shape
        self.address = id(self)
        self.array = None

    def free(self) -> None:
        pass


@pytest.fixture
def host_memory(monkeypatch):
    monkeypatch.setattr(tensorrt_backend, "DeviceBuffer", HostBuffer)
    monkeypatch.setattr(tensorrt_backend, "PinnedBuffer", HostBuffer)


def _open(tmp_path: Path, engine, spec: ModelSpec = SPEC) -> EngineRunner:
    trt = fake_tensorrt()
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized engine")
    trt._engines[b"serialized engine"] = engine
    cuda_context = SimpleNamespace(name="Orin", compute_capability=(8, 7))
    return EngineRunner(path, EngineSidecar(spec=spec, tensorrt_version="10.3.0"), trt, cuda_context, stream=None)


@pytest.mark.parametrize("batch, max_batch", [(2, None), (-1, 8)])
def test_buffers_are_sized_for_the_engines_largest_batch(tmp_path, host_memory, batch, max_batch):
    runner = _open(tmp_path, ssd_engine(SPEC, batch, max_batch))
    top = max_batch or batch
    p, c = SPEC.num_priors, SPEC.num_classes
    assert (runner.dynamic, runner.min_batch, runner.max_batch) == (batch == -1, 1 if batch == -1 else batch, top)
    assert {name: buffer.size for name, buffer in runner.buffers.items()} == {
        "images": top * 3 * 64 * 64 * 4, "locs": top * p * 4 * 4, "confs": top * p * c * 4}
    assert set(runner.context._addresses) == {"images", "locs", "confs"}


@pytest.mark.parametrize("stale, tensor, engine_shape, sidecar_shape", [
    (dict(num_classes=5), "confs", "(1, {p}, 5)", "(1, {p}, 3)"),  # another model's classes
    (dict(spec=SPEC.replace(input_size=(96, 96))), "images", "(1, 3, 64, 64)", "(1, 3, 96, 96)"),
])
def test_a_stale_sidecar_is_refused_naming_the_engine_and_both_shapes(tmp_path, host_memory, stale, tensor,
                                                                      engine_shape, sidecar_shape):
    spec = stale.pop("spec", SPEC)
    engine = ssd_engine(SPEC, 1, **stale)
    with pytest.raises(EngineError) as caught:
        _open(tmp_path, engine, spec)
    message, p = str(caught.value), SPEC.num_priors
    assert message.startswith(f"{tmp_path / 'model.engine'}: the engine's tensor '{tensor}' has shape "
                              f"{engine_shape.format(p=p)}, but its sidecar {tmp_path / 'model.engine.json'} "
                              f"describes {sidecar_shape.format(p=p)}")


def test_the_check_runs_before_anything_is_allocated(tmp_path, monkeypatch):
    def no_allocation(*args):
        raise AssertionError("a buffer was allocated for an engine that does not match its sidecar")

    monkeypatch.setattr(tensorrt_backend, "DeviceBuffer", no_allocation)
    monkeypatch.setattr(tensorrt_backend, "PinnedBuffer", no_allocation)
    with pytest.raises(EngineError, match="has shape"):
        _open(tmp_path, ssd_engine(SPEC, -1, 4, num_classes=7))


# --- which TensorRT ---------------------------------------------------------------------------


def test_tensorrt_older_than_10_is_refused_by_version(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.2.1.8"))
    with pytest.raises(GpuError) as caught:
        import_tensorrt(tmp_path / "model.engine", EngineSidecar(spec=SPEC))
    assert str(caught.value).startswith(
        f"{tmp_path / 'model.engine'}: TensorRT 8.2.1.8: this TensorRT/JetPack is not supported (needs TensorRT 10+, "
        "JetPack 6)")
    assert "not installed" not in str(caught.value)


def test_jetpack_4_says_so_instead_of_not_installed(monkeypatch, tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n")
    monkeypatch.setattr(tensorrt_support, "TEGRA_RELEASE", release)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as in a newer Python than JetPack 4's 3.6
    with pytest.raises(GpuError) as caught:
        import_tensorrt(tmp_path / "model.engine", EngineSidecar(spec=SPEC))
    assert str(caught.value).startswith(
        f"{tmp_path / 'model.engine'}: this TensorRT/JetPack is not supported (needs TensorRT 10+, JetPack 6): this "
        "Jetson runs L4T R32.7.1, "
        "JetPack 4.x (TensorRT 8.2, Python 3.6)")


@pytest.mark.parametrize("text, expected", [
    ("# R35 (release), REVISION: 4.1, GCID: 1, BOARD: generic", "L4T R35.4.1, JetPack 5.x (TensorRT 8.5)"),
    ("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic", None),  # JetPack 6: supported
    ("not a release line", None),
])
def test_old_jetpack_reads_the_l4t_release(tmp_path, text, expected):
    release = tmp_path / "nv_tegra_release"
    release.write_text(text)
    assert tensorrt_support.old_jetpack(release) == expected
    assert tensorrt_support.old_jetpack(tmp_path / "absent") is None  # not a Jetson


def test_without_tensorrt_and_off_a_jetson_it_is_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(tensorrt_support, "TEGRA_RELEASE", tmp_path / "absent")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(GpuError, match=r"a TensorRT engine runs only where TensorRT and an NVIDIA GPU are"):
        import_tensorrt(tmp_path / "model.engine", EngineSidecar(spec=SPEC))


@pytest.mark.parametrize("version, supported", [("8.6.1", False), ("10.3.0", True), ("11.4.0.106", True),
                                                ("9.3.0.post12.dev1", False), ("", False)])
def test_supported_versions(version, supported):
    assert (tensorrt_support.unsupported(version) is None) == supported
