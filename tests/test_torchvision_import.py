"""Our architectures are torchvision's layer for layer: its weights load and give the same
raw outputs and the same detections. Offline: torchvision's models are built with random
weights (and randomised batch-norm statistics) instead of downloading any."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, vgg16
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

from ssd_edge.models import build_model
from ssd_edge.models.torchvision_import import (
    coco_category_names,
    load_torchvision_backbone,
    load_torchvision_detector,
)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 0.05 + 0.01)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


def torchvision_raw(tv_model, images):
    normalised, _ = tv_model.transform(list(images))
    features = list(tv_model.backbone(normalised.tensors).values())
    head = tv_model.head(features)
    return head["bbox_regression"], head["cls_logits"]


@pytest.mark.parametrize(
    "arch, make_torchvision, size",
    [
        ("mobilenetv3_ssd", lambda: ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None), 320),
        ("vgg16_ssd", lambda: ssd300_vgg16(weights=None, weights_backbone=None), 300),
    ],
)
def test_coco_detector_weights_give_torchvision_outputs(arch, make_torchvision, size):
    torch.manual_seed(0)
    tv_model = randomise_batchnorm(make_torchvision()).eval()
    model = load_torchvision_detector(build_model(arch, coco_category_names()), tv_model.state_dict()).eval()
    images = torch.rand(2, 3, size, size)

    with torch.no_grad():
        tv_locs, tv_confs = torchvision_raw(tv_model, images)
        locs, confs = model.raw(images)
        assert locs.shape == tv_locs.shape and confs.shape == tv_confs.shape
        assert (locs - tv_locs).abs().max() <= 1e-5
        assert (confs - tv_confs).abs().max() <= 1e-5

        tv_detections = tv_model(list(images))
        boxes, labels, scores, _ = model(images)
    for b, tv in enumerate(tv_detections):
        assert len(tv["scores"]) > 5
        np.testing.assert_array_equal(labels[b].numpy(), tv["labels"].numpy())
        np.testing.assert_allclose(scores[b].numpy(), tv["scores"].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(boxes[b].numpy(), tv["boxes"].numpy(), atol=1e-3)


def test_postprocessing_presets_are_torchvision_values():
    spec = build_model("mobilenetv3_ssd", 91).spec
    assert (spec.score_threshold, spec.iou_threshold, spec.top_k, spec.max_detections) == (0.001, 0.55, 300, 300)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    spec = build_model("vgg16_ssd", 91).spec
    assert (spec.score_threshold, spec.iou_threshold, spec.top_k, spec.max_detections) == (0.01, 0.45, 400, 200)


def test_imagenet_mobilenet_backbone_loads():
    torch.manual_seed(1)
    classifier = randomise_batchnorm(mobilenet_v3_large(weights=None))
    model = load_torchvision_backbone(build_model("mobilenetv3_ssd", 3, reduced_tail=False), classifier.state_dict())
    model.eval()
    classifier.eval()
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        ours = model.backbone((x - 0.5) / 0.5)[-1]
        theirs = classifier.features((x - 0.5) / 0.5)
    assert (ours - theirs).abs().max() <= 1e-5


def test_imagenet_weights_refuse_a_reduced_tail_with_a_hint():
    classifier = mobilenet_v3_large(weights=None)
    with pytest.raises(ValueError, match="reduced_tail=False"):
        load_torchvision_backbone(build_model("mobilenetv3_ssd", 3), classifier.state_dict())


def test_imagenet_vgg_backbone_loads_and_keeps_new_layers():
    torch.manual_seed(2)
    classifier = vgg16(weights=None)
    model = build_model("vgg16_ssd", 3)
    fc7_before = model.backbone.fc[-1][3].weight.clone()
    load_torchvision_backbone(model, classifier.state_dict())
    assert torch.equal(model.backbone.features[0].weight, classifier.features[0].weight)
    assert torch.equal(model.backbone.fc[1].weight, classifier.features[24].weight)  # conv5_1
    assert torch.equal(model.backbone.fc[-1][3].weight, fc7_before)


def test_wrong_weights_are_refused_clearly():
    tv_state = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict()
    with pytest.raises(ValueError, match="another shape"):
        load_torchvision_detector(build_model("mobilenetv3_ssd", 5), tv_state)
    with pytest.raises(ValueError, match="not a torchvision ImageNet"):
        load_torchvision_backbone(build_model("mobilenetv3_ssd", 5), {"x": torch.zeros(1)})
