"""Evaluate several models (any format) on one dataset split and report a table row each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.common.output_paths import check_outputs, check_writable_file
from ssd_edge.data.sources import DatasetError, describe, load_splits
from ssd_edge.evaluation.coco import EvalResult, evaluate
from ssd_edge.evaluation.predictor import open_predictor
from ssd_edge.runtime.model_file import format_label


def render_table(rows: Sequence[dict]) -> str:
    metrics = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    columns = " ".join(f"{m:>6}" for m in metrics)
    header = f"{'model':<28} {'format':<10} {'size MB':>8} {columns} {'ms/image':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        values = " ".join(f"{r[m]:>6.3f}" for m in metrics)
        lines.append(f"{Path(r['model']).name:<28} {r['format']:<10} {r['size_mb']:>8.2f} {values} "
                     f"{r['ms_per_image']:>9.2f}")
    return "\n".join(lines)


def evaluate_models(
    models: Sequence[str], datapath: str, split: str = "val", arch: str | None = None, batch: int = 8,
    device: str = "cpu", backend: str = "auto", json_path: str | None = None, progress: bool = True,
    backend_options: Mapping[str, Any] | None = None, agnostic_nms: bool | None = None,
) -> list[dict]:
    if json_path:  # before the work: a report that cannot be written is found out now, not at the end
        check_writable_file(json_path, "--json")
        check_outputs({"--json": json_path}, {"--weights": list(models), "--datapath": datapath})
    splits = load_splits(datapath)
    if split not in splits:
        raise DatasetError(f"{datapath}: no '{split}' split (found: {', '.join(splits)})")
    print(describe(datapath, splits))
    rows = []
    for model in models:
        path = Path(model)
        with open_predictor(path, arch, device, backend, backend_options=backend_options,
                            agnostic_nms=agnostic_nms) as predictor:
            result: EvalResult = evaluate(predictor, splits[split], batch_size=batch, progress=progress)
        rows.append({"model": str(path), "format": format_label(path), "size_mb": path.stat().st_size / 1e6,
                     **result.metrics, "ms_per_image": result.seconds_per_image * 1000, "images": result.images,
                     "skipped_images": result.skipped})
        if result.skipped:
            print(f"warning: {result.skipped} unreadable images skipped")
    print(render_table(rows))
    if json_path:
        write_text_atomic(json_path, json.dumps({"dataset": datapath, "split": split, "results": rows}, indent=2))
        print(f"wrote {json_path}")
    return rows
