"""Decode + NMS across score distributions (issue 22 item 12), end to end against
torchvision's eager SSDLite320, same weights, same machine, same run:

    python -m benchmarks.postprocess_cliff                # writes benchmarks/results/postprocess_cliff.md
    python -m benchmarks.postprocess_cliff --baseline 4ea0095^   # also the fast path of that commit

Weights: torchvision's ssdlite320_mobilenet_v3_large, random (seed 0), BatchNorm statistics
of sample images (as benchmarks/e2e_cpu.py makes them), with the last convolution of the
classification head changed per distribution:

- spread: as made (the logits of a random head spread; e2e_cpu.md's case);
- all tied: weights and biases 0, so every class of every default box scores exactly 1/91
  (torchvision's fresh weights; near-uniform scores are what an early checkpoint gives);
- all above threshold: the head scaled down (logits within about +-0.5): every score of
  every class lies near 1/91, above 0.001, untied;
- half tied: every other anchor of each location zeroed (half of the default boxes tied).

Each is exported to ONNX FP32 with ssd-export and measured with ssd-bench (onnxruntime on
the CPU, batch 1, BGR images in memory -> detections, per stage) beside the torchvision
peer at score 0.001 (the preset's: top 300 per class, IoU 0.55, 300 detections), and the
spread model also at 0.3. With --baseline, the same Detector is measured a second time in
the same run with the fast path (runtime/postprocess/fast.py) of that commit patched in,
for a before/after on the same machine.

On a shared machine wall-clock stages move with the load; --cpu-rounds adds a second
table of CPU-time stages (time.process_time, this process only, the network and
postprocessing on one thread): per image, the same Detector runs each variant in turn
on the same images, so the shares compare like with like under any load.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ssd_edge.bench import report as bench_report
from ssd_edge.bench.latency import overhead_ratio
from ssd_edge.bench.run import BenchOptions, run_bench
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.export.pipeline import ExportOptions, run_export

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = ("spread", "all tied", "all above threshold", "half tied")
GOAL_SPEEDUP = 3.0
CLASSES = 91


def distribution_weights(name: str, base: dict, path: Path) -> Path:
    """`base` (a torchvision SSDLite320 state dict) with its class scores made `name`."""
    state = {k: v.clone() for k, v in base.items()}
    last_conv = re.compile(r"head\.classification_head\.module_list\.\d+\.1\.(weight|bias)")
    for key in [k for k in state if last_conv.fullmatch(k)]:
        tensor = state[key]
        if name == "all tied":
            tensor.zero_()
        elif name == "all above threshold":
            tensor.mul_(0.05)
        elif name == "half tied":  # channels are (anchor, class): zero every other anchor
            tensor.view(-1, CLASSES, *tensor.shape[1:])[::2] = 0
    torch.save(state, path)
    return path


def baseline_postprocess(commit: str):
    """fast.postprocess as it was at `commit`, loaded from git beside today's."""
    source = subprocess.run(["git", "show", f"{commit}:runtime/postprocess/fast.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("baseline_fast", handle.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(handle.name)
    return module.postprocess


def measure(model: Path, weights: Path, threshold: float, runs: int, warmup: int, threads: int | None) -> dict:
    options = BenchOptions(models=(model,), backend="onnxruntime-cpu", batches=(1,), runs=runs, warmup=warmup,
                           threads=threads,
                           peers=("torchvision",), peer_weights=weights, score_threshold=threshold, progress=False)
    report = run_bench(options, echo=lambda *a, **k: None)
    ours = next(r for r in report["results"] if r["kind"] == "model")
    peer = next(r for r in report["results"] if r["kind"] == "peer")
    return {"ours": ours, "peer": peer, "load": (report["settings"]["load_average_start"],
                                                  report["settings"]["load_average_end"]),
            "machine": bench_report.machine_text(report["machine"], report["settings"]["threads"])}


class CpuStageTimer:
    """A StageTimer (the Detector's stages) of CPU time of this process (time.process_time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, sync=None):
        start = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - start


def measure_cpu(model: Path, threshold: float, variants: list, rounds: int, warmup: int) -> dict:
    """CPU-time stages (ms, medians over `rounds` images after `warmup`) of one Detector
    running each (name, postprocess) variant in turn on every image."""
    import numpy as np

    from ssd_edge.data.synth import sample_images
    from ssd_edge.runtime.backends import onnxruntime_backend
    from ssd_edge.runtime.detector import Detector

    images = sample_images(16, seed=0)
    stages = {name: {"preprocess": [], "network": [], "decode_nms": []} for name, _ in variants}
    current = onnxruntime_backend.postprocess
    load_start = os.getloadavg()[0]
    with Detector(model, score_threshold=threshold, threads=1, model_thresholds=True) as detector:
        try:
            for index in range(warmup + rounds):
                for name, function in variants:
                    onnxruntime_backend.postprocess = function
                    timer = CpuStageTimer()
                    detector(images[index % len(images)], timer=timer)
                    if index >= warmup:
                        for stage, values in stages[name].items():
                            values.append(timer.seconds[stage] * 1e3)
        finally:
            onnxruntime_backend.postprocess = current
    return {"stages": {name: {stage: float(np.median(v)) for stage, v in found.items()}
                       for name, found in stages.items()},
            "load": (load_start, os.getloadavg()[0])}


def cpu_rows(distribution: str, threshold: float, result: dict) -> list[str]:
    lines = []
    for which, stages in result["stages"].items():
        share = (stages["preprocess"] + stages["decode_nms"]) / stages["network"]
        lines.append(f"| {distribution} | {threshold:g} | {which} | {stages['preprocess']:.2f} | "
                     f"{stages['network']:.2f} | {stages['decode_nms']:.2f} | {share:.0%} | "
                     f"{result['load'][0]:.1f}-{result['load'][1]:.1f} |")
    return lines


def row(distribution: str, threshold: float, which: str, result: dict) -> str:
    ours, peer = result["ours"], result["peer"]
    stages = ours["stages_p50_ms"]
    speedup = ours["vs"]["torchvision"]
    overhead = overhead_ratio(ours)
    return (f"| {distribution} | {threshold:g} | {which} | {ours['latency_ms']['p50']:.1f} | "
            f"{stages['preprocess']:.2f} | {stages['network']:.1f} | {stages['decode_nms']:.2f} | {overhead:.0%} | "
            f"{peer['latency_ms']['p50']:.1f} | {peer['stages_p50_ms']['decode_nms']:.1f} | **{speedup:.2f}x** | "
            f"{result['load'][0]:.1f}-{result['load'][1]:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--baseline", help="also measure the fast path of this commit (patched in, same run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="both sides (default 1: on a loaded 2-core machine two torch threads collapse, issue 22 "
                             "item 11); 0: every logical core")
    parser.add_argument("--distributions", default=",".join(DISTRIBUTIONS))
    parser.add_argument("--cpu-rounds", type=int, default=0,
                        help="also CPU-time stages over this many images per variant, variants in turn (0: not)")
    parser.add_argument("--out", type=Path, default=RESULTS / "postprocess_cliff.md")
    args = parser.parse_args(argv)
    args.threads = args.threads or None
    command = shlex.join(["python", "-m", "benchmarks.postprocess_cliff", *(sys.argv[1:] if argv is None else argv)])
    from benchmarks.e2e_cpu import torchvision_weights
    from ssd_edge.runtime.backends import onnxruntime_backend

    current = onnxruntime_backend.postprocess
    old = baseline_postprocess(args.baseline) if args.baseline else None
    header = ("| scores | threshold | decode + NMS | ours p50 ms | pre | network | decode+NMS | (pre+NMS)/net | "
              "torchvision p50 ms | its decode+NMS | speed-up | load |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    cpu_header = ("| scores | threshold | decode + NMS | pre CPU ms | network CPU ms | decode+NMS CPU ms | "
                  "(pre+NMS)/net | load |")
    cpu_lines = [cpu_header, "|" + "---|" * (cpu_header.count("|") - 1)]
    machine = ""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_path = torchvision_weights(work / "base.pth")
        base = torch.load(base_path, weights_only=True)
        for name in args.distributions.split(","):
            weights = distribution_weights(name, base, work / f"{name.replace(' ', '_')}.pth")
            run_export(ExportOptions(weights=weights, arch="mobilenetv3_ssd", formats=("onnx",), output=work,
                                     progress=False), echo=lambda *a, **k: None)
            model = work / f"{weights.stem}.onnx"
            for threshold in ((0.001, 0.3) if name == "spread" else (0.001,)):
                variants = [("now", current)] + ([(f"at {args.baseline}", old)] if old else [])
                for which, function in variants:
                    onnxruntime_backend.postprocess = function
                    try:
                        result = measure(model, weights, threshold, args.runs, args.warmup, args.threads)
                    finally:
                        onnxruntime_backend.postprocess = current
                    machine = machine or str(result["machine"])
                    lines.append(row(name, threshold, which, result))
                    print(lines[-1], flush=True)
                if args.cpu_rounds:
                    cpu_lines += cpu_rows(name, threshold, measure_cpu(model, threshold, variants, args.cpu_rounds,
                                                                       args.warmup))
                    print("\n".join(cpu_lines[-len(variants):]), flush=True)
    text = "\n".join([
        "# Decode + NMS across score distributions, end to end vs torchvision eager SSDLite320 (CPU)", "",
        f"Command: `{command}`", "", f"Machine: {machine}", "",
        "ssd-bench at batch 1, onnxruntime on the CPU, ONNX FP32 exported from the very weights the torchvision "
        f"peer runs, {args.threads or 'every logical core as'} thread(s) each; p50s over {args.runs} rounds after "
        f"{args.warmup} warm-up, taking turns with the peer. "
        "Stages of ours are ssd-bench's (pre = preprocess). Speed-up: torchvision's end-to-end p50 over ours. "
        f"Goal (issue 22 item 12): >= {GOAL_SPEEDUP:g}x for every distribution at 0.001; (pre + decode + NMS) "
        "<= 25% of the network at 0.001, <= 10% at 0.3.", "", *lines, "",
        *([f"CPU time of this process per stage (time.process_time; medians over {args.cpu_rounds} images per "
           "variant after the warm-up, variants in turn on the same images, one thread), ours only:", "",
           *cpu_lines, ""] if args.cpu_rounds else [])])
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
