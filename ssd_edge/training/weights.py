"""`--weights`: start a new run from the weights of another one (our checkpoint) or of
torchvision's COCO detector. A checkpoint of another architecture is refused by name (its
tensors would land wherever a layer name happens to match); what is not loaded (the heads
of another class list, say) is named with the reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from ssd_edge.checkpoint import CHECKPOINT, QAT_KEY, CheckpointError, WeightsFile, open_weights
from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.models.ssd import SSD
from ssd_edge.runtime.spec import ModelSpec, SpecError

PARTS = {  # first name component of a state-dict key -> the part a user knows
    "backbone": "backbone",
    "extras": "extra layers",
    "classification_headers": "classification heads",
    "regression_headers": "box regression heads",
}


class WeightsError(SSDEdgeError, ValueError):
    """--weights that cannot start this run; the message names the file and what would."""


@dataclass(frozen=True)
class Transfer:
    """What `transfer_weights` copied: `copied` of `total` tensors of the model; `skipped`
    maps the part of the model (backbone, classification heads...) to (tensors, reason)."""

    copied: int
    total: int
    skipped: dict[str, tuple[int, str]]

    def describe(self, source: object) -> str:
        line = f"weights: {self.copied}/{self.total} tensors from {source}"
        if not self.skipped:
            return line
        parts = "; ".join(f"{part} ({count} tensors): {why}" for part, (count, why) in self.skipped.items())
        return f"{line}; not loaded, so they keep their initialisation: {parts}"


def part_of(key: str) -> str:
    return PARTS.get(key.split(".")[0], key.split(".")[0])


def transfer_weights(model: SSD, state: dict[str, torch.Tensor], source_spec: ModelSpec | None = None) -> Transfer:
    """Copy every tensor of `state` whose name and shape match one of `model`'s; the others
    keep the model's own values. `source_spec` (the weights' ModelSpec) explains why a shape
    differs (another class list, other architecture options)."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    missing, reshaped = Counter(), Counter()
    for key, value in own.items():
        if key in matching:
            continue
        (reshaped if key in state else missing)[part_of(key)] += 1
    skipped = {}
    for part in sorted(set(missing) | set(reshaped), key=lambda p: list(PARTS.values()).index(p)
                       if p in PARTS.values() else len(PARTS)):
        reasons = []
        if reshaped[part]:
            reasons.append(shape_reason(part, model.spec, source_spec))
        if missing[part]:
            reasons.append(f"{missing[part]} not in the weights")
        skipped[part] = (reshaped[part] + missing[part], "; ".join(reasons))
    return Transfer(len(matching), len(own), skipped)


def shape_reason(part: str, spec: ModelSpec, source: ModelSpec | None) -> str:
    if source is None:
        return "other shapes"
    if part == "classification heads" and tuple(source.class_names) != tuple(spec.class_names):
        return (f"the weights are for another class list ({len(source.class_names) - 1}: "
                f"{', '.join(source.class_names[1:6])}{', ...' if len(source.class_names) > 6 else ''}; "
                f"this run has {len(spec.class_names) - 1}: {', '.join(spec.class_names[1:6])}"
                f"{', ...' if len(spec.class_names) > 6 else ''})")
    if dict(source.arch_options) != dict(spec.arch_options):
        return f"other shapes (the weights' architecture options {dict(source.arch_options)}, this model's " \
               f"{dict(spec.arch_options)})"
    return "other shapes"


def checkpoint_spec(weights: WeightsFile) -> ModelSpec:
    try:
        return ModelSpec.from_dict(weights.data["spec"])
    except (KeyError, SpecError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{weights.path}: the checkpoint does not describe a usable model: {exc}") from None


def load_weights(model: SSD, path: str, arch: str) -> Transfer:
    """Put the weights of `path` into `model` (being built for --arch `arch`). Our checkpoint
    must hold the same architecture (its own ModelSpec says which); torchvision's COCO
    detector state dict (mobilenetv3_ssd, vgg16_ssd) is read under torchvision's names."""
    weights = open_weights(path)
    if weights.kind == CHECKPOINT:
        source_spec = checkpoint_spec(weights)
        if weights.data.get(QAT_KEY):
            raise WeightsError(f"{path}: a quantization-aware (QAT) checkpoint, BatchNorms folded into its "
                               f"convolutions: continue its run with --resume {path}, or start from the float "
                               f"checkpoint it was fine-tuned from")
        if source_spec.arch != arch:
            raise WeightsError(f"{path}: holds a {source_spec.arch} model, and this run trains --arch {arch}: only "
                               f"layers whose names happen to match would load; train --arch {source_spec.arch} to "
                               f"start from it, or leave --weights out")
    else:
        source_spec = None
    source = weights.model(arch)
    if source_spec is None:
        source_spec = source.spec  # torchvision's detector: COCO's class list
    return transfer_weights(model, source.state_dict(), source_spec)
