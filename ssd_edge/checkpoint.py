"""Checkpoints: plain tensors and plain data, written atomically, read with weights_only=True.

Layout: {"format": "ssd_edge.checkpoint", "version": 1, "model": state_dict,
"spec": ModelSpec as a dict, "epoch": int, "metrics": dict, and, from training,
"optimizer", "scheduler", "rng"}.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ssd_edge.runtime.atomic import atomic_path
from ssd_edge.models.registry import build_model, model_from_spec
from ssd_edge.models.ssd import SSD
from ssd_edge.models.torchvision_import import coco_category_names, is_torchvision_detector, load_torchvision_detector
from ssd_edge.runtime.spec import ModelSpec, SpecError
from ssd_edge.runtime.errors import SSDEdgeError

FORMAT = "ssd_edge.checkpoint"
VERSION = 1


class CheckpointError(SSDEdgeError, ValueError):
    """A weights file that cannot be used, with the file named in the message."""


def save_checkpoint(path: str | os.PathLike, model: SSD, **state: Any) -> None:
    """Write model weights, its ModelSpec and any extra plain `state` (optimizer, epoch...)
    to `path` atomically: a crash mid-write leaves the previous file intact."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "spec": model.spec.to_dict(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Our checkpoint as a dict (see the module docstring); anything else is an error."""
    data = read_weights_file(path, map_location)
    if not is_checkpoint(data):
        raise CheckpointError(f"{path}: not an ssd-edge checkpoint (no 'format': '{FORMAT}' entry)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r}, this toolkit reads {VERSION}")
    return data


def model_from_checkpoint(data: dict[str, Any], source: str | os.PathLike = "checkpoint") -> SSD:
    try:
        spec = ModelSpec.from_dict(data["spec"])
        model = model_from_spec(spec)
        model.load_state_dict(data["model"])
    except (KeyError, SpecError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the checkpoint does not describe a usable model: {exc}") from None
    return model


def load_model(path: str | os.PathLike, arch: str | None = None, map_location: str | torch.device = "cpu") -> SSD:
    """A model from our checkpoint, or from torchvision's SSDLite320 / SSD300 COCO state dict
    (then `arch` names the architecture: mobilenetv3_ssd or vgg16_ssd)."""
    data = read_weights_file(path, map_location)
    if is_checkpoint(data):
        return model_from_checkpoint(load_checkpoint(path, map_location), path)
    if is_torchvision_detector(data):
        if arch is None:
            raise CheckpointError(f"{path}: a torchvision detector state dict; say which architecture with --arch")
        try:
            model = build_model(arch, coco_category_names())
            return load_torchvision_detector(model, data)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    raise CheckpointError(f"{path}: neither an ssd-edge checkpoint nor a torchvision SSD/SSDLite state dict")
