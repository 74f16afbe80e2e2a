"""Checkpoints: plain tensors and plain data, written atomically, read with weights_only=True.

Layout: {"format": "ssd_edge.checkpoint", "version": 1, "model": state_dict,
"spec": ModelSpec as a dict, "epoch": int, "metrics": dict, and, from training,
"optimizer", "scheduler", "rng", "scaler" (--amp's GradScaler, else None), "history",
"best_ap50", "config" (every TrainConfig setting: --resume continues that run) and
"batches_per_epoch" (the schedule counts steps, so a resumed dataset must give as many)}; a
quantization-aware fine-tune's also QAT_KEY (its QatRecord as a dict: ssd_edge/training/qat.py).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssd_edge.common.atomic import write_bytes_atomic
from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.models.registry import build_model, model_from_spec
from ssd_edge.models.ssd import SSD
from ssd_edge.models.torchvision_import import coco_category_names, is_torchvision_detector, load_torchvision_detector
from ssd_edge.runtime.spec import ModelSpec, SpecError

FORMAT = "ssd_edge.checkpoint"
VERSION = 1
QAT_KEY = "qat"  # the entry of a quantization-aware fine-tune's checkpoint: its QatRecord as a dict


class CheckpointError(SSDEdgeError, ValueError):
    """A weights file that cannot be used, with the file named in the message."""


def save_checkpoint(path: str | os.PathLike, model: SSD, **state: Any) -> None:
    """Write model weights, its ModelSpec and any extra plain `state` (optimizer, epoch...)
    to `path` atomically: a crash mid-write leaves the previous file intact.

    The checkpoint is serialised in memory first and written with plain file writes, so a
    full disk (or a file-size limit, a lost mount) is a CheckpointError naming `path` and
    the system's reason ("No space left on device"), not torch's zip-writer internals."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "spec": model.spec.to_dict(),
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        write_bytes_atomic(path, buffer.getbuffer())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CheckpointError(f"{path}: the checkpoint could not be written ({reason}); "
                              f"the file that was there before, if any, is unchanged") from None


def read_weights_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) with errors that name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({first_line})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a checkpoint or a state dict")
    return data


def is_checkpoint(data: dict[str, Any]) -> bool:
    return data.get("format") == FORMAT


CHECKPOINT = "checkpoint"
TORCHVISION = "torchvision"


@dataclass(frozen=True)
class WeightsFile:
    """A weights file read and recognised: `kind` is CHECKPOINT (ours; `data` is the whole
    checkpoint, see the module docstring) or TORCHVISION (`data` is torchvision's SSDLite320 /
    SSD300 COCO detector state dict, under torchvision's key names)."""

    path: Path
    kind: str
    data: dict[str, Any]

    def model(self, arch: str | None = None) -> SSD:
        """The SSD these weights describe. A torchvision state dict needs `arch`
        (mobilenetv3_ssd or vgg16_ssd); a checkpoint knows its own."""
        if self.kind == CHECKPOINT:
            return model_from_checkpoint(self.data, self.path)
        if arch is None:
            raise CheckpointError(f"{self.path}: a torchvision detector state dict; say which architecture with --arch")
        try:
            return load_torchvision_detector(build_model(arch, coco_category_names()), self.data)
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None


def open_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> WeightsFile:
    """The one place that decides what a weights file is: our checkpoint (of a version this
    toolkit reads) or a torchvision SSD/SSDLite detector state dict; anything else is a
    CheckpointError naming the file."""
    path = Path(path)
    data = read_weights_file(path, map_location)
    if is_checkpoint(data):
        if data.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r}, this toolkit reads {VERSION}")
        return WeightsFile(path, CHECKPOINT, data)
    if is_torchvision_detector(data):
        return WeightsFile(path, TORCHVISION, data)
    raise CheckpointError(f"{path}: neither an ssd-edge checkpoint nor a torchvision SSD/SSDLite state dict")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Our checkpoint as a dict (see the module docstring); anything else is an error."""
    weights = open_weights(path, map_location)
    if weights.kind != CHECKPOINT:
        raise CheckpointError(f"{path}: not an ssd-edge checkpoint (no 'format': '{FORMAT}' entry)")
    return weights.data


def model_from_checkpoint(data: dict[str, Any], source: str | os.PathLike = "checkpoint") -> SSD:
    try:
        spec = ModelSpec.from_dict(data["spec"])
        model = model_from_spec(spec)
        if data.get(QAT_KEY):  # a QAT fine-tune's: BatchNorms folded, fake-quantized convolutions (training/qat.py)
            from ssd_edge.training.qat import QatRecord, prepare_qat

            prepare_qat(model)
            model.qat_record = QatRecord.from_dict(data[QAT_KEY])
        model.load_state_dict(data["model"])
    except (KeyError, SpecError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the checkpoint does not describe a usable model: {exc}") from None
    return model


def load_model(path: str | os.PathLike, arch: str | None = None, map_location: str | torch.device = "cpu") -> SSD:
    """A model from our checkpoint, or from torchvision's SSDLite320 / SSD300 COCO state dict
    (then `arch` names the architecture: mobilenetv3_ssd or vgg16_ssd)."""
    return open_weights(path, map_location).model(arch)
