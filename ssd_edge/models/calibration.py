"""BatchNorm statistics for randomly initialised models, so that untrained models (in tests,
benchmarks and sample exports) produce outputs of a realistic scale."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def calibrate_batchnorm(
    model: nn.Module, images: Tensor, forward: Callable[[Tensor], object] | None = None
) -> nn.Module:
    """Set every BatchNorm's running statistics to those of one batch, then switch `model`
    to eval mode; returns it.

    images: (B, 3, H, W), what `forward` takes. forward: runs the layers whose BatchNorms
    to calibrate (default `model.raw`, an SSD's network without postprocessing).

    A freshly initialised SSD(Lite) has running_var = 1 everywhere and its activations
    shrink to ~1e-15 through the network: float32's subnormal range, where a CPU computes
    many times slower than on the normal numbers a trained model produces.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        (forward or model.raw)(images)
    return model.eval()
