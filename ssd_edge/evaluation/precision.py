"""What each precision costs: mAP@0.5 and mAP@0.5:0.95 of FP32, FP16 and bf16 (emulated on
the CPU, see export/emulate.py) and INT8 (per flavour) of one model on one labelled image
set, with the verdict against each precision's budget. `ssd-export` ends with this table
and `ssd-eval --precision` makes it for existing files.

Budgets are absolute drops from FP32 in both metrics (0.003 is 0.3 points of mAP).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.data.sources import Split
from ssd_edge.evaluation.coco import coco_metrics, coco_results

BUDGETS = {"fp16": 0.001, "bf16": 0.003, "int8": 0.003}  # the project's goals (issue 24)
EMULATED = ("fp16", "bf16")
Echo = Callable[[str], None]


@dataclass
class LabelledImages:
    """Images of a split with their ground truth, decoded once (the INT8 search scores many
    variants of a model on the same few dozen images)."""

    split: Split
    image_ids: list[int]
    images: list[np.ndarray]
    name: str

    @classmethod
    def of(cls, split: Split, first: int = 0, count: int | None = None, name: str | None = None) -> "LabelledImages":
        records = split.records[first : None if count is None else first + count]
        ids, images = [], []
        for record in records:
            image = record.read_image()
            if image is not None:
                ids.append(record.image_id)
                images.append(image)
        if not images:
            raise ValueError(f"{split.annotation_file}: no readable images among {split.name}'s "
                             f"{first}-{first + len(records) - 1}")
        label = name or f"{split.name} images {first}-{first + len(records) - 1}"
        return cls(split, ids, images, label)

    def __len__(self) -> int:
        return len(self.images)

    def score(self, model: str | Path, batch: int = 8) -> dict[str, float]:
        """pycocotools AP (mAP@0.5:0.95) and AP50 of the ONNX `model` (onnxruntime CPU)."""
        from ssd_edge.runtime.predictor import open_predictor

        detections = []
        # chunks to a fixed batch itself; at the model's own (evaluation) score threshold
        with open_predictor(model, backend="onnxruntime", model_thresholds=True) as predictor:
            for start in range(0, len(self.images), batch):
                detections.extend(predictor(self.images[start : start + batch]))
        metrics = coco_metrics(self.split, coco_results(self.split, self.image_ids, detections), self.image_ids)
        return {"AP": metrics["AP"], "AP50": metrics["AP50"]}


@dataclass
class AccuracyRow:
    precision: str  # fp32, fp16, bf16, int8
    model: str
    AP50: float
    AP: float
    how: str = ""  # "emulated", "tensorrt flavour, entropy, 3 layers float", ...
    drop_AP50: float = 0.0
    drop_AP: float = 0.0
    budget: float | None = None

    @property
    def verdict(self) -> str:
        if self.budget is None:
            return "reference"
        return "within budget" if max(self.drop_AP50, self.drop_AP) <= self.budget + 1e-9 else "over budget"


@dataclass
class AccuracyTable:
    dataset: str
    images: int
    rows: list[AccuracyRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, precision: str, model: str | Path, metrics: dict[str, float], how: str = "") -> AccuracyRow:
        row = AccuracyRow(precision, str(model), metrics["AP50"], metrics["AP"], how)
        reference = next((r for r in self.rows if r.precision == "fp32"), None)
        if precision != "fp32" and reference is not None:
            row.drop_AP50, row.drop_AP = reference.AP50 - row.AP50, reference.AP - row.AP
            row.budget = BUDGETS.get(precision)
        self.rows.append(row)
        return row

    def markdown(self) -> str:
        budgets = ", ".join(f"{name.upper() if name != 'bf16' else name} {value:g}" for name, value in BUDGETS.items())
        lines = [f"Accuracy per precision on {self.dataset} ({self.images} images, pycocotools; budgets are drops "
                 f"from FP32 in both metrics: {budgets})",
                 "",
                 "| precision | model | how | mAP@0.5 | mAP@0.5:0.95 | Δ mAP@0.5 | Δ mAP@0.5:0.95 | verdict |",
                 "|---|---|---|---:|---:|---:|---:|---|"]
        for r in self.rows:
            drops = ("", "") if r.budget is None else (f"{-r.drop_AP50:+.4f}", f"{-r.drop_AP:+.4f}")
            lines.append(f"| {r.precision.upper()} | {Path(r.model).name} | {r.how} | {r.AP50:.4f} | {r.AP:.4f} | "
                         f"{drops[0]} | {drops[1]} | {r.verdict} |")
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_json(self) -> str:
        rows = [{**asdict(r), "verdict": r.verdict} for r in self.rows]
        return json.dumps({"dataset": self.dataset, "images": self.images, "budgets": BUDGETS, "rows": rows,
                           "notes": self.notes}, indent=2)

    def write(self, base: Path) -> list[Path]:
        """<base>.accuracy.md and <base>.accuracy.json, atomically."""
        paths = [Path(f"{base}.accuracy.md"), Path(f"{base}.accuracy.json")]
        write_text_atomic(paths[0], self.markdown())
        write_text_atomic(paths[1], self.to_json())
        return paths


def emulated_score(fp32_model: str | Path, precision: str, labelled: LabelledImages) -> dict[str, float]:
    """The mAP of `fp32_model` (.onnx) with its tensors rounded to `precision` (fp16, bf16)."""
    from ssd_edge.export.emulate import emulated
    from ssd_edge.export.onnx_model import load_onnx, save

    with tempfile.TemporaryDirectory(prefix="ssd-emulate-") as folder:
        path = Path(folder) / f"{Path(fp32_model).stem}.{precision}.onnx"
        save(emulated(load_onnx(fp32_model), precision), path)
        return labelled.score(path)


def int8_description(model: str | Path) -> str:
    """'tensorrt flavour, entropy, 2 layers float' from the INT8 model's quantization record."""
    from ssd_edge.runtime.model_file import QUANTIZATION_KEY, onnx_metadata

    record = json.loads(onnx_metadata(model).get(QUANTIZATION_KEY, "{}"))
    floats = len(record.get("float_layers", {}))
    return f"{record.get('flavour', '?')} flavour, {record.get('calibration', 'minmax')}, {floats} layer(s) float"


