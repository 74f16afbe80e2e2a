import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from ssd_edge.models import build_model
from ssd_edge.runtime.priors import default_boxes


def torchvision_priors(spec):
    """torchvision's default boxes for `spec`, converted back to normalised cxcywh."""
    config = spec.default_boxes
    generator = DefaultBoxGenerator(
        [list(r) for r in config.aspect_ratios],
        scales=list(config.scales),
        steps=None if config.steps is None else [int(s) for s in config.steps],
        clip=config.clip,
    )
    height, width = spec.input_size
    images = ImageList(torch.zeros(1, 3, height, width), [(height, width)])
    features = [torch.zeros(1, 1, h, w) for h, w in config.feature_maps]
    (boxes_xyxy,) = generator(images, features)
    boxes_xyxy = boxes_xyxy.numpy() / np.array([width, height, width, height], np.float32)
    centre = (boxes_xyxy[:, :2] + boxes_xyxy[:, 2:]) / 2
    size = boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]
    return np.concatenate([centre, size], axis=1)


@pytest.mark.parametrize(
    "arch, imgsz, priors",
    [
        ("mobilenetv3_ssd", 320, 3234),
        ("mobilenetv3_ssd", (256, 384), None),
        ("mobilenetv3_small_ssd", 320, 3234),
        ("vgg16_ssd", 300, 8732),
        ("vgg16_ssd", 512, None),
    ],
)
def test_default_boxes_equal_torchvision(arch, imgsz, priors):
    spec = build_model(arch, 4, imgsz).spec
    ours = default_boxes(spec)
    if priors is not None:
        assert ours.shape == (priors, 4)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, torchvision_priors(spec), atol=2e-6)


def test_first_ssdlite_boxes_by_hand():
    spec = build_model("mobilenetv3_ssd", 2).spec
    boxes = default_boxes(spec)
    s0, s1 = 0.2, 0.2 + 0.75 / 5
    # First cell of the 20x20 map: centre (0.025, 0.025); shapes s, sqrt(s s'), then ratios 2 and 3.
    expected = [
        [0.025, 0.025, s0, s0],
        [0.025, 0.025, (s0 * s1) ** 0.5, (s0 * s1) ** 0.5],
        [0.025, 0.025, s0 * 2**0.5, s0 / 2**0.5],
        [0.025, 0.025, s0 / 2**0.5, s0 * 2**0.5],
        [0.025, 0.025, s0 * 3**0.5, s0 / 3**0.5],
        [0.025, 0.025, s0 / 3**0.5, s0 * 3**0.5],
    ]
    np.testing.assert_allclose(boxes[:6], expected, rtol=1e-6)
    # Second cell moves along x (rows outermost, then columns).
    np.testing.assert_allclose(boxes[6, :2], [0.075, 0.025], rtol=1e-6)
    # The last map is 1x1: centred boxes, the largest clipped to 1.
    np.testing.assert_allclose(boxes[-6:, :2], 0.5)
    assert boxes[:, 2:].max() == 1.0
