"""ssd-eval's results as tables: the terminal's, markdown (as ssd-bench writes it: a pipe
table a README or an issue shows) and CSV (one row per model and class, 'all' first)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
CSV_COLUMNS = ("model", "format", "backend", "class", *METRICS, "size_mb", "ms_per_image", "images")


def render_table(rows: Sequence[dict]) -> str:
    """One line per model (name, format, backend and precision, size, the six COCO metrics,
    ms/image), then the AP and AP50 of each class."""
    backend_width = max([len("backend"), *(len(r.get("backend", "")) for r in rows)])
    columns = " ".join(f"{m:>6}" for m in METRICS)
    header = f"{'model':<28} {'format':<10} {'backend':<{backend_width}} {'size MB':>8} {columns} {'ms/image':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        values = " ".join(f"{r[m]:>6.3f}" for m in METRICS)
        lines.append(f"{Path(r['model']).name:<28} {r['format']:<10} {r.get('backend', ''):<{backend_width}} "
                     f"{r['size_mb']:>8.2f} {values} {r['ms_per_image']:>9.2f}")
    for r in rows:
        if r.get("per_class"):
            classes = ", ".join(f"{name} {v['AP']:.3f} / {v['AP50']:.3f}" for name, v in r["per_class"].items())
            lines.append(f"per class AP / AP50, {Path(r['model']).name}: {classes}")
    return "\n".join(lines)


def render_markdown(rows: Sequence[dict], dataset: str, split: str) -> str:
    """The results as markdown: the models' table, then one of AP per class (a column per model)."""
    lines = [f"# ssd-eval on {dataset} ({split})", "",
             "| model | format | backend | size MB | " + " | ".join(METRICS) + " | ms/image | images |",
             "|---|---|---|---:|" + "---:|" * len(METRICS) + "---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(r['model']).name} | {r['format']} | {r.get('backend', '')} | {r['size_mb']:.2f} | "
                     + " | ".join(f"{r[m]:.3f}" for m in METRICS) + f" | {r['ms_per_image']:.2f} | {r['images']} |")
    classes = list(dict.fromkeys(name for r in rows for name in r.get("per_class", {})))
    if classes:
        lines += ["", "AP per class (mAP@0.5:0.95 / mAP@0.5, pycocotools' precision array):", "",
                  "| class | " + " | ".join(Path(r["model"]).name for r in rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for name in classes:
            cells = [r.get("per_class", {}).get(name) for r in rows]
            lines.append(f"| {name} | " + " | ".join(f"{c['AP']:.3f} / {c['AP50']:.3f}" if c else "" for c in cells)
                         + " |")
    return "\n".join(lines) + "\n"


def render_csv(rows: Sequence[dict]) -> str:
    """CSV_COLUMNS, one row per model with class 'all', then one per class (AP and AP50 only)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        common = {"model": r["model"], "format": r["format"], "backend": r.get("backend", "")}
        writer.writerow({**common, "class": "all", **{m: f"{r[m]:.5f}" for m in METRICS},
                         "size_mb": f"{r['size_mb']:.3f}", "ms_per_image": f"{r['ms_per_image']:.3f}",
                         "images": r["images"]})
        for name, values in r.get("per_class", {}).items():
            writer.writerow({**common, "class": name, "AP": f"{values['AP']:.5f}", "AP50": f"{values['AP50']:.5f}"})
    return out.getvalue()
