"""Training: data, model, optimiser and schedule, the epoch loop, validation and checkpoints.

`train(TrainConfig(...))` is what `train_ssd.py` / `ssd-train` call. Under torchrun it
trains with DistributedDataParallel; only rank 0 writes checkpoints, logs and plots.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ssd_edge.checkpoint import QAT_KEY, load_checkpoint, model_from_checkpoint, read_weights_file, save_checkpoint
from ssd_edge.common.errors import SSDEdgeError, UsageError
from ssd_edge.data.dataset import DetectionDataset, collate, has_readable_image
from ssd_edge.data.sources import Split, describe, load_splits
from ssd_edge.data.transforms import TrainAugment
from ssd_edge.evaluation.coco import evaluate
from ssd_edge.evaluation.predictor import TorchPredictor
from ssd_edge.models.registry import build_model
from ssd_edge.models.ssd import SSD
from ssd_edge.models.torchvision_import import load_torchvision_backbone
from ssd_edge.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from ssd_edge.training.interrupt import StopRequest, ignore_sigint_in_worker
from ssd_edge.training.loss import MultiBoxLoss
from ssd_edge.training.matching import MATCHERS, target_encoder
from ssd_edge.training.outputs import RunFiles, writing
from ssd_edge.training.plots import plot_curves, write_metrics_csv
from ssd_edge.training.qat import start_qat
from ssd_edge.training.resume import check_batches_per_epoch, check_resumable, check_same_run, restore, rng_state
from ssd_edge.training.small_batches import drop_last_batch, running_stats_for_single_values
from ssd_edge.training.threads import AUTO, WAIT_POLICY, choose_threads
from ssd_edge.training.weights import load_weights


class TrainingError(SSDEdgeError, RuntimeError):
    """Training cannot go on (a NaN loss, an unusable --resume file...)."""


class TrainingInterrupted(SSDEdgeError, KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped training at a safe point; the message says what is saved
    and how to resume. A KeyboardInterrupt too, for callers that catch that. Exit status 130
    for Ctrl-C, 128 + the signal's number for another (143 for SIGTERM)."""

    exit_code = 130

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        if signum is not None and signum != signal.SIGINT:
            self.exit_code = 128 + int(signum)


@dataclass
class TrainConfig:
    datapath: str
    arch: str = "mobilenetv3_ssd"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.001  # the peak, after warm-up
    optimizer: str = "adamw"  # from scratch at lr 1e-3; SGD (Nesterov) needs ~10x the lr and far more steps
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    imgsz: int | None = None
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    matcher: str = "hungarian_iou"
    pretrained_backbone: str | None = None
    foreground_prior: float | None = 0.01  # classification bias prior of a new model (None: zero biases)
    weights: str | None = None
    resume: str | None = None
    amp: bool = False
    save: str = "ssd.pt"
    progress: bool = True
    threads: str | int = "auto"  # CPU threads: a number, or "auto" (see training/threads.py)
    qat: bool = False  # quantization-aware fine-tuning of --weights (training/qat.py)

    def __post_init__(self) -> None:
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
        if self.threads != "auto" and not (isinstance(self.threads, int) and self.threads >= 1):
            raise UsageError(f"--threads must be auto or a positive number, got {self.threads!r}")
        if self.qat and not (self.weights or self.resume):
            raise UsageError("--qat fine-tunes a trained model for INT8: give its checkpoint with --weights "
                             "(for example --qat --weights ssd.pt --epochs 2 --lr 5e-5)")
        if self.qat and self.pretrained_backbone:
            raise UsageError("--qat fine-tunes the whole trained model given with --weights; "
                             "--pretrained-backbone does not apply")


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


def build_for_training(config: TrainConfig, class_names: tuple[str, ...], info: DistInfo) -> SSD:
    options = {}
    if config.pretrained_backbone and config.arch != "vgg16_ssd":
        options["reduced_tail"] = False  # ImageNet MobileNetV3 weights have the full tail (as torchvision)
    model = build_model(config.arch, class_names, config.imgsz, **options)
    if config.foreground_prior:
        model.init_classification_prior(config.foreground_prior)
    if config.pretrained_backbone:
        load_torchvision_backbone(model, read_weights_file(config.pretrained_backbone))
        log(info, f"backbone: ImageNet weights from {config.pretrained_backbone}")
    if config.weights:
        log(info, load_weights(model, config.weights, config.arch).describe(config.weights))
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
    saved: tuple[str, int] | None = None  # the last complete checkpoint of this run: (path, epochs in it)
    qat: dict | None = None  # a QAT run's QatRecord (as a dict), kept in its checkpoints under QAT_KEY


