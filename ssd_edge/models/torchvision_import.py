"""Load torchvision's weights into our SSDs: the COCO detectors (SSDLite320 MobileNetV3-Large,
SSD300 VGG16) and the ImageNet classifiers' backbones. Nothing here downloads anything:
state dicts come from files the user already has."""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import Tensor
from torchvision.models import vgg16

from ssd_edge.common.errors import UsageError
from ssd_edge.models import mobilenet, vgg
from ssd_edge.models.ssd import SSD

# torchvision detector key prefix -> ours, per architecture family, first match wins.
_DETECTOR_RENAMES = {
    "mobilenet": [
        (r"^backbone\.features\.", "backbone.features."),
        (r"^backbone\.extra\.", "extras."),
    ],
    "vgg": [
        (r"^backbone\.features\.", "backbone.features."),
        (r"^backbone\.scale_weight$", "backbone.scale_weight"),
        (r"^backbone\.extra\.0\.", "backbone.fc."),
        (r"^backbone\.extra\.(\d+)\.", lambda m: f"extras.{int(m.group(1)) - 1}."),
    ],
}
_HEAD_RENAMES = [
    (r"^head\.classification_head\.module_list\.", "classification_headers."),
    (r"^head\.regression_head\.module_list\.", "regression_headers."),
]


def _family(model: SSD) -> str:
    return "vgg" if model.spec.arch.startswith("vgg") else "mobilenet"


def is_torchvision_detector(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("head.classification_head.module_list.") for k in state_dict)


def detector_state_dict(model: SSD, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision SSD/SSDLite state dict -> ours (keys renamed, values shared)."""
    renames = _DETECTOR_RENAMES[_family(model)] + _HEAD_RENAMES
    ours = {}
    for key, value in state_dict.items():
        for pattern, replacement in renames:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                ours[new_key] = value
                break
        else:
            raise UsageError(f"unexpected key {key!r} in a torchvision {model.spec.arch} state dict")
    return ours


def _load(model_part: torch.nn.Module, state_dict: Mapping[str, Tensor], what: str) -> None:
    own = model_part.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} of another shape "
                           f"(e.g. {k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)})")
        raise UsageError(f"{what} does not fit this model: " + "; ".join(details))
    model_part.load_state_dict(state_dict)


def load_torchvision_detector(model: SSD, state_dict: Mapping[str, Tensor]) -> SSD:
    """Load torchvision's `ssdlite320_mobilenet_v3_large` / `ssd300_vgg16` weights into `model`.

    The model must have been built with the same architecture and number of classes
    (91 for torchvision's COCO weights).
    """
    _load(model, detector_state_dict(model, state_dict), f"torchvision {model.spec.arch} weights")
    return model


def load_torchvision_backbone(model: SSD, state_dict: Mapping[str, Tensor]) -> SSD:
    """Load an ImageNet classifier's state dict (torchvision `mobilenet_v3_large/small` or
    `vgg16`) into the backbone of `model`; the extras and heads keep their initialisation.

    The classifier is rebuilt, loaded and cut exactly as the backbone was, so every
    backbone weight comes from the file. ImageNet MobileNetV3 weights have the full tail:
    build the model with reduced_tail=False to take them.
    """
    arch, options = model.spec.arch, dict(model.spec.arch_options)
    if arch == "vgg16_ssd":
        classifier = vgg16(weights=None)
        cut = lambda net: vgg.VGG16Features(net.features)  # noqa: E731
    else:
        variant = "small" if arch == "mobilenetv3_small_ssd" else "large"
        classifier = mobilenet.mobilenet_v3(variant, **options)
        cut = lambda net: mobilenet.MobileNetV3Features(net.features)  # noqa: E731
    features = {k: v for k, v in state_dict.items() if k.startswith("features.")}
    if not features:
        raise UsageError(f"no 'features.*' weights: this is not a torchvision ImageNet classifier state dict "
                         f"for {arch}")
    hint = "" if arch == "vgg16_ssd" else (f" (ImageNet MobileNetV3 weights need reduced_tail=False; "
                                           f"this model has {options})")
    _load(classifier.features, {k[len("features."):]: v for k, v in features.items()}, f"ImageNet weights{hint}")
    backbone = cut(classifier)
    if arch == "vgg16_ssd":  # fc6 / fc7 are new layers: keep the model's own initialisation
        backbone.fc[-1].load_state_dict(model.backbone.fc[-1].state_dict())
    model.backbone.load_state_dict(backbone.state_dict())
    return model


def coco_category_names() -> tuple[str, ...]:
    """torchvision's 91 COCO category names (index 0 is '__background__', gaps are 'N/A')."""
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    return tuple(SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"])
