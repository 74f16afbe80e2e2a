"""What decode + NMS produces and how it is configured: `Detections` (one image's result)
and `PostprocessConfig` (thresholds and counts, validated once, here).

Every implementation of the postprocessing rule (the NumPy reference and fast path, the
torch `PostProcessor`, the CUDA kernel) takes a `PostprocessConfig` and returns
`Detections`; a `ModelSpec` stores the model's defaults (`spec.postprocess`, built by the
spec: this module knows nothing of specs), which a caller overrides with
`spec.postprocess.replace(score_threshold=0.3)`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from ssd_edge.common.errors import SSDEdgeError


class ConfigError(SSDEdgeError, ValueError):
    """A postprocessing threshold or count that cannot be used; the message names it."""


class Detections(NamedTuple):
    """Detections of one image. boxes (N, 4) xyxy in the original image's pixels,
    labels (N,) int64 (1..C-1), scores (N,) float32, confs (N, C) the softmax vector
    of each kept box; class_names (all C names, background first) when the producer
    knows them, so that `names` gives each detection's class name."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    confs: np.ndarray
    class_names: tuple[str, ...] = ()

    @classmethod
    def empty(cls, num_classes: int, class_names: tuple[str, ...] = ()) -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.float32),
            np.zeros((0, num_classes), np.float32),
            tuple(class_names),
        )

    @property
    def names(self) -> list[str]:
        """The class name of every detection (the label as text when names are unknown)."""
        if not self.class_names:
            return [str(int(label)) for label in self.labels]
        return [self.class_names[int(label)] for label in self.labels]

    def to_records(self) -> list[dict[str, Any]]:
        """One `detection_record` per detection."""
        return [
            detection_record(box, label, name, score)
            for box, label, name, score in zip(self.boxes, self.labels, self.names, self.scores)
        ]


def detection_record(box_xyxy: Sequence[float], label: int, name: str, score: float) -> dict[str, Any]:
    """One detection as JSON-ready data: box [x1, y1, x2, y2] in pixels (to 0.01 px), label,
    name, score (to 1e-5). The one schema every JSON output of the toolkit writes
    (ssd-predict's detections.json, the demo's log, tracks there)."""
    return {
        "box": [round(float(v), 2) for v in box_xyxy],
        "label": int(label),
        "name": name,
        "score": round(float(score), 5),
    }


def _probability(name: str, value: Any, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0 or (upper_open and value == 1.0):
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ConfigError(f"{name} must lie in {bound}, got {value}")
    return float(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class PostprocessConfig:
    """score_threshold: keep class scores above it; iou_threshold: per-class NMS overlap;
    top_k: candidates per class before NMS; max_detections: per image; variances: the
    box coder's (centre, size) scales; agnostic_nms: NMS across the classes instead of within
    each (a box then suppresses overlapping boxes of every class; Ultralytics' `agnostic`).
    The defaults here are the toolkit's only ones."""

    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    top_k: int = 200
    max_detections: int = 200
    variances: tuple[float, float] = (0.1, 0.2)
    agnostic_nms: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.agnostic_nms, (bool, np.bool_)):
            raise ConfigError(f"agnostic_nms must be true or false, got {self.agnostic_nms!r}")
        set_(self, "agnostic_nms", bool(self.agnostic_nms))
        set_(self, "score_threshold", _probability("score_threshold", self.score_threshold, upper_open=True))
        set_(self, "iou_threshold", _probability("iou_threshold", self.iou_threshold))
        set_(self, "top_k", _count("top_k", self.top_k))
        set_(self, "max_detections", _count("max_detections", self.max_detections))
        variances = tuple(self.variances) if isinstance(self.variances, (tuple, list)) else ()
        if len(variances) != 2 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in variances
        ):
            raise ConfigError(f"variances must be two positive numbers, got {self.variances!r}")
        set_(self, "variances", tuple(float(v) for v in variances))

    def replace(self, **overrides: Any) -> "PostprocessConfig":
        """A copy with the given fields changed; None leaves a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


DEFAULT_POSTPROCESS = PostprocessConfig()

# A Detector's score threshold when its caller names none: a deployment threshold (what the
# CLIs show; jetson-inference uses 0.5, Ultralytics 0.25). A model's own score_threshold is
# its evaluation threshold (torchvision's SSDLite: 0.001, where nearly every default box
# passes and the GPU decode takes its slowest path): a Detector raises a lower one to this,
# unless its caller gives a score_threshold or asks for the model's own thresholds
# (`model_thresholds=True`, as ssd-eval and ssd-serve do).
DEPLOYMENT_SCORE_THRESHOLD = 0.3


@dataclass(frozen=True)
class PostprocessOverrides:
    """A caller's changes to a model's postprocessing defaults (None: keep the model's),
    checked when made, before any model is opened; `apply` gives the config in effect."""

    score_threshold: float | None = None
    iou_threshold: float | None = None
    top_k: int | None = None
    max_detections: int | None = None
    agnostic_nms: bool | None = None
    score_floor: float | None = None  # without a score_threshold: a lower model threshold is raised to it

    def __post_init__(self) -> None:
        changes = dataclasses.asdict(self)
        floor = changes.pop("score_floor")
        DEFAULT_POSTPROCESS.replace(**changes)
        if floor is not None:
            DEFAULT_POSTPROCESS.replace(score_threshold=floor)

    def apply(self, config: PostprocessConfig) -> PostprocessConfig:
        changes = dataclasses.asdict(self)
        floor = changes.pop("score_floor")
        config = config.replace(**changes)
        if self.score_threshold is None and floor is not None and config.score_threshold < floor:
            config = config.replace(score_threshold=floor)
        return config
