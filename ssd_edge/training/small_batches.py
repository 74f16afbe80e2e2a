"""Training on any dataset size and batch size.

BatchNorm cannot compute batch statistics from one value per channel: a batch of one image
reaching a 1x1 feature map (the last extra layers and their heads) fails with "Expected
more than 1 value per channel when training". Such a batch comes from `--batch-size 1`, a
one-image dataset, an epoch whose last batch holds one image, or a batch that unreadable
images shrank to one. torchvision's detection references avoid the last case by dropping the
incomplete last batch; we do that when it holds a single image, and let the layers that
would see one value per channel normalise with their running statistics (as in evaluation,
and as a frozen BatchNorm always does) for that batch. Every other layer trains as usual.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def drop_last_batch(samples: int, batch_size: int) -> bool:
    """Whether an epoch of `samples` images (per process) drops its incomplete last batch:
    when there are two full batches or more (a short batch would weigh as much as a full
    one), and when it would hold a single image beside full ones. Shuffling puts other
    images there each epoch, so none is left out for good."""
    return samples >= 2 * batch_size or (samples > batch_size and samples % batch_size == 1)


def _one_value_per_channel(x: torch.Tensor) -> bool:
    return x.dim() >= 2 and x.shape[1] > 0 and x.numel() == x.shape[1]


@contextlib.contextmanager
def running_stats_for_single_values(model: nn.Module) -> Iterator[None]:
    """While the block runs, a BatchNorm layer in training mode whose input holds one value
    per channel (N x H x W == 1) normalises with its running statistics and leaves them
    unchanged, instead of raising; every other forward is untouched."""
    switched: set[int] = set()

    def before(module: nn.Module, args) -> None:
        if module.training and args and _one_value_per_channel(args[0]):
            module.training = False
            switched.add(id(module))

    def after(module: nn.Module, args, output) -> None:
        if id(module) in switched:
            switched.discard(id(module))
            module.training = True

    handles = []
    for module in model.modules():
        if isinstance(module, BATCH_NORMS):
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
