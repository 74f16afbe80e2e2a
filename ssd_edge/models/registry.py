"""Architectures by name. Only this module knows the presets; `build_model` assembles an SSD
from its parts, `model_from_spec` rebuilds one from a stored ModelSpec (at its own input
size or another)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ssd_edge.common.errors import UsageError
from ssd_edge.models import mobilenet, vgg
from ssd_edge.models.postprocessor import PostProcessor
from ssd_edge.models.ssd import SSD
from ssd_edge.runtime.detections import DEFAULT_POSTPROCESS
from ssd_edge.runtime.priors import scales_linear
from ssd_edge.runtime.spec import DefaultBoxConfig, ModelSpec

Body = tuple[nn.Module, nn.ModuleList]


@dataclass(frozen=True)
class Preset:
    """Everything that makes an architecture: how to build its body and heads, its
    default boxes, normalisation, default input size and postprocessing defaults."""

    body: Callable[..., Body]
    heads: Callable[[list[int], tuple[int, ...], int], tuple[nn.ModuleList, nn.ModuleList]]
    aspect_ratios: tuple[tuple[float, ...], ...]
    scales: tuple[float, ...]
    imgsz: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    steps: Mapping[tuple[int, int], tuple[float, ...]] = field(default_factory=dict)
    postprocess: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


def _mobilenet_body(variant: str, reduced_tail: bool, width_mult: float) -> Body:
    net = mobilenet.mobilenet_v3(variant, reduced_tail=reduced_tail, width_mult=width_mult)
    backbone = mobilenet.MobileNetV3Features(net.features)
    return backbone, mobilenet.extras(net.features[-1].out_channels, width_mult)


def _vgg_body() -> Body:
    return vgg.vgg16_backbone(), vgg.extras()


_SSDLITE = dict(
    heads=mobilenet.heads,
    aspect_ratios=((2.0, 3.0),) * 6,
    scales=scales_linear(6, 0.2, 0.95),
    imgsz=(320, 320),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    options={"reduced_tail": True, "width_mult": 1.0},
)

ARCHS: dict[str, Preset] = {
    # torchvision's ssdlite320_mobilenet_v3_large, with its postprocessing values.
    "mobilenetv3_ssd": Preset(
        body=lambda **o: _mobilenet_body("large", **o),
        postprocess=dict(score_threshold=0.001, iou_threshold=0.55, top_k=300, max_detections=300),
        **_SSDLITE,
    ),
    # The same design on MobileNetV3-Small, for the smallest Jetsons.
    "mobilenetv3_small_ssd": Preset(body=lambda **o: _mobilenet_body("small", **o), **_SSDLITE),
    # torchvision's ssd300_vgg16.
    "vgg16_ssd": Preset(
        body=_vgg_body,
        heads=vgg.heads,
        aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
        scales=(0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
        imgsz=(300, 300),
        mean=(0.48235, 0.45882, 0.40784),
        std=(1.0 / 255.0,) * 3,
        steps={(300, 300): (8.0, 16.0, 32.0, 64.0, 100.0, 300.0)},
        postprocess=dict(score_threshold=0.01, iou_threshold=0.45, top_k=400, max_detections=200),
    ),
}


def preset(arch: str) -> Preset:
    if arch not in ARCHS:
        raise UsageError(f"unknown architecture {arch!r}; choose from {', '.join(sorted(ARCHS))}")
    return ARCHS[arch]


def _probe(backbone: nn.Module, extras: nn.ModuleList, arch: str, imgsz: tuple[int, int]):
    """Sizes (H, W) and channels of every prediction map at `imgsz`, without computing anything."""
    body = copy.deepcopy(nn.ModuleList([backbone, extras])).to("meta").eval()
    x = torch.empty((1, 3, *imgsz), device="meta")
    try:
        with torch.no_grad():
            features = list(body[0](x))
            y = features[-1]
            for extra in body[1]:
                y = extra(y)
                features.append(y)
    except RuntimeError as exc:
        raise UsageError(f"input size {imgsz[0]}x{imgsz[1]} (H x W) is too small for {arch}: {exc}") from None
    sizes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)
    if min(min(s) for s in sizes) < 1:
        raise UsageError(f"input size {imgsz[0]}x{imgsz[1]} (H x W) is too small for {arch}: maps {sizes}")
    return sizes, [int(f.shape[1]) for f in features]


def _imgsz(value: int | Sequence[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if value is None:
        return default
    if isinstance(value, int):
        return (value, value)
    height, width = (int(v) for v in value)
    return (height, width)


def _body(chosen: Preset, arch: str, options: Mapping[str, Any]) -> tuple[Body, dict[str, Any]]:
    """The preset's backbone and extras with `options` over its defaults, and the options in effect."""
    unknown = set(options) - set(chosen.options)
    if unknown:
        raise UsageError(f"{arch} has no option(s) {sorted(unknown)}; it takes {sorted(chosen.options) or 'none'}")
    arch_options = {**chosen.options, **options}
    return chosen.body(**arch_options), arch_options


