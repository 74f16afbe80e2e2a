"""Evaluation's predictors: the runtime's (`runtime/predictor.py`: .onnx, .engine, a server)
plus the PyTorch model, `TorchPredictor`, behind the same `Predictor` interface (BGR uint8
images in, `Detections` in the images' pixels out) with the runtime's own preprocessing, so
what is measured is what is deployed. Importable without torch: only a .pt needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ssd_edge.common.errors import MissingDependency, UsageError
from ssd_edge.runtime import predictor as runtime_predictor
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.model_file import model_format
from ssd_edge.runtime.predictor import Predictor
from ssd_edge.runtime.preprocess import preprocess


class TorchPredictor:
    """An `SSD` (or its DDP wrapper) as a `Predictor`, on `device`."""

    def __init__(self, model, device="cpu") -> None:
        import torch

        self.model = getattr(model, "module", model)
        self.device = torch.device(device)
        self.spec = self.model.spec

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.spec.class_names)

    @property
    def config(self) -> PostprocessConfig:
        return self.model.post_processor.config

    @property
    def backend(self) -> str:
        return f"pytorch ({self.device})"

    def __call__(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                batch = torch.from_numpy(preprocess(images_bgr, self.spec.input_size)).to(self.device)
                sizes = [image.shape[:2] for image in images_bgr]
                boxes, labels, scores, confs = self.model(batch, image_sizes=sizes)
        finally:
            self.model.train(was_training)
        names = self.class_names
        return [
            Detections(*(part.cpu().numpy() for part in parts), names)
            for parts in zip(boxes, labels, scores, confs)
        ]

    def close(self) -> None:
        """Nothing to free: the model stays the caller's."""

    def __enter__(self) -> "TorchPredictor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_predictor(path: Path, arch: str | None = None, device: str = "cpu", backend: str = "auto",
                   notify=print, backend_options: Mapping[str, Any] | None = None,
                   agnostic_nms: bool | None = None) -> Predictor:
    """The runtime's `open_predictor` for an exported model (.onnx, .engine; `backend`), and
    a `TorchPredictor` on `device` for a PyTorch checkpoint. `arch` names the architecture of
    a torchvision state dict; our checkpoints and exported models carry their own: one that
    differs is refused, and `notify` is told when it does not apply. agnostic_nms: NMS
    across the classes (None: the model's own)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if model_format(path, allow_checkpoint=True) != "pytorch":
        options = {"options": dict(backend_options)} if backend_options else {}  # the backend's own (threads...)
        if agnostic_nms is not None:
            options["agnostic_nms"] = agnostic_nms
        # The model's own (evaluation) score threshold, not a Detector's deployment default.
        predictor = runtime_predictor.open_predictor(path, backend=backend, model_thresholds=True, **options)
        if arch is not None:
            notify(f"note: --arch {arch} is not used for {path}: an exported model carries its own architecture "
                   f"({predictor.spec.arch})")
        return predictor
    try:
        from ssd_edge.checkpoint import load_model
    except ImportError as exc:
        raise MissingDependency(
            f"{path}: evaluating a PyTorch checkpoint needs torch ({exc}); install ssd-edge[train], "
            "or evaluate the exported .onnx / .engine"
        ) from None

    model = load_model(path, arch)
    if arch is not None and model.spec.arch != arch:
        raise UsageError(f"{path}: holds a {model.spec.arch} model, not the --arch {arch} asked for "
                         "(--arch names the architecture of a torchvision state dict; a checkpoint knows its own)")
    if agnostic_nms is not None:
        model.post_processor.config = model.post_processor.config.replace(agnostic_nms=agnostic_nms)
    return TorchPredictor(model.to(device), device)
