"""It must learn: the seed's own command (`train_ssd.py --arch mobilenetv3_ssd --epochs 10
--batch-size 5 --lr 0.001`, every other setting at its default) on the built-in sample data on
this CPU: validation mAP@0.5 (pycocotools) per epoch against wall-clock time, the learning
curve beside a run with the previous defaults, then training throughput against
torchvision's own ssdlite320_mobilenet_v3_large training step.

    python -m benchmarks.train_sample --out benchmarks/results/train_sample.md
    # or report a run of the seed command made elsewhere (its checkpoint holds the history):
    python -m benchmarks.train_sample --history runs/sample/ssd.pt --previous old/metrics.csv

What is timed: the whole training process (data loading, augmentation, matching, forward,
backward, step, per-epoch validation) by wall clock; the throughput comparison times the
training step alone (forward + loss + backward + step) on identical batches of the same
images, after warm-up, for ours and torchvision's model in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ssd_edge.bench.machine import describe, markdown
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.data.sources import load_splits
from ssd_edge.data.synth import write_synthetic_dataset
from ssd_edge.training.train import TrainConfig, train


def step_throughput(batch_size: int, imgsz: int, steps: int, warmup: int) -> dict[str, list[float]]:
    """Images/s of one training step, ours vs torchvision's, same images, same threads."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from ssd_edge.models import build_model
    from ssd_edge.training.loss import MultiBoxLoss
    from ssd_edge.training.matching import match

    torch.manual_seed(0)
    ours = build_model("mobilenetv3_ssd", 4, imgsz).train()
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4).train()
    images = torch.rand(batch_size, 3, imgsz, imgsz)
    boxes = torch.tensor([[20.0, 30.0, 120.0, 150.0], [150.0, 100.0, 300.0, 260.0]]) * imgsz / 320
    labels = torch.tensor([1, 2])
    priors = ours.priors_cxcywh.numpy()
    criterion = MultiBoxLoss()
    targets_tv = [{"boxes": boxes, "labels": labels} for _ in range(batch_size)]
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)

    def step_ours():
        # Matching is part of our step here (it normally runs in the data workers).
        matched = [match(boxes.numpy() / imgsz, labels.numpy(), priors) for _ in range(batch_size)]
        target_locs = torch.from_numpy(np.stack([m[0] for m in matched]))
        target_labels = torch.from_numpy(np.stack([m[1] for m in matched]))
        locs, confs = ours(images)
        loss, _ = criterion(locs, confs, target_locs, target_labels)
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()

    def step_theirs():
        losses = theirs(list(images), targets_tv)
        loss = sum(losses.values())
        opt_theirs.zero_grad()
        loss.backward()
        opt_theirs.step()

    rates: dict[str, list[float]] = {"ssd-edge": [], "torchvision": []}
    for i in range(warmup + steps):  # interleaved, so both see the same machine state
        for name, step in (("ssd-edge", step_ours), ("torchvision", step_theirs)):
            began = time.perf_counter()
            step()
            if i >= warmup:
                rates[name].append(batch_size / (time.perf_counter() - began))
    return rates


def read_metrics_csv(path: str) -> list[dict]:
    """Rows of a metrics.csv that training wrote (numbers as floats, epoch as int)."""
    lines = Path(path).read_text().strip().splitlines()
    names = lines[0].split(",")
    rows = []
    for line in lines[1:]:
        row = {k: float(v) for k, v in zip(names, line.split(",")) if v != ""}
        row["epoch"] = int(row["epoch"])
        rows.append(row)
    return rows


