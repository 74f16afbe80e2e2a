"""Weight initialisation schemes used by torchvision's SSD and SSDLite, and the
classification prior used when training starts from scratch."""

import math

import torch
from torch import nn


def normal_init(module: nn.Module, std: float = 0.03) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.constant_(layer.bias, 0.0)


def xavier_init(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.constant_(layer.bias, 0.0)


def background_logit(num_classes: int, foreground_prior: float) -> float:
    """The background bias b (object biases 0) for which softmax gives all object classes
    together probability `foreground_prior`: (C - 1) / (e^b + C - 1) = prior."""
    if not 0.0 < foreground_prior < 1.0:
        raise ValueError(f"foreground_prior must be in (0, 1), got {foreground_prior}")
    if num_classes < 2:
        raise ValueError(f"num_classes must count the background and at least one class, got {num_classes}")
    return math.log((num_classes - 1) * (1.0 - foreground_prior) / foreground_prior)


@torch.no_grad()
def classification_prior_init(headers: nn.ModuleList, num_classes: int, foreground_prior: float = 0.01) -> None:
    """Set the output bias of every classification header to a low foreground prior.

    The focal-loss paper's (RetinaNet's) trick, for a softmax over C classes: each default
    box starts out predicting "background" with probability 1 - foreground_prior, so the
    first optimizer steps are not spent learning that nearly every default box is
    background. Each header's last Conv2d has A*C output channels laid out box shape-major
    (channel a*C + c), background first (c = 0). Weights are left as they are.
    """
    logit = background_logit(num_classes, foreground_prior)
    for header in headers:
        convs = [layer for layer in header.modules() if isinstance(layer, nn.Conv2d)]
        if not convs or convs[-1].bias is None or convs[-1].out_channels % num_classes:
            raise ValueError(f"classification header {header} does not end in a biased Conv2d with a multiple "
                             f"of {num_classes} output channels")
        bias = convs[-1].bias.view(-1, num_classes)
        bias.zero_()
        bias[:, 0] = logit
