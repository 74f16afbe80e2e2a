"""What `--resume` needs from a checkpoint: the training state (optimizer, schedule, RNG,
epoch), stored by `training_state` and put back by `restore`, with every way a checkpoint
can fail to fit (weights only, another optimizer, a damaged RNG state) a one-line error
that names the file and says what to do instead."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ssd_edge.runtime.errors import SSDEdgeError

TRAINING_STATE = ("epoch", "optimizer", "scheduler", "rng")


class ResumeError(SSDEdgeError, ValueError):
    """A checkpoint that cannot be resumed; the message names it and the way out."""


def rng_state() -> dict[str, Any]:
    state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(state[1].astype(np.int64)), "pos": int(state[2])},
        "python": list(random.getstate()[1]),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))


def optimizer_kind(state: dict[str, Any]) -> str:
    """'adamw' or 'sgd', read from an optimizer state dict's hyperparameters (AdamW's
    groups carry betas), so checkpoints that predate the stored config are judged too."""
    groups = state.get("param_groups") or [{}]
    return "adamw" if "betas" in groups[0] else "sgd"


def check_resumable(checkpoint: dict[str, Any], path: object, optimizer: str) -> None:
    """Refuse, before any work, a checkpoint without training state or one made with
    another optimizer than `optimizer` (whose state would fail only at the first step)."""
    alternative = f"to start a new run from its weights, use --weights {path}"
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if missing:
        raise ResumeError(f"{path}: holds weights but no training state ({', '.join(missing)} missing), "
                          f"so there is no run to resume; {alternative}")
    if not isinstance(checkpoint["optimizer"], dict):
        raise ResumeError(f"{path}: its optimizer state is damaged; {alternative}")
    kind = optimizer_kind(checkpoint["optimizer"])
    if kind != optimizer:
        raise ResumeError(f"{path}: was trained with --optimizer {kind}, and this run asks for {optimizer}; "
                          f"resume it with --optimizer {kind}, or {alternative}")


def restore(checkpoint: dict[str, Any], path: object, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler) -> int:
    """Put the optimizer, schedule and RNG state back; returns the epochs already done."""
    alternative = f"to start a new run from its weights, use --weights {path}"
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        epoch = int(checkpoint["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise ResumeError(f"{path}: its optimizer or schedule state does not fit this run "
                          f"({type(exc).__name__}: {exc}); {alternative}") from None
    try:
        restore_rng(checkpoint["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError) as exc:
        raise ResumeError(f"{path}: its random-number state is damaged ({type(exc).__name__}: {exc}), "
                          f"so the run cannot continue exactly; {alternative}") from None
    return epoch
