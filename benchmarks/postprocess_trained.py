"""Decode + NMS of a trained model's outputs, today's fast path against a commit's, CPU time.

    python -m benchmarks.postprocess_trained --model /tmp/int8speed/fp32.onnx \
        --images /work/snap/dataset_coco/val --baseline 1a5a399 --rounds 10

The network runs once per image (onnxruntime, CPU); then only `fast.postprocess` is timed
(time.process_time, so other processes on a shared machine move it less than wall time),
today's and the baseline's (runtime/postprocess/fast.py and sparse_nms.py of that commit,
loaded from git as other modules) in turn on the same outputs in one process, after
checking that both give the same detections. Prints ms per image (mean / p50 / p90) and the
load average before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def baseline_postprocess(commit: str):
    """fast.postprocess as it was at `commit`, with that commit's sparse_nms beside it."""
    folder = Path(tempfile.mkdtemp(prefix="baseline_postprocess_"))
    for name in ("fast", "sparse_nms"):
        source = subprocess.run(["git", "show", f"{commit}:runtime/postprocess/{name}.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        source = source.replace("from ssd_edge.runtime.postprocess.sparse_nms import",
                                "from baseline_sparse_nms import")
        (folder / f"baseline_{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("baseline_fast", folder / "baseline_fast.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.postprocess


def network_outputs(model: Path, images: Path, count: int):
    import cv2
    import onnxruntime as ort

    from ssd_edge.runtime.detector import Detector
    from ssd_edge.runtime.preprocess import preprocess
    from ssd_edge.runtime.priors import default_boxes

    with Detector(model) as detector:
        spec, config = detector.spec, detector.config
    priors = default_boxes(spec)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = []
    for path in sorted(images.glob("*.jpg"))[:count]:
        image = cv2.imread(str(path))
        locs, logits = session.run(None, {session.get_inputs()[0].name: preprocess([image], spec.input_size)})
        outputs.append((locs, logits, [image.shape[:2]]))
    return outputs, priors, config


def same(a, b) -> bool:
    fields = ("boxes", "labels", "scores", "confs")
    return all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True) for k in fields)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model's .onnx (ssd-edge metadata)")
    parser.add_argument("--images", type=Path, required=True, help="a folder of .jpg images")
    parser.add_argument("--count", type=int, default=32, help="images (the first, sorted by name)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.3])
    parser.add_argument("--baseline", required=True, help="commit whose fast path is measured beside today's")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)

    from ssd_edge.runtime.postprocess import fast

    old = baseline_postprocess(args.baseline)
    outputs, priors, base_config = network_outputs(args.model, args.images, args.count)
    print(f"load before {os.getloadavg()[0]:.2f}; {len(outputs)} images; {base_config}")
    print("| threshold | baseline mean / p50 / p90 ms | now mean / p50 / p90 ms | speed-up |\n|---|---|---|---|")
    for threshold in args.thresholds:
        config = base_config.replace(score_threshold=threshold)
        variants = {"baseline": old, "now": fast.postprocess}
        for locs, logits, sizes in outputs:
            found = [postprocess(locs, logits, priors, sizes, config)[0] for postprocess in variants.values()]
            if not same(*found):
                raise SystemExit(f"threshold {threshold}: the baseline and today's detections differ")
        times = {name: [] for name in variants}
        for round_ in range(args.rounds):
            names = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for locs, logits, sizes in outputs:
                for name in names:
                    start = time.process_time()
                    variants[name](locs, logits, priors, sizes, config)
                    times[name].append((time.process_time() - start) * 1e3)
        cells = {name: np.array(found) for name, found in times.items()}
        text = {name: f"{v.mean():.3f} / {np.median(v):.3f} / {np.percentile(v, 90):.3f}" for name, v in cells.items()}
        speed_up = cells["baseline"].mean() / cells["now"].mean()
        print(f"| {threshold} | {text['baseline']} | {text['now']} | {speed_up:.2f}x |")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
