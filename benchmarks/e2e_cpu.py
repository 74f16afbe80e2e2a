"""End-to-end CPU latency: our ONNX FP32 and both INT8 flavours on onnxruntime against
torchvision's eager ssdlite320_mobilenet_v3_large, same weights, same images, same threads,
in one ssd-bench run; reported against the end-to-end goals in
benchmarks/README.md.

    python -m benchmarks.e2e_cpu                       # writes benchmarks/results/e2e_cpu.md (+ .json)
    python -m benchmarks.e2e_cpu --weights ssdlite320_mobilenet_v3_large_coco-a79551df.pth
    python -m benchmarks.e2e_cpu --weights runs/sample/ssd.pt --data dataset_coco \
        --out benchmarks/results/e2e_cpu_sample.md

The models: torchvision's SSDLite320 state dict (given with --weights, or made here: random
weights, seed 0, BatchNorm statistics of sample images), or our mobilenetv3_ssd checkpoint
at 320x320 (such as the sample model `make sample` trains), exported with ssd-export to
ONNX FP32, INT8 `cpu` flavour and INT8 `tensorrt` flavour (calibrated on --data's images,
else on synthetic sample images). The torchvision peer runs the very same weights; a
checkpoint also runs eager as our PyTorch model, and --data adds mAP columns. What is timed is what
ssd-bench times (see ssd_edge/bench/latency.py): BGR images in memory -> final
detections, per stage, after warm-up, models and peer taking turns in rounds.

An untrained head scores nearly every default box above the preset's 0.001 in every class,
the heaviest possible decode+NMS load for both sides; `--score-threshold` runs the same
comparison at another threshold (both sides alike), e.g. 0.3 for the light load of a
deployed detector's threshold.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import cv2
import torch

from ssd_edge.bench import report as bench_report
from ssd_edge.bench.latency import overhead_ratio
from ssd_edge.bench.run import BenchOptions, run_bench
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.data.synth import sample_images
from ssd_edge.export.pipeline import ExportOptions, run_export

RESULTS = Path(__file__).resolve().parent / "results"
PEER = "torchvision"
GOAL_SPEEDUP = 6.0
GOAL_OVERHEAD = 0.10


def torchvision_weights(path: Path) -> Path:
    """torchvision's SSDLite320 (91 COCO classes) with random weights, seed 0, and BatchNorm
    statistics of sample images, saved as its own state dict file."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from ssd_edge.bench.peers import calibrate_torchvision

    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    calibrate_torchvision(model, sample_images(16, seed=2))
    torch.save(model.state_dict(), path)
    return path


def calibration_folder(data: Path | None, work: Path) -> Path:
    """--data, or a folder of synthetic sample images."""
    if data is not None:
        return data
    calib = work / "calibration"
    calib.mkdir()
    for i, image in enumerate(sample_images(64, seed=1)):
        cv2.imwrite(str(calib / f"{i:03d}.jpg"), image)
    return calib


def export_models(weights: Path, calib: Path, work: Path) -> list[Path]:
    """ONNX FP32, INT8 cpu and INT8 tensorrt flavours of `weights`, named apart."""
    run_export(ExportOptions(weights=weights, arch="mobilenetv3_ssd", formats=("onnx", "int8"), calib_data=calib,
                             calib_images=64, int8_flavour="cpu", output=work, progress=False), echo=print)
    fp32 = work / f"{weights.stem}.onnx"
    cpu = (work / f"{weights.stem}.int8.onnx").rename(work / f"{weights.stem}.int8-cpu.onnx")
    run_export(ExportOptions(weights=fp32, formats=("int8",), calib_data=calib, calib_images=64,
                             int8_flavour="tensorrt", output=work, progress=False), echo=print)
    trt = (work / f"{weights.stem}.int8.onnx").rename(work / f"{weights.stem}.int8-tensorrt.onnx")
    return [fp32, cpu, trt]


def our_checkpoint(path: Path) -> dict | None:
    """The checkpoint in `path` when it is ours, None when it is torchvision's state dict."""
    from ssd_edge.checkpoint import CHECKPOINT, open_weights

    weights = open_weights(path)
    return weights.data if weights.kind == CHECKPOINT else None


