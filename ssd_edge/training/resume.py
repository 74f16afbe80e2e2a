"""What `--resume` needs from a checkpoint: the training state (optimizer, schedule, RNG,
epoch) put back by `restore`, and the run's settings (the TrainConfig it stores under
"config"), which a resumed run takes whole: `resumed_config` fills in every setting the
command line left out and refuses one that contradicts the checkpoint. Every way a
checkpoint can fail to fit (weights only, another optimizer, a damaged RNG state, no stored
settings, other settings, other data) is a one-line error that names the file and says
what to do instead."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_edge.checkpoint import load_checkpoint
from ssd_edge.common.errors import SSDEdgeError

TRAINING_STATE = ("epoch", "optimizer", "scheduler", "rng")

# TrainConfig fields a resumed run may change: where the data is now (its class list and
# batches per epoch are checked), and how this machine runs it (data workers, which change
# nothing computed; the device; progress bars; CPU threads: the run's own number unless given,
# as another number changes float rounding). Every other field defines the run. Even
# --epochs: the cosine schedule spans all the epochs, so a longer run is another run.
FREE_ON_RESUME = ("datapath", "workers", "device", "progress", "threads", "resume")


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


def check_training_state(checkpoint: dict[str, Any], path: object) -> None:
    """Refuse, before any work, a checkpoint without training state, with a damaged
    optimizer state or a random-number state that cannot be put back."""
    alternative = f"to start a new run from its weights, use --weights {path}"
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if missing:
        raise ResumeError(f"{path}: holds weights but no training state ({', '.join(missing)} missing), "
                          f"so there is no run to resume; {alternative}")
    if not isinstance(checkpoint["optimizer"], dict):
        raise ResumeError(f"{path}: its optimizer state is damaged; {alternative}")
    current = rng_state()
    try:
        restore_rng(checkpoint["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError) as exc:
        raise ResumeError(f"{path}: its random-number state is damaged ({type(exc).__name__}: {exc}), "
                          f"so the run cannot continue exactly; {alternative}") from None
    finally:
        restore_rng(current)


def check_resumable(checkpoint: dict[str, Any], path: object, optimizer: str) -> None:
    """Refuse, before any work, a checkpoint without (usable) training state or one made
    with another optimizer than `optimizer` (whose state would fail only at the first step)."""
    check_training_state(checkpoint, path)
    kind = optimizer_kind(checkpoint["optimizer"])
    if kind != optimizer:
        raise ResumeError(f"{path}: was trained with --optimizer {kind}, and this run asks for {optimizer}; "
                          f"resume it with --optimizer {kind}, or to start a new run from its weights, "
                          f"use --weights {path}")


# ---------------------------------------------------------------- the run's settings


def option(name: str) -> str:
    """The command-line flag of a TrainConfig field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def shown(name: str, value: Any) -> str:
    """A setting as a user would have typed it: '--epochs 3', '--amp', 'no --weights'."""
    if value is None or value is False:
        return f"no {option(name)}"
    return option(name) if value is True else f"{option(name)} {value}"


def run_settings(config: Any, checkpoint: dict[str, Any], path: object) -> dict[str, Any]:
    """The settings of the run `checkpoint` holds: its stored "config", one value per field of
    `config` (a TrainConfig) outside FREE_ON_RESUME. Checkpoints store None values since
    they store every field; one missing from an older checkpoint was None (those were left
    out), or, for a field added later, its default. --save is where the run's files are now
    (see run_save_path)."""
    stored = checkpoint.get("config")
    if not isinstance(stored, dict):
        raise ResumeError(f"{path}: predates checkpoints that store their run's settings, so the run it holds "
                          f"cannot be continued exactly; to start a new run from its weights, use --weights {path}")
    settings = {}
    for field in dataclasses.fields(config):
        if field.name in FREE_ON_RESUME:
            continue
        if field.name in stored:
            settings[field.name] = stored[field.name]
        else:
            settings[field.name] = None if "None" in str(field.type) else field.default
    settings["save"] = run_save_path(str(settings["save"]), path)
    return settings


