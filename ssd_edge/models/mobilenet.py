"""SSDLite parts on MobileNetV3, layer for layer as torchvision's `ssdlite320_mobilenet_v3_large`."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.ops.misc import Conv2dNormActivation

from ssd_edge.models.init import normal_init, xavier_init

# torchvision's SSDLite batch-norm settings.
norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)

_MOBILENETS = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}


def mobilenet_v3(variant: str, reduced_tail: bool = True, width_mult: float = 1.0) -> nn.Module:
    """torchvision's MobileNetV3 classifier with SSDLite's batch norm (randomly initialised)."""
    if variant not in _MOBILENETS:
        raise ValueError(f"unknown MobileNetV3 variant {variant!r}; choose from {sorted(_MOBILENETS)}")
    net = _MOBILENETS[variant](weights=None, norm_layer=norm_layer, reduced_tail=reduced_tail, width_mult=width_mult)
    normal_init(net)
    return net


class MobileNetV3Features(nn.Module):
    """MobileNetV3 cut as in section 6.3 of its paper: the first map is the expansion layer
    of the last stride-2 block (C4), the second is the end of the network.

    Takes torchvision's `mobilenet_v3_*().features`; keeps its modules (so its weights).
    """

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        c4_pos = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)][-1]
        if features[c4_pos].use_res_connect:
            raise ValueError("the C4 block of this MobileNetV3 has a residual connection; it cannot be split")
        self.features = nn.Sequential(
            nn.Sequential(*features[:c4_pos], features[c4_pos].block[0]),
            nn.Sequential(features[c4_pos].block[1:], *features[c4_pos + 1 :]),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for stage in self.features:
            x = stage(x)
            outputs.append(x)
        return outputs


def extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 to half width, 3x3 depthwise stride 2, 1x1 to out_channels; ReLU6 throughout."""
    mid = out_channels // 2
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        Conv2dNormActivation(
            mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm_layer, activation_layer=nn.ReLU6
        ),
        Conv2dNormActivation(mid, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
    )


def extras(in_channels: int, width_mult: float = 1.0, min_depth: int = 16) -> nn.ModuleList:
    def depth(d: int) -> int:
        return max(min_depth, int(d * width_mult))

    widths = [in_channels, depth(512), depth(256), depth(256), depth(128)]
    blocks = nn.ModuleList(extra_block(cin, cout) for cin, cout in zip(widths[:-1], widths[1:]))
    xavier_init(blocks)
    return blocks


def prediction_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """SSDLite head block: 3x3 depthwise (BN, ReLU6), then a 1x1 projection."""
    return nn.Sequential(
        Conv2dNormActivation(
            in_channels, in_channels, kernel_size=3, groups=in_channels, norm_layer=norm_layer,
            activation_layer=nn.ReLU6,
        ),
        nn.Conv2d(in_channels, out_channels, 1),
    )


def heads(channels: list[int], boxes_per_location: tuple[int, ...], num_classes: int):
    classification = nn.ModuleList(prediction_block(c, a * num_classes) for c, a in zip(channels, boxes_per_location))
    regression = nn.ModuleList(prediction_block(c, a * 4) for c, a in zip(channels, boxes_per_location))
    normal_init(classification)
    normal_init(regression)
    return classification, regression