def train_step(run: Run, criterion: MultiBoxLoss, batch, where: str) -> tuple[float, float]:
    """One optimiser step on (images, target_locs, target_labels); returns (loss, train_acc)."""
    x, target_locs, target_labels = (t.to(run.device, non_blocking=True) for t in batch)
    with torch.autocast(run.device.type, enabled=run.scaler is not None):
        locs, logits = run.net(x)
        loss, acc = criterion(locs, logits, target_locs, target_labels)
    if not torch.isfinite(loss):
        raise TrainingError(
            f"the loss became {loss.item()} at {where}; training stopped. "
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
    return loss.item(), acc.item()


def train_one_epoch(run: Run, epoch: int, criterion: MultiBoxLoss, stop: StopRequest) -> dict[str, float]:
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
    bar = tqdm(total=len(run.loader), desc=f"epoch {epoch + 1}/{run.config.epochs}", unit="batch",
               disable=not (run.config.progress and run.info.is_main), dynamic_ncols=True)
    batches = iter(run.loader)  # held here alone, so that leaving the loop shuts the workers down at once
    try:
        for batch_index, (x, target_locs, target_labels, batch_skipped) in enumerate(batches):
            stop.check()
            bar.update()
            skipped += batch_skipped
            if x is None:
                continue
            loss, acc = train_step(run, criterion, (x, target_locs, target_labels),
                                   f"epoch {epoch + 1}, batch {batch_index + 1}")
            loss_sum, acc_sum, steps, images = loss_sum + loss, acc_sum + acc, steps + 1, images + len(x)
            rate = images * run.info.world_size / (time.perf_counter() - began)
            bar.set_postfix(loss=f"{loss_sum / steps:.3f}", train_acc=f"{acc_sum / steps:.3f}", img_s=f"{rate:.1f}")
            stop.check()
    finally:
        del batches
        bar.close()
    loss_sum, acc_sum, steps, images, skipped = all_reduce_sum(run.info, [loss_sum, acc_sum, steps, images, skipped])
    if not images:
        raise TrainingError(f"no readable training images: all {int(skipped)} images of epoch {epoch + 1} were "
                            f"skipped (missing or unreadable); nothing was saved. `ssd-dataset check "
                            f"{run.config.datapath}` lists them")
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
    """Write the last checkpoint, the best one, and this run's metrics and curves (rank 0)."""
    files = RunFiles(Path(run.config.save))
    state = {
        "epoch": epoch + 1,
        "metrics": row,
        "history": run.history,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng_state(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,  # --amp's loss scale
        "best_ap50": run.best_ap50,
        # every setting, None too: --resume continues this run (with the threads it ran on: their
        # number changes float rounding, so an exact continuation needs the same)
        "config": {**asdict(run.config), "threads": torch.get_num_threads()},
        "batches_per_epoch": len(run.loader),
    }
    if run.qat is not None:
        state[QAT_KEY] = run.qat
    save_checkpoint(files.save, run.model, **state)
    run.saved = (run.config.save, epoch + 1)
    if row.get("AP50") is not None and row["AP50"] >= run.best_ap50:
        save_checkpoint(files.best, run.model, **state)
    with writing(files.metrics, files.save):
        write_metrics_csv(files.metrics, run.history)
    with writing(files.curves, files.save):
        plot_curves(files.curves, run.history)


def training_split(config: TrainConfig, splits: dict[str, Split]) -> Split:
    """The split to train on; a dataset without one readable image is refused here, before
    any work, instead of "training" on nothing and saving an untrained model."""
    split = splits.get("train") or splits["val"]
    if not split.records:
        raise TrainingError(f"no readable training images: {split.annotation_file} lists no images")
    if not has_readable_image(split.records):
        raise TrainingError(f"no readable training images: none of the {len(split.records)} images that "
                            f"{split.annotation_file} lists can be read (missing or corrupt); "
                            f"`ssd-dataset check {config.datapath}` lists them")
    return split


def make_loader(config: TrainConfig, dataset: DetectionDataset, info: DistInfo, device: torch.device) -> DataLoader:
    """Shuffled batches, the same on any number of workers; any dataset and batch size
    trains (see small_batches: a last batch of one image is dropped)."""
    sampler = (DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=config.seed)
               if info.enabled else None)
    per_process = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                      num_workers=config.workers, collate_fn=collate,
                      drop_last=drop_last_batch(per_process, config.batch_size),
                      generator=torch.Generator().manual_seed(config.seed) if sampler is None else None,
                      pin_memory=device.type == "cuda", worker_init_fn=ignore_sigint_in_worker)


