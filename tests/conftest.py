import pytest


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """A small synthetic COCO-layout dataset shared by the tests (read-only: copy it to change it)."""
    from ssd_edge.data.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_coco")
    return write_synthetic_dataset(root, train=10, val=4, seed=3, config=SynthConfig(min_side=160, max_side=260))
