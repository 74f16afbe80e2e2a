"""The deployment contract: everything a runtime needs to know about a trained SSD.

`ModelSpec` travels with the weights (in the checkpoint), inside the ONNX file
(`metadata_props`) and beside a TensorRT engine (`<engine>.json`), so nothing
downstream guesses an input size, a normalisation or a class list. This module
imports nothing but the standard library.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.runtime.detections import DEFAULT_POSTPROCESS, ConfigError, PostprocessConfig

FORMAT_VERSION = 1
METADATA_KEY = "ssd_edge.model_spec"


class SpecError(SSDEdgeError, ValueError):
    """A ModelSpec (or the file that should carry one) is missing or malformed."""


@dataclass(frozen=True)
class DefaultBoxConfig:
    """How default boxes (priors) are laid over the feature maps, as torchvision's
    `DefaultBoxGenerator` does it.

    feature_maps: (H, W) of every prediction map, finest first.
    steps: stride of each map in input pixels; None tiles each map over [0, 1] exactly.
    scales: one scale per map plus one extra (len(feature_maps) + 1), relative to the input.
    aspect_ratios: extra ratios per map; each ratio r adds boxes r:1 and 1:r.
    clip: clamp default-box widths and heights to [0, 1].
    """

    feature_maps: tuple[tuple[int, int], ...]
    scales: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float, ...] | None = None
    clip: bool = True

    def __post_init__(self) -> None:
        levels = len(self.feature_maps)
        if levels == 0:
            raise SpecError("default boxes need at least one feature map")
        if len(self.aspect_ratios) != levels:
            raise SpecError(f"{len(self.aspect_ratios)} aspect-ratio lists for {levels} feature maps")
        if len(self.scales) != levels + 1:
            raise SpecError(f"{len(self.scales)} scales for {levels} feature maps (need {levels + 1})")
        if self.steps is not None and len(self.steps) != levels:
            raise SpecError(f"{len(self.steps)} steps for {levels} feature maps")
        for h, w in self.feature_maps:
            if h < 1 or w < 1:
                raise SpecError(f"feature map of size {h}x{w}: the input is too small for this backbone")

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        return tuple(2 + 2 * len(ratios) for ratios in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(h * w * a for (h, w), a in zip(self.feature_maps, self.boxes_per_location))


@dataclass(frozen=True)
class ModelSpec:
    """What a deployed SSD expects and produces.

    input_size is (H, W); images go in as RGB scaled to [0, 1] and the network
    normalises with `mean` and `std` itself. class_names[0] is the background.
    The postprocessing fields are defaults: a runtime may override them per call.
    """

    arch: str
    input_size: tuple[int, int]
    class_names: tuple[str, ...]
    default_boxes: DefaultBoxConfig
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    variances: tuple[float, float] = DEFAULT_POSTPROCESS.variances
    score_threshold: float = DEFAULT_POSTPROCESS.score_threshold
    iou_threshold: float = DEFAULT_POSTPROCESS.iou_threshold
    top_k: int = DEFAULT_POSTPROCESS.top_k
    max_detections: int = DEFAULT_POSTPROCESS.max_detections
    agnostic_nms: bool = DEFAULT_POSTPROCESS.agnostic_nms
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    input_name: str = "images"
    output_names: tuple[str, str] = ("locs", "confs")
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise SpecError("class_names needs the background and at least one class")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise SpecError(f"input_size must be (H, W), got {self.input_size}")
        if self.channel_order != "RGB":
            raise SpecError(f"channel_order must be 'RGB', got {self.channel_order!r}")
        height, width = self.input_size
        for h, w in self.default_boxes.feature_maps:
            if h > height or w > width:
                raise SpecError(f"feature map of {h}x{w} cells is larger than the {height}x{width} input; "
                                "the default boxes do not describe this network")
        try:
            self.postprocess
        except ConfigError as exc:
            raise SpecError(str(exc)) from None

    @property
    def postprocess(self) -> PostprocessConfig:
        """The model's postprocessing defaults (a caller overrides them with `.replace(...)`)."""
        return PostprocessConfig(score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                                 top_k=self.top_k, max_detections=self.max_detections, variances=tuple(self.variances),
                                 agnostic_nms=self.agnostic_nms)

    @property
    def num_classes(self) -> int:
        """Number of classes including the background."""
        return len(self.class_names)

    @property
    def num_priors(self) -> int:
        return self.default_boxes.num_priors

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["arch_options"] = dict(self.arch_options)
        if not self.agnostic_nms:  # written only when set: the specs of older toolkits stay readable by them
            del data["agnostic_nms"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        if not isinstance(data, Mapping):
            raise SpecError(f"a ModelSpec must be a mapping, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise SpecError(f"ModelSpec format_version {version!r} is not supported "
                            f"(this toolkit reads {FORMAT_VERSION})")
        try:
            boxes = dict(data["default_boxes"])
            box_config = DefaultBoxConfig(
                feature_maps=_tuples(boxes["feature_maps"], int),
                scales=tuple(float(s) for s in boxes["scales"]),
                aspect_ratios=_tuples(boxes["aspect_ratios"], float),
                steps=None if boxes.get("steps") is None else tuple(float(s) for s in boxes["steps"]),
                clip=bool(boxes.get("clip", True)),
            )
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(data) - fields
            if unknown:
                raise SpecError(f"unknown ModelSpec fields: {sorted(unknown)}")
            values = dict(data)
            values["default_boxes"] = box_config
            values["input_size"] = tuple(int(v) for v in data["input_size"])
            values["class_names"] = tuple(str(n) for n in data["class_names"])
            for name in ("mean", "std", "variances"):
                if name in values:
                    values[name] = tuple(float(v) for v in values[name])
            if "output_names" in values:
                values["output_names"] = tuple(values["output_names"])
            values["arch_options"] = dict(values.get("arch_options") or {})
            return cls(**values)
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed ModelSpec: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"ModelSpec is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _tuples(rows: Sequence[Sequence[Any]], kind: type) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(kind(v) for v in row) for row in rows)
