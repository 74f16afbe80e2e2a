"""Training side by side: ssd-edge's mobilenetv3_ssd with its defaults against torchvision's
own SSDLite320 training (its model, its loss and matcher, its reference optimizer settings),
on the same images, the same CPU-time budget and the same evaluation.

    python -m benchmarks.bench_train_vs_torchvision --data dataset_coco --budget-min 15 \
        --out benchmarks/results/train_vs_torchvision.md

What is compared:
- ssd-edge: `build_model("mobilenetv3_ssd")` with the training defaults of `TrainConfig`
  (AdamW at lr 1e-3 peak, classification bias prior 0.01, Hungarian matching, MultiBoxLoss
  with 3:1 hard negatives).
- torchvision: `ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
  num_classes=...)` trained through its own forward (its SSDMatcher, its loss), with the
  optimizer of torchvision's detection reference recipe for this model (SGD, momentum 0.9,
  weight decay 4e-5, lr 0.15 for 8 x 24 images per step), the lr scaled linearly to the
  batch used here.
Both from scratch, both on the same augmented samples (the project's TrainAugment with the
same per-(epoch, image) random streams, so the same crops, flips and colours, resized to
320x320), in the same order, with the same batch size. Each learning-rate schedule is a
linear warm-up over the first 10% of the budget, then cosine decay to 0, keyed to the
CPU time that trainer has used (so it ends exactly when its budget does).

The two train in turn, one step each, so that both see the same load on the machine.
What is timed: process CPU time (`time.process_time`, all threads of this process) of
everything a training step needs: reading and augmenting the images, ssd-edge's matching
(which normally runs in the data workers; it is counted here), forward, loss, backward,
optimizer step. Data loading runs in this process (no workers) so that nothing escapes the
clock. The budget is CPU time, not wall time, because the machine may be shared.
Evaluation (not counted in the budget): pycocotools bbox AP on the whole val split, each
model through the same `evaluate()` with its own postprocessing at its own defaults.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssd_edge.bench.machine import describe, markdown
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.data.sources import Split, load_splits
from ssd_edge.data.synth import write_synthetic_dataset
from ssd_edge.data.transforms import TrainAugment
from ssd_edge.evaluation.coco import evaluate
from ssd_edge.evaluation.predictor import TorchPredictor
from ssd_edge.models import build_model
from ssd_edge.runtime.detections import Detections
from ssd_edge.training.loss import MultiBoxLoss
from ssd_edge.training.matching import match
from ssd_edge.training.train import TrainConfig, make_optimizer, warmup_cosine

INPUT = (320, 320)
# torchvision references/detection README, ssdlite320_mobilenet_v3_large: 8 GPUs x 24 images, lr 0.15.
TV_REFERENCE_LR, TV_REFERENCE_BATCH, TV_WEIGHT_DECAY, TV_MOMENTUM = 0.15, 8 * 24, 4e-5, 0.9


@dataclass
class Outcome:
    name: str
    steps: int = 0
    images: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def samples(split: Split, seed: int, batch_size: int):
    """Endless batches of augmented training samples: lists of (chw float32 RGB [0, 1] at 320x320,
    boxes (N, 4) xyxy normalised, labels (N,)). Epoch e visits the images in a permutation seeded
    by (seed, e); image i of epoch e is augmented with the stream (seed, e, i), as the training
    dataset does."""
    augment = TrainAugment(INPUT)
    records = split.records
    epoch = 0
    while True:
        order = np.random.default_rng((seed, epoch)).permutation(len(records))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = []
            for index in order[start:start + batch_size]:
                image = records[index].read_image()
                boxes, labels = records[index].boxes, records[index].labels
                batch.append(augment(image, boxes, labels, np.random.default_rng((seed, epoch, int(index)))))
            yield batch
        epoch += 1


class Ours:
    name = "ssd-edge mobilenetv3_ssd (defaults)"

    def __init__(self, class_names: tuple[str, ...], batch_size: int) -> None:
        config = TrainConfig(datapath="", batch_size=batch_size)
        self.model = build_model("mobilenetv3_ssd", class_names, INPUT)
        self.model.init_classification_prior(config.foreground_prior)
        self.model.train()
        self.optimizer = make_optimizer(config, self.model)
        self.criterion = MultiBoxLoss()
        self.priors = self.model.priors_cxcywh.numpy()
        self.variances = self.model.spec.variances

    def step(self, batch) -> float:
        matched = [match(boxes, labels, self.priors, variances=self.variances) for _, boxes, labels in batch]
        images = torch.from_numpy(np.stack([chw for chw, _, _ in batch]))
        target_locs = torch.from_numpy(np.stack([m[0] for m in matched]))
        target_labels = torch.from_numpy(np.stack([m[1] for m in matched]))
        loss, _ = self.criterion(*self.model(images), target_locs, target_labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def predictor(self):
        return TorchPredictor(self.model)


class Torchvision:
    name = "torchvision ssdlite320_mobilenet_v3_large (its loss, matcher, reference SGD)"

    def __init__(self, class_names: tuple[str, ...], batch_size: int) -> None:
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        self.model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(class_names))
        self.model.train()
        self.lr = theirs_lr(batch_size)
        decay = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(decay, lr=self.lr, momentum=TV_MOMENTUM, weight_decay=TV_WEIGHT_DECAY)

    def step(self, batch) -> float:
        images = [torch.from_numpy(chw) for chw, _, _ in batch]
        scale = torch.tensor([INPUT[1], INPUT[0], INPUT[1], INPUT[0]], dtype=torch.float32)
        targets = [{"boxes": torch.from_numpy(boxes).float() * scale, "labels": torch.from_numpy(labels).long()}
                   for _, boxes, labels in batch]
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def predictor(self):
        model = self.model

        @torch.no_grad()
        def predict(images_bgr):
            model.eval()
            tensors = [torch.from_numpy(np.ascontiguousarray(im[..., ::-1])).permute(2, 0, 1).float() / 255
                       for im in images_bgr]
            out = model(tensors)
            return [Detections(o["boxes"].numpy(), o["labels"].numpy(), o["scores"].numpy(),
                               np.zeros((len(o["scores"]), 0), np.float32)) for o in out]

        return predict


def train_side_by_side(trainers, make_batches, budget_s: float, log_every: int) -> list[Outcome]:
    """Step the trainers in turn (one step each, so both see the same machine load) until each
    has used `budget_s` of process CPU time in its own steps (its data included); each lr
    follows warm-up + cosine of the CPU time that trainer has used (per mille)."""
    factor = warmup_cosine(100, 1000)
    states = []
    for trainer in trainers:
        base = [group["lr"] for group in trainer.optimizer.param_groups]
        states.append((trainer, Outcome(trainer.name), make_batches(), base))
    while any(outcome.cpu_s < budget_s for _, outcome, _, _ in states):
        for trainer, outcome, batches, base in states:
            if outcome.cpu_s >= budget_s:
                continue
            scale = factor(int(1000 * outcome.cpu_s / budget_s))
            for group, lr in zip(trainer.optimizer.param_groups, base):
                group["lr"] = lr * scale
            cpu0, wall0 = time.process_time(), time.perf_counter()
            batch = next(batches)
            outcome.losses.append(trainer.step(batch))
            outcome.cpu_s += time.process_time() - cpu0
            outcome.wall_s += time.perf_counter() - wall0
            outcome.steps += 1
            outcome.images += len(batch)
            if log_every and outcome.steps % log_every == 0:
                print(f"{trainer.name}: step {outcome.steps}, CPU {outcome.cpu_s:.0f}/{budget_s:.0f} s, "
                      f"loss {np.mean(outcome.losses[-log_every:]):.3f}", flush=True)
    return [outcome for _, outcome, _, _ in states]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="dataset_coco", help="sample data (written here if missing)")
    p.add_argument("--budget-min", type=float, default=15.0, help="process CPU minutes per trainer")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/train_vs_torchvision.md")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    if not Path(args.data).is_dir():
        write_synthetic_dataset(args.data, train=400, val=100, seed=0, progress=True)
    splits = load_splits(args.data)
    train_split, val = splits["train"], splits["val"]
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    torch.manual_seed(args.seed)
    trainers = [Ours(train_split.class_names, args.batch_size), Torchvision(train_split.class_names, args.batch_size)]
    outcomes = train_side_by_side(trainers, lambda: samples(train_split, args.seed, args.batch_size),
                                  args.budget_min * 60, args.log_every)
    for trainer, outcome in zip(trainers, outcomes):
        outcome.metrics = evaluate(trainer.predictor(), val, progress=False).metrics
        print(f"{outcome.name}: {outcome.steps} steps, mAP@0.5 {outcome.metrics['AP50']:.3f}, "
              f"mAP@0.5:0.95 {outcome.metrics['AP']:.3f}", flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []

    ours, theirs = outcomes
    per_cpu = {o.name: o.images / o.cpu_s for o in outcomes}
    lines = [
        "# Training side by side: ssd-edge vs torchvision's SSDLite320 loop, same CPU time",
        "",
        markdown(describe("torch", "torchvision", "pycocotools")),
        f"- 1/5/15-minute load average before: {' '.join(load_before)}, "
        f"after: {' '.join(load_after)} (the machine is shared: wall-clock numbers are noisy, CPU time is the budget)",
        "",
        f"Command: `python -m benchmarks.bench_train_vs_torchvision --data {args.data} "
        f"--budget-min {args.budget_min:g} --batch-size {args.batch_size} --threads {args.threads}`",
        "",
        f"Data: {', '.join(s.summary() for s in splits.values())}; from scratch, no pretrained weights. "
        f"Budget: {args.budget_min:g} CPU-minutes of training per trainer (process CPU time, all threads; "
        "data reading, augmentation and matching included), batch "
        f"{args.batch_size}, the same augmented images in the same order. torchvision: SGD momentum "
        f"{TV_MOMENTUM}, weight decay {TV_WEIGHT_DECAY:g}, lr {theirs_lr(args.batch_size):.4f} "
        f"(its reference {TV_REFERENCE_LR} for {TV_REFERENCE_BATCH} images per step, scaled to {args.batch_size}). "
        "ssd-edge: its TrainConfig defaults (AdamW, lr 1e-3, foreground prior 0.01). Both: warm-up over the "
        "first 10% of the budget, cosine to 0. Evaluation: pycocotools bbox on all val images.",
        "",
        "| trainer | steps | images | CPU s | train images / CPU-s | train images / wall-s | final loss (last 20) "
        "| mAP@0.5 | mAP@0.5:0.95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(f"| {o.name} | {o.steps} | {o.images} | {o.cpu_s:.0f} | {per_cpu[o.name]:.2f} | "
                     f"{o.images / o.wall_s:.2f} | {np.mean(o.losses[-20:]):.3f} | {o.metrics['AP50']:.3f} | "
                     f"{o.metrics['AP']:.3f} |")
    lines += [
        "",
        f"ssd-edge vs torchvision: mAP@0.5 {ours.metrics['AP50']:.3f} vs {theirs.metrics['AP50']:.3f}, "
        f"mAP@0.5:0.95 {ours.metrics['AP']:.3f} vs {theirs.metrics['AP']:.3f}, training images per CPU-second "
        f"{per_cpu[ours.name] / per_cpu[theirs.name]:.2f}x (goal: higher on both mAPs, >= 1.0x). "
        "The losses are each trainer's own and not comparable with each other.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


def theirs_lr(batch_size: int) -> float:
    return TV_REFERENCE_LR * batch_size / TV_REFERENCE_BATCH


if __name__ == "__main__":
    main()
