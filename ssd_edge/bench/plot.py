"""ssd-bench's `--plot`: the latency distribution of every model and peer (matplotlib, headless),
one panel per batch size, so a reader sees the tails and not only the means."""

from __future__ import annotations

import math
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
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(_tick_label))
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda value, _, ax=ax: _minor_label(ax, value)))
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


def _tick_label(value: float, _position=None) -> str:
    """'0.5', '20', '1000': plain numbers, no powers of ten."""
    return f"{value:g}" if value < 1e5 else f"{value:.0f}"


def _minor_label(ax, value: float) -> str:
    """A minor tick's label on a log axis: every one where the axis spans less than a
    decade, only the 2s and 5s up to two decades, none beyond (their labels would run
    together, as '5006007008009' did)."""
    low, high = sorted(ax.get_xlim())
    decades = math.log10(high / low) if low > 0 else math.inf
    if decades > 2:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 6)
    return _tick_label(value) if decades < 1 or leading in (2.0, 5.0) else ""


def _horizontal(matplotlib) -> dict:
    """violinplot's argument for horizontal violins (`orientation` from matplotlib 3.10, `vert` before)."""
    major, minor = (int(part) for part in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _subjects(report: dict) -> int:
    return len({r["name"] for r in report["results"]})
