"""What a weights file is, decided in one place (`open_weights`), and the model it gives."""

import pytest
import torch

from ssd_edge.checkpoint import (
    CHECKPOINT,
    TORCHVISION,
    CheckpointError,
    load_checkpoint,
    load_model,
    open_weights,
    save_checkpoint,
)
from ssd_edge.models import build_model
from ssd_edge.models.torchvision_import import coco_category_names, detector_state_dict


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("mobilenetv3_small_ssd", ["bg", "cat"], 160, postprocess={"score_threshold": 0.25})
    path = tmp_path_factory.mktemp("weights") / "ours.pt"
    save_checkpoint(path, model, epoch=3)
    return path, model


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """Our mobilenetv3_ssd's weights under torchvision's SSDLite320 key names."""
    torch.manual_seed(1)
    model = build_model("mobilenetv3_ssd", coco_category_names())
    keys = {k.replace("extras.", "backbone.extra.")
            .replace("classification_headers.", "head.classification_head.module_list.")
            .replace("regression_headers.", "head.regression_head.module_list."): k for k in model.state_dict()}
    assert detector_state_dict(model, {theirs: theirs for theirs in keys}).keys() == model.state_dict().keys()
    path = tmp_path_factory.mktemp("weights") / "tv.pth"
    torch.save({theirs: model.state_dict()[our] for theirs, our in keys.items()}, path)
    return path, model


def test_our_checkpoint_is_recognised_and_rebuilt(ours):
    path, model = ours
    weights = open_weights(path)
    assert weights.kind == CHECKPOINT and weights.data["epoch"] == 3
    loaded = load_model(path)
    assert loaded.spec == model.spec
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert load_checkpoint(path)["epoch"] == 3


def test_torchvision_state_dict_is_recognised_and_needs_an_arch(torchvision_file):
    path, model = torchvision_file
    weights = open_weights(path)
    assert weights.kind == TORCHVISION
    with pytest.raises(CheckpointError, match="say which architecture with --arch"):
        weights.model()
    loaded = load_model(path, "mobilenetv3_ssd")
    assert loaded.spec.class_names == tuple(coco_category_names())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CheckpointError, match=r"tv\.pth: "):
        load_model(path, "vgg16_ssd")
    with pytest.raises(CheckpointError, match="not an ssd-edge checkpoint"):
        load_checkpoint(path)


def test_anything_else_is_refused_with_the_file_named(ours, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: neither an ssd-edge checkpoint nor a torchvision"):
        open_weights(foreign)
    future = tmp_path / "future.pt"
    torch.save({**torch.load(ours[0], weights_only=True), "version": 99}, future)
    with pytest.raises(CheckpointError, match=r"future\.pt: checkpoint version 99"):
        load_model(future)
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such file"):
        open_weights(tmp_path / "missing.pt")
