"""The PyTorch peers of ssd-bench, run eager on the CPU in the same process and threads:

- `torchvision_peer`: torchvision's `ssdlite320_mobilenet_v3_large` with its own
  preprocessing (GeneralizedRCNNTransform: resize to 320x320, normalise) and its own
  postprocessing (`SSD.postprocess_detections`, `transform.postprocess`), at the
  thresholds of the model it is compared with.
- `torch_model_peer`: our PyTorch model (a checkpoint) eager: the runtime's preprocessing,
  `model.raw`, then its `PostProcessor`, exactly what `SSD.forward` does in eval mode.

Both run under `torch.inference_mode()`. Stages: `preprocess` is the conversion of the BGR
uint8 images into what the model takes plus the model's own input transform; `network`
the backbone and heads; `decode_nms` everything after them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ssd_edge.bench.latency import BenchError, Subject
from ssd_edge.common.errors import require
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.preprocess import preprocess
from ssd_edge.runtime.spec import ModelSpec
from ssd_edge.runtime.stage_timer import StageTimer

PURPOSE = "ssd-bench's PyTorch peers (--peer torchvision, --compare-torch)"
torch = require("torch", "train", PURPOSE)  # a one-line 'install ssd-edge[train]' where torch is missing
require("torchvision", "train", PURPOSE)

TORCHVISION_NAME = "torchvision ssdlite320_mobilenet_v3_large (eager)"
TORCH_INPUT_SIZE = (320, 320)  # torchvision's SSDLite320 always resizes to this


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads (None keeps torch's default); returns the count in effect."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def torchvision_layout(model) -> dict[str, torch.Tensor]:
    """Our mobilenetv3_ssd's weights under torchvision's SSDLite320 key names."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from ssd_edge.models.torchvision_import import detector_state_dict

    twin = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=model.num_classes)
    keys = twin.state_dict()
    ours_to_theirs = detector_state_dict(model, {key: key for key in keys})
    weights = model.state_dict()
    return {theirs: weights[ours] for ours, theirs in ours_to_theirs.items()}


def peer_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision-layout SSDLite320 weights from `path` (torchvision's own state dict, or our
    mobilenetv3_ssd checkpoint at 320x320) and how they were obtained."""
    from ssd_edge.checkpoint import TORCHVISION, open_weights

    weights = open_weights(path)
    if weights.kind == TORCHVISION:
        return weights.data, f"torchvision state dict {path}"
    model = weights.model()
    spec = model.spec
    if not same_architecture(spec):
        raise BenchError(f"{path}: a {spec.arch} at {spec.input_size} ({spec.arch_options}) has no torchvision "
                         "SSDLite320 twin; give --peer-weights a mobilenetv3_ssd checkpoint at 320x320")
    return torchvision_layout(model), f"converted from our checkpoint {path}"


class _StageClock:
    """Forward hooks that time the torchvision SSD's transform and backbone + head."""

    def __init__(self, model) -> None:
        self.marks: dict[str, float] = {}
        self.handles = [
            model.transform.register_forward_pre_hook(self._mark("transform_start")),
            model.transform.register_forward_hook(self._mark("transform_end")),
            model.backbone.register_forward_pre_hook(self._mark("network_start")),
            model.head.register_forward_hook(self._mark("network_end")),
        ]

    def _mark(self, name: str):
        def hook(*_: object) -> None:
            self.marks[name] = time.perf_counter()
        return hook


def as_tensors(images_bgr: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """BGR uint8 (H, W, 3) images -> RGB float (3, H, W) tensors in [0, 1], what torchvision's
    detection models take."""
    return [torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1])).permute(2, 0, 1).float().div_(255)
            for im in images_bgr]


def calibrate_torchvision(model, images_bgr: Sequence[np.ndarray]) -> None:
    """Set the BatchNorm statistics of a randomly initialised torchvision SSD to those of
    `images_bgr` (through its own transform), as `calibrate_batchnorm` explains."""
    from ssd_edge.models.calibration import calibrate_batchnorm

    with torch.no_grad():
        batch = model.transform(as_tensors(images_bgr))[0].tensors
    calibrate_batchnorm(model, batch, lambda x: model.head(list(model.backbone(x).values())))