def plot_beside(path: str, history: list[dict], previous: list[dict] | None) -> None:
    """Validation mAP@0.5 and training loss per epoch, this run and (dashed) the previous defaults'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssd_edge.common.atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    runs = [("current defaults", history, "-", "tab:blue")]
    runs += [("previous defaults", previous, "--", "tab:grey")] if previous else []
    for label, rows, style, colour in runs:
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r.get("AP50", 0.0) for r in rows], style, color="tab:blue", marker="o",
                     label=f"mAP@0.5, {label}")
        axes[0].plot(epochs, [r.get("AP", 0.0) for r in rows], style, color="tab:orange", marker=".",
                     label=f"mAP@0.5:0.95, {label}")
        axes[1].plot(epochs, [r["loss"] for r in rows], style, color=colour, marker="o", label=label)
    axes[0].axhline(0.5, color="grey", lw=0.8)
    axes[0].set_title("validation (pycocotools)")
    axes[1].set_title("training loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("train_ssd.py --epochs 10 --batch-size 5 --lr 0.001, sample data, CPU", fontsize=9)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="dataset_coco", help="sample data (written here if missing)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--save", default="runs/train_sample/ssd.pt")
    p.add_argument("--history", metavar="CHECKPOINT", help="report this finished run instead of training")
    p.add_argument("--previous", metavar="METRICS_CSV",
                   help="metrics.csv of the same command with the previous defaults")
    p.add_argument("--note", default="", help="a sentence on how the run was made (load, threads)")
    p.add_argument("--throughput-steps", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/train_sample.md")
    args = p.parse_args()

    if not Path(args.data).is_dir():
        write_synthetic_dataset(args.data, train=400, val=100, seed=0, progress=True)
    splits = load_splits(args.data)
    if args.history:
        from ssd_edge.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.history)
        history = list(checkpoint["history"])
        config = checkpoint.get("config", {})
    else:
        config_obj = TrainConfig(datapath=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 save=args.save)
        history = train(config_obj)
        config = asdict(config_obj)
    previous = read_metrics_csv(args.previous) if args.previous else None
    final = history[-1]

    batch = int(config.get("batch_size", args.batch_size))
    rates = step_throughput(batch, 320, args.throughput_steps, warmup=2) if args.throughput_steps else {}
    med = {name: statistics.median(values) for name, values in rates.items()}

    settings = ", ".join(f"{k} {config[k]}" for k in ("optimizer", "lr", "weight_decay", "warmup_epochs",
                                                       "foreground_prior", "matcher") if k in config)
    lines = [
        "# It must learn: the seed's command on the sample data, CPU",
        "",
        markdown(describe("torch", "torchvision", "pycocotools")),
        "",
        f"Command: `python train_ssd.py --arch mobilenetv3_ssd --datapath dataset_coco --epochs {len(history)} "
        f"--batch-size {batch} --lr {config.get('lr', args.lr)} --save ssd.pt` (the seed's, verbatim); "
        f"settings in effect: {settings}.",
        "",
        f"Data: {', '.join(s.summary() for s in splits.values())} "
        "(`ssd-dataset synth --train 400 --val 100 --seed 0`).",
        "From scratch: no pretrained weights of any kind.",
    ]
    if args.note:
        lines += ["", args.note]
    lines += [
        "",
        f"**After its {len(history)} epochs: mAP@0.5 {final.get('AP50', 0):.3f}, "
        f"mAP@0.5:0.95 {final.get('AP', 0):.3f}** (goal: mAP@0.5 >= 0.5).",
        "",
        "| epoch | wall clock (min) | loss | train_acc | mAP@0.5 | mAP@0.5:0.95 | train img/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        lines.append(f"| {row['epoch']} | {row['elapsed'] / 60:.1f} | {row['loss']:.3f} | {row['train_acc']:.3f} | "
                     f"{row.get('AP50', 0):.3f} | {row.get('AP', 0):.3f} | {row['images_per_s']:.1f} |")
    if previous:
        lines += [
            "",
            "## The same command with the previous defaults (SGD with Nesterov momentum, zero classification biases)",
            "",
            f"From `make sample` on a CI machine (2 cores); `{Path(args.previous).name}` as training wrote it.",
            "",
            "| epoch | loss | train_acc | mAP@0.5 | mAP@0.5:0.95 | train img/s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in previous:
            lines.append(f"| {row['epoch']} | {row['loss']:.3f} | {row['train_acc']:.3f} | {row.get('AP50', 0):.3f} | "
                         f"{row.get('AP', 0):.3f} | {row['images_per_s']:.1f} |")
    png = Path(args.out).with_suffix(".png")
    lines += ["", f"Learning curves: `{png.name}` (solid: these defaults; dashed: the previous ones)."]
    if rates:
        lines += [
            "",
            f"## Training step throughput vs torchvision (batch {batch}, 320x320, "
            f"{args.throughput_steps} steps after 2 warm-up, interleaved)",
            "",
            "| model | median img/s | min | max |",
            "|---|---:|---:|---:|",
        ]
        for name, values in rates.items():
            lines.append(f"| {name} | {med[name]:.2f} | {min(values):.2f} | {max(values):.2f} |")
        lines += ["", f"ssd-edge / torchvision: {med['ssd-edge'] / med['torchvision']:.2f}x (goal: >= 1.0). "
                  "Ours includes the Hungarian matching that normally runs in the data workers."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot_beside(str(png), history, previous)
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