def setup(config: TrainConfig, info: DistInfo, device: torch.device) -> Run:
    splits = load_splits(config.datapath)
    log(info, describe(config.datapath, splits))
    train_split = training_split(config, splits)
    val = splits.get("val")
    if val is not None and not val.records:
        log(info, f"{val.annotation_file} lists no images: training goes on without validation")
        val = None
    resume = load_checkpoint(config.resume) if config.resume else None
    if resume is not None:
        check_resumable(resume, config.resume, config.optimizer)
        check_same_run(config, resume, config.resume)
        model = model_from_checkpoint(resume, config.resume)
        run_threads = (resume.get("config") or {}).get("threads")
        if config.threads == "auto" and isinstance(run_threads, int) and run_threads != torch.get_num_threads():
            torch.set_num_threads(run_threads)  # the same float rounding as the run so far: an exact continuation
            log(info, f"threads: {run_threads}, the run's own (--threads to choose another number)")
        if tuple(model.spec.class_names) != train_split.class_names:
            raise TrainingError(f"{config.resume}: trained for classes {model.spec.class_names[1:]}, "
                                f"but {config.datapath} has {train_split.class_names[1:]}")
        qat = resume.get(QAT_KEY)
    else:
        model = build_for_training(config, train_split.class_names, info)
        qat = quantization_aware(config, model, train_split, info)
    model.to(device)
    spec = model.spec
    log(info, f"model: {spec.arch}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
              f"input {spec.input_size[0]}x{spec.input_size[1]}, {spec.num_priors} default boxes, "
              f"{spec.num_classes - 1} classes; device {device}, {info.world_size} process(es)")

    encode = target_encoder(model.priors_cxcywh.cpu().numpy(), config.matcher, spec.variances)
    dataset = DetectionDataset(train_split.records, TrainAugment(spec.input_size), encode, config.seed)
    loader = make_loader(config, dataset, info, device)
    if resume is not None:
        check_batches_per_epoch(resume, config.resume, len(loader), config.datapath)
    device_ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=device_ids) if info.enabled else model
    optimizer = make_optimizer(config, model)
    total = config.epochs * len(loader)
    warmup = min(total // 2, max(1, round(config.warmup_epochs * len(loader))))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
    if config.amp and device.type != "cuda":
        raise UsageError("--amp needs a CUDA device (mixed precision on CPU is not supported here)")
    scaler = torch.amp.GradScaler("cuda") if config.amp else None
    run = Run(config, info, device, model, net, loader, optimizer, scheduler, scaler, val, history=[], qat=qat)
    if resume is not None:
        run.start_epoch = restore(resume, config.resume, optimizer, scheduler)
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])  # the loss scale the run had reached, not the initial one
        run.best_ap50 = float(resume.get("best_ap50", -1.0))
        run.history = list(resume.get("history") or [])
        run.saved = (config.resume, run.start_epoch)
        log(info, f"resumed from {config.resume} after epoch {run.start_epoch}")
    return run


def quantization_aware(config: TrainConfig, model: SSD, split: Split, info: DistInfo) -> dict | None:
    """With --qat: fake quantization put into `model` (training/qat.py), its input ranges
    calibrated on the first training images; the record its checkpoints keep. Else None."""
    if not config.qat:
        return None
    record = start_qat(model, (r.path for r in split.records))
    log(info, f"qat: {len(record.layers)} convolutions fake-quantized to int8 as the tensorrt flavour does "
              f"(stem {record.stem} float), input ranges from {record.calibration} calibration on "
              f"{record.calibration_images} training images")
    return record.to_dict()


def prepare_outputs(config: TrainConfig, info: DistInfo) -> None:
    """Fail now, not after the first epoch, when --save cannot be written; clear this run's
    own leftovers of interrupted saves."""
    if info.is_main:
        removed = RunFiles(Path(config.save)).prepare()
        if removed:
            log(info, f"removed {len(removed)} unfinished file(s) an interrupted save left: "
                      f"{', '.join(p.name for p in removed)}")