def same_architecture(spec: ModelSpec) -> bool:
    """Whether a model of `spec` is, layer for layer, torchvision's SSDLite320."""
    return (spec.arch == "mobilenetv3_ssd" and tuple(spec.input_size) == TORCH_INPUT_SIZE
            and dict(spec.arch_options) == {"reduced_tail": True, "width_mult": 1.0})


def torchvision_peer(
    spec: ModelSpec, config: PostprocessConfig, weights: str | os.PathLike | None, images: Sequence[np.ndarray]
) -> Subject:
    """torchvision's SSDLite320 with the classes of `spec`, as a Subject, postprocessing at
    `config`'s thresholds. Without `weights`: random weights (seed 0) with BatchNorm
    statistics of `images`. The Subject's note says which, and whether `spec` is the same
    architecture."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    num_classes = spec.num_classes
    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes, score_thresh=config.score_threshold,
        nms_thresh=config.iou_threshold, topk_candidates=config.top_k, detections_per_img=config.max_detections,
    )
    if weights is None:
        calibrate_torchvision(model, images)
        origin = ("random weights (seed 0, BatchNorm statistics of the benchmark images; none given with "
                  "--peer-weights): latency of the architecture; its decode+NMS load is that of an untrained head")
    else:
        state_dict, origin = peer_weights(weights)
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise BenchError(f"{weights}: does not fit torchvision's SSDLite320 with {num_classes} classes "
                             f"({str(exc).splitlines()[0]})") from None
    model.eval()
    clock = _StageClock(model)

    def call(images: Sequence[np.ndarray], timer: StageTimer) -> object:
        start = time.perf_counter()
        with torch.inference_mode():
            tensors = as_tensors(images)
            converted = time.perf_counter()
            found = model(tensors)
        end, marks = time.perf_counter(), clock.marks
        timer.add("preprocess", converted - start + marks["transform_end"] - marks["transform_start"])
        timer.add("network", marks["network_end"] - marks["network_start"])
        timer.add("decode_nms", end - marks["network_end"])
        return found

    note = (f"{origin}; score > {config.score_threshold}, top {config.top_k} per class, IoU {config.iou_threshold}, "
            f"{config.max_detections} detections (the thresholds of the model it is compared with)")
    if config.agnostic_nms:
        note += "; NMS per class: torchvision's SSD has no class-agnostic NMS, the models use it"
    if not same_architecture(spec):
        note += (f". NOT the same network as the models: they are {spec.arch} at {spec.input_size[0]}x"
                 f"{spec.input_size[1]}, so the ratios compare different architectures")
    return Subject(name=TORCHVISION_NAME, call=call, kind="peer", format="PyTorch", backend="torch eager (CPU)",
                   path=str(weights) if weights else None, note=note)


def torch_model_name(path: str | os.PathLike) -> str:
    return f"ssd-edge PyTorch eager ({Path(path).name})"


def torch_model_peer(path: str | os.PathLike, overrides: dict[str, float | int | None]) -> Subject:
    """Our checkpoint `path`, eager on the CPU, as a Subject."""
    from ssd_edge.checkpoint import load_model

    model = load_model(path).eval()
    model.post_processor.config = model.spec.postprocess.replace(**overrides)
    spec = model.spec

    def call(images: Sequence[np.ndarray], timer: StageTimer) -> object:
        with torch.inference_mode():
            with timer.stage("preprocess"):
                batch = torch.from_numpy(preprocess(images, spec.input_size))
            with timer.stage("network"):
                locs, confs = model.raw(batch)
            with timer.stage("decode_nms"):
                return model.post_processor(locs, confs, model.priors_cxcywh, [im.shape[:2] for im in images])

    path = Path(path)
    return Subject(name=torch_model_name(path), call=call, kind="peer", format="PyTorch",
                   backend="torch eager (CPU)", size_mb=path.stat().st_size / 1e6, path=str(path),
                   note=f"our model {path} eager, decode+NMS by its PostProcessor (torch)")
