"""ssd-bench's `--plot`: the latency distribution of every model and peer (matplotlib, headless),
one panel per batch size, so a reader sees the tails and not only the means."""

from __future__ import annotations

import os
from pathlib import Path

from ssd_edge.bench.report import display_name
from ssd_edge.common.atomic import atomic_path

QUANTILES = (0.5, 0.9, 0.99)


def plot_latencies(report: dict, path: str | os.PathLike) -> None:
    """Violins of per-call latency (ms, log scale) with p50 / p90 / p99 marked, per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    batches = report["settings"]["batches"]
    fig, axes = plt.subplots(len(batches), 1, figsize=(10, 1.2 + 0.7 * _subjects(report) * len(batches)),
                             squeeze=False)
    for ax, batch in zip(axes[:, 0], batches):
        rows = [r for r in report["results"] if r["batch"] == batch]
        data = [r["latencies_ms"] for r in rows]
        ax.violinplot(data, showextrema=True, quantiles=[list(QUANTILES)] * len(data), **_horizontal(matplotlib))
        ax.set_yticks(range(1, len(rows) + 1), [f"{display_name(r)} ({r['format']})" for r in rows], fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("latency per call, ms (log scale; ticks inside: p50, p90, p99)")
        ax.set_title(f"batch {batch}", fontsize=10)
        ax.grid(alpha=0.3, axis="x", which="both")
    machine = report["machine"]
    fig.suptitle(f"ssd-bench on {machine['cpu']}, threads: {report['settings']['threads']}", fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _horizontal(matplotlib) -> dict:
    """violinplot's argument for horizontal violins (`orientation` from matplotlib 3.10, `vert` before)."""
    major, minor = (int(part) for part in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _subjects(report: dict) -> int:
    return len({r["name"] for r in report["results"]})