def run_save_path(stored_save: str, path: object) -> str:
    """Where the resumed run keeps its files: the --resume file itself, wherever it is and
    whatever it is called now (its best, metrics and curves beside it), or, for the run's best
    checkpoint (`<save stem>.best<suffix>`), the last checkpoint beside it. Never the stored
    --save as such: a renamed or moved copy would write into the original run's files (or
    create them relative to the current folder)."""
    resume, save = Path(str(path)), Path(stored_save)
    if resume.name == f"{save.stem}.best{save.suffix}":
        return str(resume.with_name(save.name))
    return str(resume)


def check_own_files(checkpoint: dict[str, Any], path: object, save: str) -> None:
    """Refuse to continue the best checkpoint `path` into a `save` beside it that holds
    another run (a copied best file next to another run's last checkpoint): its files are
    not this run's to replace."""
    target = Path(save)
    if target == Path(str(path)) or not target.exists():
        return
    try:
        other = load_checkpoint(target).get("config")
    except SSDEdgeError:
        other = None
    mine = checkpoint.get("config") or {}
    defining = [name for name in mine if name not in FREE_ON_RESUME and name != "save"]
    if not isinstance(other, dict) or any(other.get(name) != mine.get(name) for name in defining):
        raise ResumeError(f"{path}: continuing it would replace {target}, which holds another run; "
                          f"copy {path} into a folder of its own and resume it there")


def same_setting(name: str, given: Any, stored: Any, checkpoint: dict[str, Any]) -> bool:
    if name == "imgsz" and stored is None:  # the architecture's own input size
        return given is None or list(checkpoint.get("spec", {}).get("input_size", ())) == [given, given]
    if name == "save":
        return Path(str(given)).resolve() == Path(str(stored)).resolve()
    return given == stored


def check_same_run(config: Any, checkpoint: dict[str, Any], path: object, given: Iterable[str] | None = None) -> None:
    """Refuse a resume whose settings (the fields named in `given`; all that define the run
    when None) contradict the run `checkpoint` holds; the message names the flag, the
    value given and the checkpoint's."""
    settings = run_settings(config, checkpoint, path)
    check_own_files(checkpoint, path, settings["save"])
    for name in settings if given is None else [name for name in given if name in settings]:
        value = getattr(config, name)
        if same_setting(name, value, settings[name], checkpoint):
            continue
        why = (" (the cosine schedule spans all the epochs, so a longer or shorter run is another run)"
               if name == "epochs" else "")
        raise ResumeError(f"{path}: {shown(name, value)} contradicts the run it holds, which has "
                          f"{shown(name, settings[name])}{why}; a resumed run keeps every setting of its run: "
                          f"leave {option(name)} out to continue it, or start a new run from its weights "
                          f"with --weights {path}")


def resumed_config(config: Any, checkpoint: dict[str, Any], path: object, given: Iterable[str]) -> Any:
    """`config` (a TrainConfig for --resume `path`) with every setting of the run that
    `checkpoint` holds, after refusing any of the `given` ones (those the user set) that
    contradicts it. FREE_ON_RESUME settings may differ from the run's; those not given
    are the run's too (its data path, workers, device, progress bars)."""
    check_training_state(checkpoint, path)
    given = set(given)
    check_same_run(config, checkpoint, path, given)
    settings = run_settings(config, checkpoint, path)
    stored = checkpoint["config"]
    settings.update({name: stored[name] for name in FREE_ON_RESUME
                     if name not in given and name != "resume" and name in stored})
    if "datapath" not in given and not (settings.get("datapath") and Path(str(settings["datapath"])).exists()):
        raise ResumeError(f"{path}: the run's dataset {settings.get('datapath')} is not there (any more, or not "
                          f"from this folder); say where it is with --datapath")
    return dataclasses.replace(config, **settings)


def resume_run(config: Any, given: Iterable[str]) -> Any:
    """`resumed_config` for the checkpoint `config.resume` names: what ssd-train runs."""
    return resumed_config(config, load_checkpoint(config.resume), config.resume, given)


def check_batches_per_epoch(checkpoint: dict[str, Any], path: object, batches: int, datapath: str) -> None:
    """Refuse data that gives the resumed run another number of batches per epoch than the
    run had (another dataset, or another number of processes): the schedule counts steps."""
    had = checkpoint.get("batches_per_epoch")
    if had is not None and int(had) != batches:
        raise ResumeError(f"{path}: the run had {had} batches per epoch, and {datapath} gives {batches} "
                          f"(other images, or another number of processes), so it would not be the same run; "
                          f"resume it on its own data, or start a new run from its weights with --weights {path}")


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
