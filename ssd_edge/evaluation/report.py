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
from ssd_edge.evaluation.tables import render_csv, render_markdown, render_table
from ssd_edge.runtime.model_file import format_label


def evaluate_models(
    models: Sequence[str], datapath: str, split: str = "val", arch: str | None = None, batch: int = 8,
    device: str = "cpu", backend: str = "auto", json_path: str | None = None, progress: bool = True,
    backend_options: Mapping[str, Any] | None = None, agnostic_nms: bool | None = None,
    markdown_path: str | None = None, csv_path: str | None = None,
) -> list[dict]:
    """A row per model: its format, backend (with its precision), size, the COCO metrics,
    AP and AP50 per class, ms/image; printed as a table, written as JSON, markdown, CSV."""
    reports = {"--json": json_path, "--markdown": markdown_path, "--csv": csv_path}
    for flag, path in reports.items():  # before the work: a report that cannot be written is found out now
        if path:
            check_writable_file(path, flag)
    check_outputs(reports, {"--weights": list(models), "--datapath": datapath})
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
            backend_name = predictor.backend
        rows.append({"model": str(path), "format": format_label(path), "backend": backend_name,
                     "size_mb": path.stat().st_size / 1e6, **result.metrics,
                     "ms_per_image": result.seconds_per_image * 1000, "images": result.images,
                     "skipped_images": result.skipped, "per_class": result.per_class})
        if result.skipped:
            print(f"warning: {result.skipped} unreadable images skipped")
    print(render_table(rows))
    if json_path:
        write_text_atomic(json_path, json.dumps({"dataset": datapath, "split": split, "results": rows}, indent=2))
        print(f"wrote {json_path}")
    for path, text in ((markdown_path, lambda: render_markdown(rows, datapath, split)),
                       (csv_path, lambda: render_csv(rows))):
        if path:
            write_text_atomic(path, text())
            print(f"wrote {path}")
    return rows
