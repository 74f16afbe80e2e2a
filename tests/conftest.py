import pytest


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """A small synthetic COCO-layout dataset shared by the tests (read-only: copy it to change it)."""
    from ssd_edge.data.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_coco")
    return write_synthetic_dataset(root, train=10, val=4, seed=3, config=SynthConfig(min_side=160, max_side=260))


@pytest.fixture(scope="module")
def images(tiny_coco):
    """Every image of tiny_coco, BGR uint8 arrays in path order (the export and OpenVINO tests;
    test_predict.py has its own `images`, files in folders)."""
    from tests.helpers.export import dataset_images

    return dataset_images(tiny_coco)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """The demo tests' model, an ONNX path (str): an untrained mobilenetv3_small_ssd, 160x160,
    classes tests.helpers.demo.CLASSES (test_serve.py has its own `model_path`). Skips
    without torch, which exporting it needs."""
    pytest.importorskip("torch", reason="exporting the demo tests' model needs torch")
    from tests.helpers.demo import export_demo_model

    return str(export_demo_model(tmp_path_factory.mktemp("model") / "demo.onnx"))


# Packages a device install (the README's Jetson one) does not have: training's torch and
# export's onnx/onnxsim. A test module importing one of them at module level is skipped there.
OPTIONAL_PACKAGES = ("torch", "torchvision", "onnx", "onnxsim")


class _TorchOptionalModule(pytest.Module):
    """A test module that skips, instead of erroring, when it imports torch or the export-only
    onnx/onnxsim on an install without them (the README's Jetson one), so `pytest -m "gpu or
    tensorrt"` collects there. Only a ModuleNotFoundError for one of OPTIONAL_PACKAGES itself
    counts (onnxruntime is not one of them): any other import error still fails."""

    def collect(self):
        try:
            return super().collect()
        except self.CollectError as exc:
            cause = exc.__cause__
            if isinstance(cause, ModuleNotFoundError) and (cause.name or "").split(".")[0] in OPTIONAL_PACKAGES:
                pytest.skip(f"{self.path.name} needs {cause.name}, which this install does not have",
                            allow_module_level=True)
            raise


def pytest_pycollect_makemodule(module_path, parent):
    return _TorchOptionalModule.from_parent(parent, path=module_path)
