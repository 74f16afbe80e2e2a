"""COCO evaluation with pycocotools: any predictor, any dataset layout this toolkit reads.

A predictor (`runtime/predictor.py`) takes a list of BGR uint8 images and returns one
`Detections` (boxes in the images' pixels, contiguous labels) per image: the torch model
(`TorchPredictor`), the runtime's `Detector` (.onnx, .engine) and ssd-serve's client all are.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

from ssd_edge.common.errors import require
from ssd_edge.data.sources import Split
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.predictor import Predictor

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    images: int
    skipped: int
    seconds_per_image: float
    # {class name: {"AP": mAP@0.5:0.95, "AP50": mAP@0.5}} from pycocotools' precision array
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


def coco_results(split: Split, image_ids: Sequence[int], detections: Sequence[Detections]) -> list[dict]:
    """Detections as COCO result entries (bbox [x, y, w, h], original category ids)."""
    results = []
    for image_id, det in zip(image_ids, detections):
        for (x1, y1, x2, y2), label, score in zip(det.boxes.tolist(), det.labels.tolist(), det.scores.tolist()):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": split.category_ids[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return results


def require_coco_eval() -> None:
    """MissingDependency naming the small `eval` extra where pycocotools is not installed."""
    require("pycocotools.cocoeval", "eval", "COCO mAP (pycocotools)")


def coco_metrics(split: Split, results: list[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """pycocotools' bbox AP, AP50, AP75, APs, APm, APl (0 for everything when nothing was detected)."""
    return coco_scores(split, results, image_ids)[0]


def coco_scores(split: Split, results: list[dict],
                image_ids: Sequence[int] | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """coco_metrics, and per class {name: {"AP", "AP50"}}: the means of pycocotools'
    precision array (IoU x recall x class x area x max-dets) over the entries it filled, at
    area 'all' and 100 detections, as its own summary averages them over classes too."""
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}, {name: {"AP": 0.0, "AP50": 0.0} for name in split.class_names[1:]}
    evaluator = _cocoeval(split, results, image_ids)
    # pycocotools reports -1 where a size range has no ground truth.
    metrics = {name: float(max(value, 0.0)) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, classes)
    per_class = {}
    for k, category in enumerate(evaluator.params.catIds):
        name = split.class_names[split.category_ids.index(category) + 1]
        per_class[name] = {"AP": _mean_filled(precision[:, :, k]), "AP50": _mean_filled(precision[0, :, k])}
    return metrics, per_class


def _mean_filled(values) -> float:
    filled = values[values > -1]
    return float(filled.mean()) if filled.size else 0.0


def _cocoeval(split: Split, results: list[dict], image_ids: Sequence[int] | None):
    """pycocotools' COCOeval of `results`, evaluated, accumulated and summarized (quietly)."""
    from pycocotools.cocoeval import COCOeval

    ground_truth = split.coco()
    with contextlib.redirect_stdout(io.StringIO()):
        detections = ground_truth.loadRes(results)
        evaluator = COCOeval(ground_truth, detections, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def evaluate(predictor: Predictor, split: Split, batch_size: int = 8, progress: bool = True) -> EvalResult:
    """Run `predictor` over every image of `split` and score it with pycocotools.

    Unreadable images are skipped with a warning and counted; timing covers the
    predictor calls only (preprocess, network, decode + NMS), not image decoding.
    """
    from ssd_edge.common.progress import progress_bar

    require_coco_eval()  # before any image is run
    image_ids, detections, skipped, seconds = [], [], 0, 0.0
    records = split.records
    bar = progress_bar(total=len(records), desc=f"eval {split.name}", unit="img", disable=not progress, leave=False)
    for start in range(0, len(records), batch_size):
        batch, ids = [], []
        for record in records[start : start + batch_size]:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                image = record.read_image()
            if image is None:
                skipped += 1
                continue
            batch.append(image)
            ids.append(record.image_id)
        if batch:
            began = time.perf_counter()
            detections.extend(predictor(batch))
            seconds += time.perf_counter() - began
            image_ids.extend(ids)
        bar.update(min(batch_size, len(records) - start))
    bar.close()
    metrics, per_class = coco_scores(split, coco_results(split, image_ids, detections), image_ids)
    return EvalResult(metrics, len(image_ids), skipped, seconds / max(len(image_ids), 1), per_class)
