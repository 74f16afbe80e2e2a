"""Training: data, model, optimiser and schedule, the epoch loop, validation and checkpoints.

`train(TrainConfig(...))` is what `train_ssd.py` / `ssd-train` call. Under torchrun it
trains with DistributedDataParallel; only rank 0 writes checkpoints, logs and plots.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ssd_edge.checkpoint import load_checkpoint, load_model, model_from_checkpoint, read_weights_file, save_checkpoint
from ssd_edge.data.dataset import DetectionDataset, collate
from ssd_edge.data.sources import Split, describe, load_splits
from ssd_edge.data.transforms import TrainAugment
from ssd_edge.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from ssd_edge.evaluation.coco import evaluate
from ssd_edge.training.loss import MultiBoxLoss
from ssd_edge.training.matching import MATCHERS
from ssd_edge.models.registry import build_model
from ssd_edge.models.ssd import SSD
from ssd_edge.models.torchvision_import import load_torchvision_backbone
from ssd_edge.training.plots import plot_curves, write_metrics_csv
from ssd_edge.evaluation.predictor import TorchPredictor
from ssd_edge.runtime.errors import SSDEdgeError, UsageError


class TrainingError(SSDEdgeError, RuntimeError):
    """Training cannot go on (a NaN loss, an unusable --resume file...)."""


@dataclass
class TrainConfig:
    datapath: str
    arch: str = "mobilenetv3_ssd"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    imgsz: int | None = None
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    matcher: str = "hungarian_iou"
    pretrained_backbone: str | None = None
    weights: str | None = None
    resume: str | None = None
    amp: bool = False
    save: str = "ssd.pt"
    progress: bool = True

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError(f"--epochs ({self.epochs}) and --batch-size ({self.batch_size}) must be at least 1")
        if self.lr <= 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.optimizer not in ("sgd", "adamw"):
            raise UsageError(f"--optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.matcher not in MATCHERS:
            raise UsageError(f"--matcher must be one of {', '.join(MATCHERS)}, got {self.matcher!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device must be cpu, cuda or auto, got {self.device!r}")


def device_type(name: str) -> str:
    """'cuda' or 'cpu' for a --device value ('auto' picks CUDA when PyTorch sees a GPU)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else "cpu"


def pick_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = device_type(name)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA device")
        return torch.device("cuda", info.local_rank) if name == "cuda" else torch.device(name)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def log(info: DistInfo, message: str) -> None:
    if info.is_main:
        print(message, flush=True)


# ---------------------------------------------------------------- model and optimiser


