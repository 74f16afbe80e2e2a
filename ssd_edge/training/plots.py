"""Training curves as a picture (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ssd_edge.common.atomic import atomic_path, write_text_atomic

FIELDS = ("epoch", "loss", "train_acc", "lr", "AP", "AP50", "images_per_s", "skipped", "seconds", "elapsed")


def write_metrics_csv(path: str | os.PathLike, history: Sequence[dict]) -> None:
    lines = [",".join(FIELDS)]
    for row in history:
        cells = ("" if row.get(k) is None else f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])
                 for k in FIELDS)
        lines.append(",".join(cells))
    write_text_atomic(path, "\n".join(lines) + "\n")


def plot_curves(path: str | os.PathLike, history: Sequence[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [row["loss"] for row in history], marker="o")
    axes[0].set_title("training loss")
    axes[1].plot(epochs, [row["train_acc"] for row in history], marker="o", color="tab:green")
    axes[1].set_title("train_acc (positives + mined negatives)")
    evaluated = [row for row in history if row.get("AP50") is not None]
    if evaluated:
        axes[2].plot([r["epoch"] for r in evaluated], [r["AP50"] for r in evaluated], marker="o", label="mAP@0.5")
        axes[2].plot([r["epoch"] for r in evaluated], [r["AP"] for r in evaluated], marker="o", label="mAP@0.5:0.95")
        axes[2].legend()
    axes[2].set_title("validation (pycocotools)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
