"""Class-agnostic NMS on a dataset's validation images (issue 27): detections, cross-class
pairs of boxes overlapping at IoU > 0.7 at a display threshold, and mAP (ssd-eval's, at the
model's own threshold), per-class NMS against agnostic, same model, same images:

    python -m benchmarks.agnostic_nms_sample --model /tmp/ssd.onnx --data dataset_coco \
        --out benchmarks/results/agnostic_nms_sample.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.data.sources import load_splits
from ssd_edge.evaluation.report import evaluate_models
from ssd_edge.runtime.boxes import pairwise_iou
from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.image_io import read_image

OVERLAP = 0.7


def overlap_counts(model: Path, paths: list[Path], score_threshold: float, agnostic: bool) -> tuple[int, int]:
    """(detections, pairs of different classes at IoU > OVERLAP) over `paths`."""
    detections = pairs = 0
    with Detector(model, score_threshold=score_threshold, agnostic_nms=agnostic, threads=1) as detector:
        for path in paths:
            found = detector(read_image(path))
            iou = np.triu(pairwise_iou(found.boxes, found.boxes), k=1)
            pairs += int(np.count_nonzero((iou > OVERLAP) & (found.labels[:, None] != found.labels[None])))
            detections += len(found.labels)
    return detections, pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="an exported .onnx")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--score-threshold", type=float, default=0.3, help="for the overlap counts (default 0.3, "
                                                                             "ssd-predict's display threshold)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" /
                        "agnostic_nms_sample.md")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.agnostic_nms_sample", *(sys.argv[1:] if argv is None else argv)])
    split = load_splits(args.data)["val"]
    paths = [Path(record.path) for record in split.records]
    objects = sum(len(record.labels) for record in split.records)
    lines = ["| NMS | detections (score > %g) | cross-class pairs IoU > %g | mAP@0.5:0.95 | mAP@0.5 |"
             % (args.score_threshold, OVERLAP), "|---|---|---|---|---|"]
    for agnostic in (False, True):
        detections, pairs = overlap_counts(args.model, paths, args.score_threshold, agnostic)
        row = evaluate_models([str(args.model)], str(args.data), progress=False, agnostic_nms=agnostic or None,
                              backend_options={"threads": 1})[0]
        lines.append(f"| {'agnostic' if agnostic else 'per class'} | {detections} | {pairs} | {row['AP']:.3f} | "
                     f"{row['AP50']:.3f} |")
        print(lines[-1], flush=True)
    text = "\n".join([
        "# Class-agnostic NMS on the sample validation images", "", f"Command: `{command}`", "",
        f"Model: {args.model}; {len(paths)} validation images of {args.data}"
        + (f" ({objects} objects)" if objects else "") + ". Overlap counts at score > "
        f"{args.score_threshold:g} (threads 1); mAP by ssd-eval at the model's own threshold.", "", *lines, ""])
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
