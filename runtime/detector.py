"""`Detector`: SSD detection with a deployed model, torch-free.

    from ssd_edge.runtime import Detector

    with Detector("model.onnx") as det:        # or "model.engine" beside model.engine.json
        found = det(image_bgr)                  # Detections of one image
        found = det([image_a, image_b])         # list of Detections, one batch

Everything the model needs (input size, normalisation, classes, default boxes,
postprocessing defaults) comes from the ModelSpec stored in the ONNX metadata or in the
engine's sidecar; thresholds can be overridden per Detector.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ssd_edge.common.errors import UsageError
from ssd_edge.runtime.backends import registry
from ssd_edge.runtime.backends.base import Backend
from ssd_edge.runtime.detections import (
    DEPLOYMENT_SCORE_THRESHOLD,
    Detections,
    PostprocessConfig,
    PostprocessOverrides,
)
from ssd_edge.runtime.image_io import read_image
from ssd_edge.runtime.model_file import model_format
from ssd_edge.runtime.preprocess import check_image, preprocess
from ssd_edge.runtime.spec import ModelSpec
from ssd_edge.runtime.stage_timer import NO_TIMER, StageTimer

BACKENDS = registry.CHOICES
"""Every backend name the Detector takes (from the registry of backends)."""

Image = Union[np.ndarray, str, os.PathLike]


class Detector:
    """An SSD ready to detect: `det(image)` -> Detections, `det([images])` -> [Detections].

    Images are BGR uint8 arrays (H, W, 3) of any size, as OpenCV reads them, or paths to
    image files. Boxes come back xyxy in each original image's pixels, with labels
    (1..C-1), scores, the softmax vector of each box (`confs`) and the class names
    (`Detections.names`). A list goes through the network as one batch (in chunks of the
    model's batch size when that is fixed, smaller chunks padded).

    backend: "auto" (.engine: TensorRT; .onnx: onnxruntime), "onnxruntime" (its CUDA
    provider when onnxruntime-gpu is installed, else the CPU), "onnxruntime-cpu",
    "onnxruntime-tensorrt" (onnxruntime's TensorRT provider), "openvino" (the ONNX model on
    OpenVINO, `pip install 'ssd-edge[openvino]'`) or "tensorrt" (an engine through pycuda).
    On the GPU, decode + NMS runs in ssd-edge's CUDA kernel; elsewhere in NumPy.
    score_threshold, iou_threshold, max_detections, top_k, agnostic_nms (NMS across the
    classes): override the ModelSpec's. Without a score_threshold a Detector runs at a
    deployment threshold: the model's own, raised to DEPLOYMENT_SCORE_THRESHOLD (0.3) when
    lower, as a model's own threshold is its evaluation one (SSDLite's 0.001, at which nearly
    every default box is decoded). model_thresholds=True keeps the ModelSpec's own score
    threshold instead (ssd-eval and ssd-serve ask for it).
    threads: onnxruntime's intra-op threads or OpenVINO's INFERENCE_NUM_THREADS (None: their
    default; OpenVINO's on the CPU: one per physical core, or 1 while 1 runs faster because
    other work shares the CPU, see OpenVinoOptions; a TensorRT engine has no thread pool and
    ignores it).
    device, precision: OpenVINO only: device "CPU" (default), "GPU", "NPU" or "AUTO";
    precision "f32" (default, equal to onnxruntime to float rounding), "bf16" (f32 with a
    RuntimeWarning where the device has no bf16) or "auto" (the device's fast native
    precision); `backend` names the precision that runs, e.g. 'openvino 2026.4.1 (CPU, f32
    instead of bf16)'.
    spinning: onnxruntime only: whether its idle intra-op threads spin waiting for work
    (None: the backend's default, see onnxruntime_backend.DEFAULT_SPINNING).
    options: the backend's options as its own object (OnnxRuntimeOptions, OpenVinoOptions,
    TensorRTOptions: see `backends.registry`), or as a mapping of option names to values
    (None: not given), routed like the keywords above; an option the backend does not take
    is refused naming it.

    Benchmarks time the stages of a call with `det(images, timer=StageTimer())` (see
    `stage_timer`); without a timer nothing is measured.

    Thread safety: one Detector may be called from several threads; calls are serialised
    by an internal lock (the input buffer, the CUDA stream and the workspace are reused
    between calls), so they never run in parallel. For parallel throughput, create one
    Detector per thread. `close()` (or leaving a `with` block) frees the engine, GPU
    buffers and stream; a closed Detector refuses further calls.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        backend: str = "auto",
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        top_k: int | None = None,
        threads: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        spinning: bool | None = None,
        options: Any = None,
        agnostic_nms: bool | None = None,
        model_thresholds: bool = False,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        registry.check_backend_name(backend)
        given = {"threads": threads, "device": device, "precision": precision, "spinning": spinning}
        chosen = _given_object(options, given)
        if chosen is None:
            given = _merge(given, options or {})
            registry.check_options_apply(backend, given)
        info = registry.resolve(backend, model_format(path), path)
        if chosen is None:
            chosen = registry.build_options(info, given)
        elif not isinstance(chosen, info.options):
            raise UsageError(f"options {type(chosen).__name__} are not {info.options.__name__}, the options of "
                             f"backend {info.name!r} that runs {path}")
        overrides = PostprocessOverrides(
            score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections, top_k=top_k,
            agnostic_nms=agnostic_nms, score_floor=None if model_thresholds else DEPLOYMENT_SCORE_THRESHOLD,
        )
        self._backend: Backend = info.open(path, overrides, chosen)
        self.model_path = path
        self._lock = threading.Lock()
        self._closed = False

    @property
    def spec(self) -> ModelSpec:
        return self._backend.spec

    @property
    def class_names(self) -> tuple[str, ...]:
        """All class names, background first: `class_names[label]` names a detection."""
        return tuple(self._backend.spec.class_names)

    @property
    def config(self) -> PostprocessConfig:
        """The postprocessing in effect (the ModelSpec's values with this Detector's overrides)."""
        return self._backend.config

    @property
    def backend(self) -> str:
        """What runs the network, e.g. 'onnxruntime (CPUExecutionProvider)' or
        'openvino 2026.4.1 (CPU, f32 instead of bf16)'."""
        return self._backend.name

    def __call__(
        self, images: Image | Sequence[Image], timer: StageTimer | None = None
    ) -> Detections | list[Detections]:
        single = images is None or isinstance(images, (np.ndarray, str, os.PathLike))
        batch = [images] if single else list(images)
        if not batch:
            raise UsageError("no images to detect in (empty list)")
        batch = [self._as_image(image, i) for i, image in enumerate(batch)]
        with self._lock:
            if self._closed:
                raise RuntimeError(f"Detector for {self.model_path} is closed")
            found = self._detect(batch, timer or NO_TIMER)
        return found[0] if single else found

    @staticmethod
    def _as_image(image: Image, index: int) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return read_image(image)
        check_image(image, f"image {index}")
        return image

    def _detect(self, images: list[np.ndarray], timer: StageTimer) -> list[Detections]:
        backend = self._backend
        chunk = backend.max_batch or len(images)
        found: list[Detections] = []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            with timer.stage("preprocess"):
                preprocess(part, self.spec.input_size, out=backend.input_buffer(len(part)), checked=True)
            found += backend.detect(len(part), [image.shape[:2] for image in part], timer)
        return found

    def close(self) -> None:
        """Free the engine, the GPU buffers and the stream (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Detector({str(self.model_path)!r}, backend={self.backend!r}, classes={len(self.class_names) - 1})"


def _given_object(options: Any, keywords: Mapping[str, Any]) -> Any:
    """`options` when it is a backend's options object (then no option keyword may be given
    too), else None."""
    if options is None or isinstance(options, Mapping):
        return None
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        raise UsageError(f"options must be a backend's options (e.g. OpenVinoOptions) or a mapping, got {options!r}")
    both = [name for name, value in keywords.items() if value is not None]
    if both:
        raise UsageError(f"give the backend's options once: options={type(options).__name__}(...) or "
                         f"{', '.join(both)}=, not both")
    return options


def _merge(keywords: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """The option keywords and an options mapping together; a name given twice must agree."""
    merged = dict(keywords)
    for name, value in more.items():
        if value is not None and merged.get(name) not in (None, value):
            raise UsageError(f"option {name} given twice: {merged[name]!r} and {value!r}")
        if value is not None or name not in merged:
            merged[name] = value
    return merged