def describe_weights(path: Path | None) -> str:
    if path is None:
        return ("torchvision's ssdlite320_mobilenet_v3_large state dict, random, seed 0, BatchNorm statistics of "
                "sample images (made by the script)")
    data = our_checkpoint(path)
    if data is None:
        return f"torchvision's ssdlite320_mobilenet_v3_large state dict {path}"
    metrics = data.get("metrics") or {}
    trained = f", epoch {data['epoch']}" if "epoch" in data else ""
    if "AP50" in metrics:
        trained += f", validation mAP@0.5 {metrics['AP50']:.3f}"
    return f"our checkpoint {path} ({data['spec']['arch']}, {len(data['spec']['class_names'])} classes{trained})"


def goals(report: dict) -> list[str]:
    """The issue's goals, met or not, from the rows of the FP32 model."""
    lines = ["## Against the goals", ""]
    fp32 = [r for r in report["results"] if r["kind"] == "model" and r["format"] == "ONNX"]
    for row in fp32:
        speedup = row["vs"].get(PEER)
        overhead = overhead_ratio(row)
        stages = row["stages_p50_ms"]
        lines.append(
            f"- batch {row['batch']}: end-to-end p50 {row['latency_ms']['p50']:.2f} ms, "
            f"**{speedup:.3f}x** faster than torchvision eager (goal >= {GOAL_SPEEDUP:g}x: "
            f"{'met' if speedup >= GOAL_SPEEDUP else 'NOT met'}); preprocess {stages['preprocess']:.2f} + "
            f"decode/NMS {stages['decode_nms']:.2f} ms = **{overhead:.1%}** of the network's "
            f"{stages['network']:.2f} ms (p50s; goal <= {GOAL_OVERHEAD:.0%}: "
            f"{'met' if overhead <= GOAL_OVERHEAD else 'NOT met'})"
        )
    for row in (r for r in report["results"] if r["kind"] == "peer"):
        stages = row["stages_p50_ms"]
        lines.append(f"- {row['name']} at batch {row['batch']}: preprocess {stages['preprocess']:.2f}, network "
                     f"{stages['network']:.2f}, decode/NMS {stages['decode_nms']:.2f} ms (p50s)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="torchvision's SSDLite320 state dict or our mobilenetv3_ssd "
                                                      "checkpoint at 320x320 (default: random, made here)")
    parser.add_argument("--data", type=Path, help="dataset: calibration images and mAP columns (default: none)")
    parser.add_argument("--batch", default="1,8", help="batch sizes (default 1,8)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, help="default: every logical core")
    parser.add_argument("--score-threshold", type=float, help="both sides alike (default: the preset's 0.001)")
    parser.add_argument("--out", type=Path, default=RESULTS / "e2e_cpu.md")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.e2e_cpu", *(sys.argv[1:] if argv is None else argv)])

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = args.weights or torchvision_weights(work / "ssdlite320_random.pth")
        models = export_models(weights, calibration_folder(args.data, work), work)
        options = BenchOptions(
            models=tuple(models), backend="onnxruntime-cpu", batches=tuple(int(b) for b in args.batch.split(",")),
            runs=args.runs, warmup=args.warmup, threads=args.threads, peers=(PEER,), peer_weights=weights,
            compare_torch=weights if our_checkpoint(weights) is not None else None, data=args.data,
            score_threshold=args.score_threshold, json_path=args.out.with_suffix(".json"),
            plot_path=args.out.with_suffix(".png"), command=command,
        )
        report = run_bench(options)
    title = "End-to-end CPU latency: ONNX FP32 and INT8 on onnxruntime vs torchvision eager SSDLite320"
    weights_text = describe_weights(args.weights)
    text = bench_report.markdown(report, title) + "\n" + "\n".join([
        f"Weights: {weights_text}; ours exported from them with ssd-export, the torchvision peer runs the same "
        f"weights. Latency distributions: `{args.out.with_suffix('.png').name}`.", "", *goals(report)]) + "\n"
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
