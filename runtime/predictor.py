"""A predictor: whatever turns BGR images into `Detections`, and the one place that opens one.

    from ssd_edge.runtime.predictor import open_predictor

    with open_predictor("ssd.onnx") as predictor:            # or "ssd.engine"
        found = predictor([image_bgr])                      # [Detections]
    with open_predictor(server="grpc://127.0.0.1:8001") as predictor:   # an ssd-serve server
        found = predictor([image_bgr])

The runtime's `Detector` (.onnx, .engine) and ssd-serve's `DetectionClient` are
predictors; evaluation adds the PyTorch checkpoint (`ssd_edge.evaluation.predictor`).
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ssd_edge.common.errors import UsageError
from ssd_edge.runtime.detections import Detections, PostprocessConfig


@runtime_checkable
class Predictor(Protocol):
    """BGR uint8 images (H, W, 3) in, one `Detections` per image out, boxes in each image's
    pixels and class names inside; a context manager that `close()`s what it holds."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """All class names, background first."""

    @property
    def config(self) -> PostprocessConfig:
        """The postprocessing in effect."""

    @property
    def backend(self) -> str:
        """What runs the network, in words (e.g. 'onnxruntime (CPUExecutionProvider)')."""

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Predictor": ...

    def __exit__(self, *exc_info: object) -> None: ...


def open_predictor(model: str | os.PathLike | None = None, server: str | None = None, backend: str = "auto",
                   score_threshold: float | None = None, iou_threshold: float | None = None,
                   max_detections: int | None = None, **detector_options) -> Predictor:
    """A `Detector` on `model` (.onnx, .engine; `detector_options` are its own), or, with
    `server` ("HOST:PORT", "http://HOST:PORT", "grpc://HOST:PORT"), a `DetectionClient` of
    ssd-serve that answers as that Detector would. On a server the backend, IoU threshold
    and detection cap are the server's (a different value is refused: set it on ssd-serve);
    the score threshold may only be raised."""
    if server is None:
        if model is None:
            raise UsageError("give a model file (.onnx, .engine) or a server")
        from ssd_edge.runtime.detector import Detector

        return Detector(model, backend=backend, score_threshold=score_threshold, iou_threshold=iou_threshold,
                        max_detections=max_detections, **detector_options)
    if model is not None:
        raise UsageError(f"give a model or a server, not both (model {model}, server {server})")
    if backend != "auto":
        raise UsageError(f"backend {backend!r}: on a server the backend is ssd-serve's (its --backend)")
    if detector_options:
        raise UsageError(f"{', '.join(sorted(detector_options))}: options of a local model; on a server "
                         "they are ssd-serve's")
    from ssd_edge.runtime.serve.client import DetectionClient

    client = DetectionClient(server, score_threshold=score_threshold)
    served = client.server_config
    for name, value in (("iou_threshold", iou_threshold), ("max_detections", max_detections)):
        if value is not None and value != getattr(served, name):
            client.close()
            raise UsageError(f"{name} {value}: the server {server} runs {getattr(served, name)}; "
                             f"set it on ssd-serve (--{name.replace('_', '-')})")
    return client