def _box_config(chosen: Preset, maps: tuple[tuple[int, int], ...], size: tuple[int, int]) -> DefaultBoxConfig:
    return DefaultBoxConfig(feature_maps=maps, scales=chosen.scales, aspect_ratios=chosen.aspect_ratios,
                            steps=chosen.steps.get(size))


def _assemble(chosen: Preset, spec: ModelSpec, body: Body, channels: list[int]) -> SSD:
    """The SSD of `spec` around `body`, with the preset's heads and a PostProcessor at the
    spec's postprocessing defaults (variances included)."""
    backbone, extras = body
    classification, regression = chosen.heads(channels, spec.default_boxes.boxes_per_location, spec.num_classes)
    return SSD(spec, backbone, extras, classification, regression, PostProcessor(spec.postprocess))


def build_model(
    arch: str = "mobilenetv3_ssd",
    class_names: Sequence[str] | int = 91,
    imgsz: int | Sequence[int] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    postprocess: Mapping[str, float] | None = None,
    **options: Any,
) -> SSD:
    """A freshly initialised SSD.

    class_names: names with the background first, or a class count (background included).
    imgsz: input size, an int for square or (H, W); default the architecture's own.
    options: architecture options (MobileNets: reduced_tail, width_mult).
    """
    chosen = preset(arch)
    if isinstance(class_names, int):
        if class_names < 2:
            raise UsageError(f"num_classes must count the background and at least one class, got {class_names}")
        class_names = ["__background__"] + [f"class{i}" for i in range(1, class_names)]
    body, arch_options = _body(chosen, arch, options)
    size = _imgsz(imgsz, chosen.imgsz)
    maps, channels = _probe(*body, arch, size)
    post = DEFAULT_POSTPROCESS.replace(**chosen.postprocess).replace(**(postprocess or {}))
    spec = ModelSpec(
        arch=arch,
        input_size=size,
        class_names=tuple(class_names),
        default_boxes=_box_config(chosen, maps, size),
        mean=tuple(mean or chosen.mean),
        std=tuple(std or chosen.std),
        arch_options=arch_options,
        score_threshold=post.score_threshold,
        iou_threshold=post.iou_threshold,
        top_k=post.top_k,
        max_detections=post.max_detections,
        variances=post.variances,
    )
    return _assemble(chosen, spec, body, channels)


def model_from_spec(spec: ModelSpec, input_size: int | Sequence[int] | None = None) -> SSD:
    """An SSD shaped as `spec` says (weights still to be loaded), carrying `spec` itself:
    class names, mean/std, postprocessing defaults and variances, input and output names.
    Its arch_options are completed with the preset's defaults. ValueError when the spec's
    default boxes are not those the architecture lays at its input size.

    input_size: build for this size instead (an int for square, or (H, W)); the default
    boxes are laid anew for it, everything else in `spec` stays (SSD's convolutions do not
    depend on the input size, so the same weights load)."""
    chosen = preset(spec.arch)
    body, arch_options = _body(chosen, spec.arch, spec.arch_options)
    size = tuple(spec.input_size) if input_size is None else _imgsz(input_size, chosen.imgsz)
    maps, channels = _probe(*body, spec.arch, size)
    built = _box_config(chosen, maps, size)
    if input_size is None and built != spec.default_boxes:
        raise ValueError(
            f"the stored ModelSpec's default boxes do not match what {spec.arch} builds at "
            f"{spec.input_size}: stored {spec.default_boxes}, built {built}"
        )
    spec = spec.replace(input_size=size, default_boxes=built, arch_options=arch_options)
    return _assemble(chosen, spec, body, channels)