def transfer_weights(model: SSD, state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Copy every tensor whose name and shape match; returns (copied, total in model)."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    return len(matching), len(own)


def build_for_training(config: TrainConfig, class_names: tuple[str, ...], info: DistInfo) -> SSD:
    options = {}
    if config.pretrained_backbone and config.arch != "vgg16_ssd":
        options["reduced_tail"] = False  # ImageNet MobileNetV3 weights have the full tail (as torchvision)
    model = build_model(config.arch, class_names, config.imgsz, **options)
    if config.pretrained_backbone:
        load_torchvision_backbone(model, read_weights_file(config.pretrained_backbone))
        log(info, f"backbone: ImageNet weights from {config.pretrained_backbone}")
    if config.weights:
        source = load_model(config.weights, config.arch)
        copied, total = transfer_weights(model, source.state_dict())
        note = "" if copied == total else " (the rest, e.g. heads for another class list, keep their initialisation)"
        log(info, f"weights: {copied}/{total} tensors from {config.weights}{note}")
    return model


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)  # no decay on BN and biases
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def warmup_cosine(warmup_iters: int, total_iters: int):
    """LR factor per iteration: linear warm-up from 0.001, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_iters:
            return 0.001 + (1 - 0.001) * step / warmup_iters
        progress = (step - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


# ---------------------------------------------------------------- state for --resume


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


# ---------------------------------------------------------------- the loop


@dataclass
class Run:
    config: TrainConfig
    info: DistInfo
    device: torch.device
    model: SSD
    net: torch.nn.Module  # the model, or DDP around it
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    val: Split | None
    start_epoch: int = 0
    best_ap50: float = -1.0
    history: list[dict] | None = None


def train_one_epoch(run: Run, epoch: int, criterion: MultiBoxLoss) -> dict[str, float]:
    from tqdm import tqdm

    run.net.train()
    dataset: DetectionDataset = run.loader.dataset
    dataset.epoch = epoch
    if isinstance(run.loader.sampler, DistributedSampler):
        run.loader.sampler.set_epoch(epoch)
    else:  # the epoch's order depends on (seed, epoch) only, so --resume replays it exactly
        run.loader.generator.manual_seed(run.config.seed * 1000003 + epoch)
    loss_sum = acc_sum = images = skipped = steps = 0.0
    began = time.perf_counter()
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{run.config.epochs}", unit="batch",
               disable=not (run.config.progress and run.info.is_main), dynamic_ncols=True)
    for batch_index, (x, target_locs, target_labels, batch_skipped) in enumerate(bar):
        skipped += batch_skipped
        if x is None:
            continue
        x, target_locs, target_labels = (t.to(run.device, non_blocking=True) for t in (x, target_locs, target_labels))
        with torch.autocast(run.device.type, enabled=run.scaler is not None):
            locs, confs = run.net(x)
            loss, acc = criterion(locs, confs, target_locs, target_labels)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss.item()} at epoch {epoch + 1}, batch {batch_index + 1}; training stopped. "
                f"The last good checkpoint ({run.config.save}) is untouched; try a lower --lr"
            )
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            loss.backward()
            run.optimizer.step()
        run.scheduler.step()
        loss_sum += loss.item()
        acc_sum += acc.item()
        steps += 1
        images += len(x)
        rate = images * run.info.world_size / (time.perf_counter() - began)
        bar.set_postfix(loss=f"{loss_sum / steps:.3f}", train_acc=f"{acc_sum / steps:.3f}", img_s=f"{rate:.1f}")
    bar.close()
    loss_sum, acc_sum, steps, images, skipped = all_reduce_sum(run.info, [loss_sum, acc_sum, steps, images, skipped])
    seconds = time.perf_counter() - began
    return {
        "epoch": epoch + 1,
        "loss": loss_sum / max(steps, 1),
        "train_acc": acc_sum / max(steps, 1),
        "lr": run.optimizer.param_groups[0]["lr"],
        "images_per_s": images / seconds,
        "skipped": int(skipped),
        "seconds": seconds,
    }


def validate(run: Run) -> dict[str, float]:
    if run.val is None or not run.info.is_main:
        return {}
    result = evaluate(TorchPredictor(run.model, run.device), run.val, progress=run.config.progress)
    return {"AP": result.metrics["AP"], "AP50": result.metrics["AP50"]}


def save_state(run: Run, epoch: int, row: dict) -> None:
    """Write the last checkpoint, the best one, metrics.csv and curves.png (rank 0)."""
    save = Path(run.config.save)
    state = {
        "epoch": epoch + 1,
        "metrics": row,
        "history": run.history,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng_state(),
        "best_ap50": run.best_ap50,
        "config": {k: v for k, v in asdict(run.config).items() if v is not None},
    }
    save_checkpoint(save, run.model, **state)
    if row.get("AP50") is not None and row["AP50"] >= run.best_ap50:
        save_checkpoint(save.with_name(f"{save.stem}.best{save.suffix}"), run.model, **state)
    write_metrics_csv(save.parent / "metrics.csv", run.history)
    plot_curves(save.parent / "curves.png", run.history)


def setup(config: TrainConfig, info: DistInfo, device: torch.device) -> Run:
    splits = load_splits(config.datapath)
    log(info, describe(config.datapath, splits))
    train_split = splits.get("train") or splits["val"]
    val = splits.get("val")
    resume = load_checkpoint(config.resume) if config.resume else None
    if resume is not None:
        model = model_from_checkpoint(resume, config.resume)
        if tuple(model.spec.class_names) != train_split.class_names:
            raise TrainingError(f"{config.resume}: trained for classes {model.spec.class_names[1:]}, "
                                f"but {config.datapath} has {train_split.class_names[1:]}")
    else:
        model = build_for_training(config, train_split.class_names, info)
    model.to(device)
    spec = model.spec
    log(info, f"model: {spec.arch}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
              f"input {spec.input_size[0]}x{spec.input_size[1]}, {spec.num_priors} default boxes, "
              f"{spec.num_classes - 1} classes; device {device}, {info.world_size} process(es)")

    dataset = DetectionDataset(train_split.records, TrainAugment(spec.input_size), model.priors_cxcywh.cpu().numpy(),
                               config.matcher, spec.variances, config.seed)
    sampler = DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=config.seed) if info.enabled else None
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=config.workers, collate_fn=collate, drop_last=len(dataset) >= 2 * config.batch_size,
                        generator=torch.Generator().manual_seed(config.seed) if sampler is None else None,
                        pin_memory=device.type == "cuda")
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if info.enabled else model
    optimizer = make_optimizer(config, model)
    total = config.epochs * len(loader)
    warmup = min(total // 2, max(1, round(config.warmup_epochs * len(loader))))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
    if config.amp and device.type != "cuda":
        raise UsageError("--amp needs a CUDA device (mixed precision on CPU is not supported here)")
    scaler = torch.amp.GradScaler("cuda") if config.amp else None
    run = Run(config, info, device, model, net, loader, optimizer, scheduler, scaler, val, history=[])
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        restore_rng(resume["rng"])
        run.start_epoch, run.best_ap50 = int(resume["epoch"]), float(resume.get("best_ap50", -1.0))
        run.history = list(resume.get("history") or [])
        log(info, f"resumed from {config.resume} after epoch {run.start_epoch}")
    return run


def train(config: TrainConfig) -> list[dict]:
    """Train as `config` says; returns the per-epoch history (loss, train_acc, AP, AP50...)."""
    config.validate()
    info = init_distributed(device_type(config.device))
    try:
        device = pick_device(config.device, info)
        seed_everything(config.seed + info.rank)
        if info.is_main:  # fail now, not after the first epoch
            Path(config.save).parent.mkdir(parents=True, exist_ok=True)
        run = setup(config, info, device)
        if run.start_epoch >= config.epochs:
            log(info, f"nothing to do: {config.resume} already finished {run.start_epoch} of {config.epochs} epochs")
        criterion = MultiBoxLoss()
        began = time.perf_counter()
        for epoch in range(run.start_epoch, config.epochs):
            row = train_one_epoch(run, epoch, criterion)
            row.update(validate(run))
            row["elapsed"] = time.perf_counter() - began  # wall clock since this process started training
            if info.is_main:
                run.best_ap50 = max(run.best_ap50, row.get("AP50", -1.0))
                run.history.append(row)
                save_state(run, epoch, row)
                log(info, summary_line(row, config.epochs))
            barrier(info)
        if info.is_main and run.history:
            best = f", best mAP@0.5 {run.best_ap50:.3f}" if run.best_ap50 >= 0 else ""
            log(info, f"saved {config.save}{best}; curves in {Path(config.save).parent / 'curves.png'}")
        return run.history
    finally:
        shutdown(info)


def summary_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['loss']:.4f}", f"train_acc {row['train_acc']:.3f}"]
    if "AP50" in row:
        parts += [f"mAP@0.5 {row['AP50']:.3f}", f"mAP@0.5:0.95 {row['AP']:.3f}"]
    parts += [f"lr {row['lr']:.2e}", f"{row['images_per_s']:.1f} img/s", f"skipped {row['skipped']}", f"{row['seconds']:.0f} s"]
    return "  ".join(parts)
