"""Training: target matching, MultiBoxLoss, the training loop, distributed set-up, curves."""