def interrupted_message(config: TrainConfig, run: Run | None, epoch: int | None,
                        signum: int | None = None) -> str:
    """What is kept and how to resume; `signum` names a stop signal other than Ctrl-C's."""
    message = interrupted_state(config, run, epoch)
    if signum is not None and signum != signal.SIGINT:
        message = message.replace("interrupted", f"interrupted by {signal.Signals(signum).name}", 1)
    return message


def interrupted_state(config: TrainConfig, run: Run | None, epoch: int | None) -> str:
    if run is None or epoch is None:
        return "interrupted before training started; nothing was written"
    if run.saved is None:
        return (f"interrupted in epoch {epoch + 1}/{config.epochs}, before the first checkpoint: nothing was saved; "
                "run the command again to start over")
    path, epochs = run.saved
    where = f"after epoch {epochs}/{config.epochs}" if epochs == epoch + 1 else f"in epoch {epoch + 1}/{config.epochs}"
    if epochs >= config.epochs:
        return f"interrupted {where}: {path} holds the finished run"
    return (f"interrupted {where}: {path} holds epoch {epochs}, complete and intact; to continue, run the same "
            f"command with --resume {path}")


def train(config: TrainConfig) -> list[dict]:
    """Train as `config` says; returns the per-epoch history (loss, train_acc, AP, AP50...).

    Ctrl-C or SIGTERM stops at the next safe point (between steps, never inside a checkpoint
    write) with a TrainingInterrupted that says what is saved and how to resume."""
    info = init_distributed(device_type(config.device))
    stop, run, epoch = StopRequest(), None, None
    threads_before = torch.get_num_threads()
    try:
        with stop.installed(enabled=not info.enabled):  # torchrun stops its own workers
            device = pick_device(config.device, info)
            use_threads(config, info)
            seed_everything(config.seed + info.rank)
            prepare_outputs(config, info)
            run = setup(config, info, device)
            if run.start_epoch >= config.epochs:
                log(info, f"nothing to do: {config.resume} already finished {run.start_epoch} "
                          f"of {config.epochs} epochs")
            criterion = MultiBoxLoss()
            began = time.perf_counter()
            with running_stats_for_single_values(run.model):
                for epoch in range(run.start_epoch, config.epochs):
                    with stop.deferred():
                        stop.check()
                        row = train_one_epoch(run, epoch, criterion, stop)
                    row.update(validate(run))  # Ctrl-C stops it at once: nothing to protect there
                    row["elapsed"] = time.perf_counter() - began  # wall clock since this process started training
                    with stop.deferred():
                        if info.is_main:
                            run.best_ap50 = max(run.best_ap50, row.get("AP50", -1.0))
                            run.history.append(row)
                            save_state(run, epoch, row)
                            log(info, summary_line(row, config.epochs))
                        barrier(info)
                    stop.check()
        if info.is_main and epoch is not None:  # an epoch was trained and saved (not "nothing to do")
            best = f", best mAP@0.5 {run.best_ap50:.3f}" if run.best_ap50 >= 0 else ""
            log(info, f"saved {config.save}{best}; curves in {RunFiles(Path(config.save)).curves}")
        return run.history
    except KeyboardInterrupt:
        raise TrainingInterrupted(interrupted_message(config, run, epoch, stop.signal), stop.signal) from None
    finally:
        torch.set_num_threads(threads_before)
        shutdown(info)


def use_threads(config: TrainConfig, info: DistInfo) -> None:
    """Set torch's CPU threads as --threads says (see training/threads.py) and say how many
    and why, with OpenMP's wait policy (once: auto's reason already names it)."""
    threads, why = choose_threads(config.threads)
    torch.set_num_threads(threads)
    line = f"threads: {threads} ({why})"
    if not why.startswith(f"{AUTO}:"):  # --threads N or OMP_NUM_THREADS: the reason does not say how OpenMP waits
        policy = os.environ.get(WAIT_POLICY, "OpenMP's default (spinning)")
        line += f"; OpenMP waiting: {policy}"
    log(info, line)


def summary_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['loss']:.4f}", f"train_acc {row['train_acc']:.3f}"]
    if "AP50" in row:
        parts += [f"mAP@0.5 {row['AP50']:.3f}", f"mAP@0.5:0.95 {row['AP']:.3f}"]
    parts += [f"lr {row['lr']:.2e}", f"{row['images_per_s']:.1f} img/s", f"skipped {row['skipped']}",
              f"{row['seconds']:.0f} s"]
    return "  ".join(parts)
