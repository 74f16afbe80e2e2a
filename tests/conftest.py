import pytest


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """A small synthetic COCO-layout dataset shared by the tests (read-only: copy it to change it)."""
    from ssd_edge.data.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_coco")
    return write_synthetic_dataset(root, train=10, val=4, seed=3, config=SynthConfig(min_side=160, max_side=260))


TORCH_PACKAGES = ("torch", "torchvision")


class _TorchOptionalModule(pytest.Module):
    """A test module that skips, instead of erroring, when it imports torch on a torch-free
    install (the README's Jetson one), so `pytest -m "gpu or tensorrt"` collects there. Only
    a ModuleNotFoundError for torch itself counts: any other import error still fails."""

    def collect(self):
        try:
            return super().collect()
        except self.CollectError as exc:
            cause = exc.__cause__
            if isinstance(cause, ModuleNotFoundError) and (cause.name or "").split(".")[0] in TORCH_PACKAGES:
                pytest.skip(f"{self.path.name} needs {cause.name}, which this install does not have",
                            allow_module_level=True)
            raise


def pytest_pycollect_makemodule(module_path, parent):
    return _TorchOptionalModule.from_parent(parent, path=module_path)