def precision_table(fp32_model: str | Path | None, int8_models: Sequence[str | Path], labelled: LabelledImages,
                    precisions: Sequence[str], echo: Echo = print) -> AccuracyTable:
    """The table for one FP32 ONNX (fp32 and the emulated rows) and its INT8 files."""
    table = AccuracyTable(labelled.name, len(labelled))
    if fp32_model is not None:
        table.add("fp32", fp32_model, labelled.score(fp32_model), "onnxruntime CPU")
        for precision in (p for p in precisions if p in EMULATED):
            echo(f"measuring {precision} (emulated) on {labelled.name}")
            table.add(precision, fp32_model, emulated_score(fp32_model, precision, labelled),
                      f"emulated: {precision} weights and activations")
    if "int8" in precisions:
        for model in int8_models:
            echo(f"measuring int8 {Path(model).name} on {labelled.name}")
            table.add("int8", model, labelled.score(model), int8_description(model))
    return table


PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def evaluate_precisions(models: Sequence[str | Path], datapath: str | Path, precisions: Sequence[str],
                        split: str = "val", json_path: str | Path | None = None, echo: Echo = print) -> AccuracyTable:
    """`ssd-eval --precision`: the accuracy table of existing files. `models`: one FP32 ONNX
    (its FP16/bf16 rows are emulated from it) and any INT8 ONNX files; without INT8 files,
    <stem>.int8.onnx and <stem>.int8-*.onnx beside the FP32 one are used."""
    from ssd_edge.common.errors import UsageError
    from ssd_edge.data.sources import DatasetError, load_splits
    from ssd_edge.runtime.model_file import QUANTIZATION_KEY, model_format, onnx_metadata

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise UsageError(f"--precision {','.join(precisions)}: choose from {', '.join(PRECISIONS)}")
    paths = [Path(m) for m in models]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        if model_format(path, allow_checkpoint=True) != "onnx":
            raise UsageError(f"{path}: --precision compares ONNX files (export the model first: ssd-export)")
    fp32 = [p for p in paths if QUANTIZATION_KEY not in onnx_metadata(p)]
    int8 = [p for p in paths if p not in fp32]
    if len(fp32) > 1:
        raise UsageError(f"--precision takes one FP32 ONNX (got {', '.join(map(str, fp32))}) and its INT8 files")
    if fp32 and not int8 and "int8" in precisions:
        stem = fp32[0].name[: -len(".onnx")]
        int8 = sorted(fp32[0].parent.glob(f"{stem}.int8.onnx")) + sorted(fp32[0].parent.glob(f"{stem}.int8-*.onnx"))
    if not fp32 and any(p in precisions for p in ("fp32", "fp16", "bf16")):
        raise UsageError("--precision fp32/fp16/bf16 need the FP32 ONNX among --weights")
    splits = load_splits(datapath)
    if split not in splits:
        raise DatasetError(f"{datapath}: no '{split}' split (found: {', '.join(splits)})")
    labelled = LabelledImages.of(splits[split], name=f"{datapath} {split}")
    table = precision_table(fp32[0] if fp32 else None, int8, labelled, precisions, echo)
    if "int8" in precisions and not int8:
        table.notes.append("no INT8 file given or found beside the FP32 one")
    echo(table.markdown())
    if json_path:
        write_text_atomic(json_path, table.to_json())
        echo(f"wrote {json_path}")
    return table
