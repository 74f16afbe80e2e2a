"""SSD300 parts on VGG16, layer for layer as torchvision's `ssd300_vgg16`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import vgg16

from ssd_edge.models.init import xavier_init


class VGG16Features(nn.Module):
    """VGG16 to conv4_3 (L2-normalised and rescaled: the first map), then conv5 and the
    atrous fc6 / 1x1 fc7 (the second map), as in the SSD paper.

    Takes torchvision's `vgg16().features`; keeps its modules (so its weights).
    """

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        _, _, pool3, pool4, _ = (i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d))
        features[pool3].ceil_mode = True  # 75 -> 38, the paper's map sizes
        self.features = nn.Sequential(*features[:pool4])
        self.scale_weight = nn.Parameter(torch.ones(512) * 20)
        fc = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),  # fc6, atrous
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, kernel_size=1),  # fc7
            nn.ReLU(inplace=True),
        )
        xavier_init(fc)
        self.fc = nn.Sequential(*features[pool4:-1], fc)  # pool4, conv5_x (pool5 replaced), fc6, fc7

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.features(x)
        conv4_3 = self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)
        return [conv4_3, self.fc(x)]


def vgg16_backbone() -> VGG16Features:
    return VGG16Features(vgg16(weights=None).features)


def extras() -> nn.ModuleList:
    def block(cin: int, mid: int, cout: int, stride: int, padding: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, mid, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, kernel_size=3, padding=padding, stride=stride),
            nn.ReLU(inplace=True),
        )

    blocks = nn.ModuleList(
        [
            block(1024, 256, 512, stride=2, padding=1),  # conv8_2
            block(512, 128, 256, stride=2, padding=1),  # conv9_2
            block(256, 128, 256, stride=1, padding=0),  # conv10_2
            block(256, 128, 256, stride=1, padding=0),  # conv11_2
        ]
    )
    xavier_init(blocks)
    return blocks


def heads(channels: list[int], boxes_per_location: tuple[int, ...], num_classes: int):
    classification = nn.ModuleList(
        nn.Conv2d(c, a * num_classes, kernel_size=3, padding=1) for c, a in zip(channels, boxes_per_location)
    )
    regression = nn.ModuleList(
        nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for c, a in zip(channels, boxes_per_location)
    )
    xavier_init(classification)
    xavier_init(regression)
    return classification, regression
