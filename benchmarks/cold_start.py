"""Cold start of the runtime alone: a fresh Python process that imports the runtime, loads
the model and detects in one image file. Goal: at most 0.5 s on the CPU.

    python -m benchmarks.cold_start                        # writes benchmarks/results/cold_start_cpu.md
    python -m benchmarks.cold_start --model ssd.onnx --repeats 20

What is timed, per repetition, by CLOCK_MONOTONIC (shared by parent and child): from just
before the parent starts the child (`python -c ...`: interpreter start-up included) to
(1) `from ssd_edge.runtime import Detector` and the onnxruntime backend imported,
(2) `Detector(model)` returned (model loaded, session created), (3) the first
`det("image.jpg")` returned (image read, preprocess, network, decode + NMS). The bare
interpreter (`python -c pass`) is timed alike for reference. One more child runs with
`-X importtime` to list the slowest imports. Without --model the script exports
mobilenetv3_ssd (SSDLite320, 91 classes, random weights with BatchNorm statistics of
sample images) in this process; the timed children never import torch (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ssd_edge.bench.machine import describe, markdown
from ssd_edge.common.atomic import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_S = 0.5
CHILD = """
import sys, time, json
from ssd_edge.runtime import Detector
from ssd_edge.runtime import detector
from ssd_edge.runtime.backends import onnxruntime_backend
imported = time.monotonic()
det = Detector(sys.argv[1])
loaded = time.monotonic()
found = det(sys.argv[2])
first = time.monotonic()
print(json.dumps({"imported": imported, "loaded": loaded, "first": first, "detections": len(found.boxes),
                  "torch_imported": any(n == "torch" or n.startswith("torch.") for n, m in sys.modules.items() if m)}))
"""
PHASES = ("imported", "loaded", "first")
PHASE_NAMES = {"imported": "runtime imported", "loaded": "model loaded", "first": "first detections"}


def make_model(folder: Path) -> Path:
    import torch

    from ssd_edge.data.synth import sample_images
    from ssd_edge.export.to_onnx import export_onnx
    from ssd_edge.models import build_model
    from ssd_edge.runtime.preprocess import preprocess

    torch.manual_seed(0)
    model = build_model("mobilenetv3_ssd", 91)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model.raw(torch.from_numpy(preprocess(sample_images(16, seed=2), model.spec.input_size)))
    return export_onnx(model.eval(), folder / "ssdlite320.onnx")


def time_child(model: Path, image: Path) -> dict[str, float]:
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), str(image)], capture_output=True, text=True,
                         check=True).stdout
    marks = json.loads(out.strip().splitlines()[-1])
    if marks["torch_imported"]:
        raise RuntimeError("the runtime imported torch: cold start is not that of the runtime alone")
    return {phase: marks[phase] - start for phase in PHASES}


def time_bare_interpreter() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - start


def slowest_imports(model: Path, image: Path, count: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (ms), from `python -X importtime`."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", CHILD, str(model), str(image)],
                         capture_output=True, text=True, check=True).stderr
    totals = {}
    for line in err.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if found and len(found.group(2)) == 1:  # top level: one space of indentation
            totals[found.group(3)] = int(found.group(1)) / 1e3
    return sorted(totals.items(), key=lambda kv: -kv[1])[:count]


def report(args, command: str, model: Path, runs: list[dict], bare: list[float], imports, load: tuple) -> str:
    machine = describe("cv2", "onnxruntime")
    machine.pop("torch_threads", None)  # torch made the model here; the timed children never import it
    table = ["| from process start to | p50 s | p90 s | min s | max s |", "|---|---|---|---|---|"]
    for phase in PHASES:
        values = np.array([r[phase] for r in runs])
        table.append(f"| {PHASE_NAMES[phase]} | {np.median(values):.3f} | {np.percentile(values, 90):.3f} | "
                     f"{values.min():.3f} | {values.max():.3f} |")
    bare_values = np.array(bare)
    table.append(f"| (bare `python -c pass`, for reference) | {np.median(bare_values):.3f} | "
                 f"{np.percentile(bare_values, 90):.3f} | {bare_values.min():.3f} | {bare_values.max():.3f} |")
    p50 = float(np.median([r["first"] for r in runs]))
    verdict = "met" if p50 <= GOAL_S else "NOT met"
    return "\n".join([
        "# Cold start of the runtime (CPU): process start -> model loaded -> first detections", "",
        markdown(machine),
        f"- 1-minute load average at start / end: {load[0]:.2f} / {load[1]:.2f} (a shared machine: other jobs ran)",
        f"- model: {args.model_text} ({model.stat().st_size / 1e6:.1f} MB), onnxruntime CPU, default threads; "
        "first detections on one JPEG file",
        f"- {args.repeats} fresh processes, one after the other; torch never imported in them (checked)",
        f"- command: `{command}`", "",
        *table, "",
        f"**p50 from process start to first detections: {p50:.3f} s (goal <= {GOAL_S} s: {verdict}).**", "",
        "Slowest top-level imports in one more child (`python -X importtime`, cumulative ms): "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in imports) + ".",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported .onnx (default: SSDLite320 made here)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_start_cpu.md")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.cold_start", *(sys.argv[1:] if argv is None else argv)])
    from ssd_edge.data.synth import sample_images

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or make_model(folder)
        args.model_text = str(args.model) if args.model else "mobilenetv3_ssd 320x320, 91 classes, random weights"
        image = folder / "image.jpg"
        cv2.imwrite(str(image), sample_images(1, seed=3)[0])
        load_start = os.getloadavg()[0]
        runs, bare = [], []
        for i in range(args.repeats):
            runs.append(time_child(model, image))
            bare.append(time_bare_interpreter())
            print(f"{i + 1}/{args.repeats}: first detections after {runs[-1]['first']:.3f} s", file=sys.stderr)
        imports = slowest_imports(model, image)
        text = report(args, command, model, runs, bare, imports, (load_start, os.getloadavg()[0]))
    write_text_atomic(args.out, text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
