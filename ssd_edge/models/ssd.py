"""The SSD detector: backbone, extras, classification and regression headers, PostProcessor."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssd_edge.models.init import classification_prior_init
from ssd_edge.models.postprocessor import PostProcessor
from ssd_edge.runtime.priors import default_boxes
from ssd_edge.runtime.spec import ModelSpec


def _flatten_head(output: Tensor, columns: int) -> Tensor:
    """(B, A*K, H, W) -> (B, H*W*A, K): location-major, then box shape, as the priors are laid out."""
    batch, _, height, width = output.shape
    output = output.view(batch, -1, columns, height, width)
    return output.permute(0, 3, 4, 1, 2).reshape(batch, -1, columns)


class SSD(nn.Module):
    """Single Shot MultiBox Detector.

    backbone: maps normalised images to a list of feature maps; the extras continue from
    its last one. extras: blocks that each halve the last map, adding one map each.
    classification_headers / regression_headers: one conv block per map producing
    A*C class logits and A*4 box regressions per location.

    `model(images)` takes RGB images scaled to [0, 1], (B, 3, H, W) at `spec.input_size`,
    and normalises them itself. In training mode it returns raw (locs (B, P, 4),
    logits (B, P, C)) for `MultiBoxLoss`; in eval mode it returns per image
    `result_boxes, result_labels, result_scores, result_confs` from the PostProcessor:
    decoded boxes in the pixels of `image_sizes` (default: the input size) and each box's
    softmax vector.
    """

    def __init__(
        self,
        spec: ModelSpec,
        backbone: nn.Module,
        extras: nn.ModuleList,
        classification_headers: nn.ModuleList,
        regression_headers: nn.ModuleList,
        post_processor: PostProcessor,
    ) -> None:
        super().__init__()
        levels = len(spec.default_boxes.feature_maps)
        if not len(classification_headers) == len(regression_headers) == levels:
            raise ValueError(
                f"{len(classification_headers)} classification and {len(regression_headers)} regression "
                f"headers for {levels} feature maps"
            )
        self.spec = spec
        self.backbone = backbone
        self.extras = extras
        self.classification_headers = classification_headers
        self.regression_headers = regression_headers
        self.post_processor = post_processor
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("priors_cxcywh", torch.from_numpy(default_boxes(spec)), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def init_classification_prior(self, foreground_prior: float = 0.01) -> None:
        """Start every default box at "background" with probability 1 - foreground_prior
        (the classification headers' output biases; see `classification_prior_init`).
        Training from scratch does this; a freshly built model keeps zero biases."""
        classification_prior_init(self.classification_headers, self.num_classes, foreground_prior)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """All prediction maps for normalised images, finest first."""
        features = list(self.backbone(images))
        x = features[-1]
        for extra in self.extras:
            x = extra(x)
            features.append(x)
        return features

    def raw(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs: locs (B, P, 4) regressions and logits (B, P, C) class logits."""
        self._check_input(images)
        features = self.feature_maps((images - self.mean) / self.std)
        locs, logits = [], []
        for feature, reg_layer, conf_layer in zip(features, self.regression_headers, self.classification_headers):
            locs.append(_flatten_head(reg_layer(feature), 4))  # (B, H*W*A, 4)
            logits.append(_flatten_head(conf_layer(feature), self.num_classes))  # (B, H*W*A, C)
        return torch.cat(locs, dim=1), torch.cat(logits, dim=1)

    def forward(self, images: Tensor, image_sizes: list[tuple[int, int]] | None = None):
        locs, logits = self.raw(images)
        if self.training:
            return locs, logits
        if image_sizes is None:
            image_sizes = [tuple(self.spec.input_size)] * images.shape[0]
        return self.post_processor(locs, logits, self.priors_cxcywh, image_sizes)

    def _check_input(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SSD takes (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != tuple(self.spec.input_size):
            raise ValueError(
                f"SSD was built for {self.spec.input_size[0]}x{self.spec.input_size[1]} (H x W) inputs, "
                f"got shape {tuple(images.shape)}; resize the images or rebuild the model for that size"
            )


class RawOutputs(nn.Module):
    """The export contract: images (B, 3, H, W) in [0, 1] -> (locs, logits), no postprocessing;
    the ONNX outputs are named 'locs' and 'confs'."""

    def __init__(self, model: SSD) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.raw(images)
