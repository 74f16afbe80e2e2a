"""Helpers for tests that need a randomly initialised model with realistic activations."""

import torch
from torch import nn


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of `images`, then switch to eval.

    A freshly initialised SSDLite has running_var = 1 everywhere and its activations shrink
    to ~1e-15 through the network; calibrated statistics give outputs of a realistic scale.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model.raw(images) if hasattr(model, "raw") else model(images)
    return model.eval()
