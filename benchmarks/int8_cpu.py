"""FP32 vs INT8 (both flavours) latency on onnxruntime's CPU provider, in one process.

What is timed: `InferenceSession.run` on one preprocessed batch already in memory, i.e. the
network alone (no image decoding, no preprocessing, no decode + NMS), after warm-up runs.
Every model gets the same input, thread count and number of runs; FP32 is the peer.

    python -m benchmarks.int8_cpu --arch mobilenetv3_ssd
    python -m benchmarks.int8_cpu --weights ssd.pt --calib-data dataset_coco --out benchmarks/results/int8_cpu_ssd.md

Without --weights the model has random weights (BatchNorm statistics set on sample images):
its latency is that of a trained model, its INT8 accuracy is not meaningful. Without
--calib-data the synthetic sample images calibrate. Writes a markdown table naming the CPU,
whether it has VNNI, and the versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ssd_edge.bench.machine import VNNI_FLAGS, cpu_model_and_flags

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_description() -> tuple[str, list[str]]:
    """CPU model name and which int8 dot-product extensions (VNNI) it has."""
    name, flags = cpu_model_and_flags()
    return f"{name} ({os.cpu_count()} logical cores)", sorted(flags & VNNI_FLAGS)


def latency_ms(sessions: dict, feed: dict, warmup: int, runs: int, rounds: int = 10) -> dict[str, np.ndarray]:
    """Per model, `runs` timings in ms of session.run(feed). The models take turns in
    `rounds` blocks, so a change of machine load mid-benchmark hits them all alike."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(per_round):
                start = time.perf_counter()
                session.run(None, feed)
                times[name].append(time.perf_counter() - start)
    return {name: np.array(values) * 1e3 for name, values in times.items()}


def make_session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def random_model(arch: str, images: list[np.ndarray]):
    import torch

    from ssd_edge.models import build_model
    from ssd_edge.models.calibration import calibrate_batchnorm
    from ssd_edge.runtime.preprocess import preprocess

    torch.manual_seed(0)  # the same random model every run
    model = build_model(arch, 91)  # BatchNorm statistics of real images, as a trained model has
    return calibrate_batchnorm(model, torch.from_numpy(preprocess(images, model.spec.input_size)))


def export_all(args, work: Path) -> tuple[dict[str, Path], object, list]:
    """FP32, INT8 cpu and INT8 tensorrt ONNX files of the model, and the images used."""
    from ssd_edge.data.synth import sample_images
    from ssd_edge.export.quantize import quantize_int8
    from ssd_edge.export.to_onnx import export_onnx
    from ssd_edge.runtime.image_io import list_images, read_image

    if args.calib_data:
        calibration = list_images(args.calib_data, args.calib_images, recursive=True)
        probe = [read_image(p) for p in calibration[: args.batch]]
    else:
        calibration = sample_images(args.calib_images, seed=1)
        probe = calibration[: args.batch]
    if args.weights:
        from ssd_edge.checkpoint import load_model

        model = load_model(args.weights, args.arch_of_weights)
    else:
        model = random_model(args.arch, sample_images(16, seed=2))
    paths = {"fp32": work / "model.onnx"}
    export_onnx(model, paths["fp32"], batch=args.batch)
    for flavour in ("cpu", "tensorrt"):
        paths[f"int8 {flavour}"] = work / f"model.int8-{flavour}.onnx"
        quantize_int8(paths["fp32"], paths[f"int8 {flavour}"], calibration, flavour, progress=False)
    return paths, model.spec, probe


def markdown(args, spec, rows: list[tuple], agreement: dict) -> str:
    import onnxruntime

    cpu, vnni = cpu_description()
    fp32_p50 = rows[0][2]
    lines = [
        f"# INT8 vs FP32 latency on onnxruntime CPU: {spec.arch} {spec.input_size[0]}x{spec.input_size[1]}, "
        f"batch {args.batch}",
        "",
        f"- CPU: {cpu}; VNNI: {', '.join(vnni) if vnni else 'none'}",
        f"- threads: {args.threads or 'onnxruntime default'}; onnxruntime {onnxruntime.__version__}; "
        f"Python {platform.python_version()}",
        f"- 1-minute load average when the benchmark started: {args.load:.2f} (other processes on the machine)",
        f"- weights: {args.weights or 'random (latency only; INT8 accuracy is not meaningful)'}",
        f"- calibration: {args.calib_data or 'synthetic sample images'} ({args.calib_images} images)",
        f"- timed: InferenceSession.run on a preprocessed batch in memory (network only), "
        f"{args.warmup} warm-up runs each, then {args.runs} runs each, the models taking turns in 10 blocks",
        f"- command: `python {' '.join(sys.argv)}`",
        "",
        "| model | size MB | p50 ms | p90 ms | p99 ms | vs FP32 p50 | outputs vs FP32 (max rel) | detections agree |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, size, p50, p90, p99 in rows:
        rel, agree = agreement.get(name, ("-", "-"))
        lines.append(f"| {name} | {size:.1f} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {fp32_p50 / p50:.2f}x "
                     f"| {rel} | {agree} |")
    slower = [name for name, _, p50, _, _ in rows[1:] if p50 > fp32_p50]
    lines.append("")
    if slower:
        lines.append(f"On this CPU {', '.join(slower)} {'is' if len(slower) == 1 else 'are'} slower than FP32"
                     f"{' (no VNNI: int8 dot products are emulated)' if not vnni else ''}.")
    else:
        lines.append("Both INT8 flavours are faster than FP32 on this CPU.")
    lines.append("The `tensorrt` flavour is made for TensorRT (symmetric, float stem and biases, Conv-only Q/DQ); "
                 "onnxruntime runs it but is not what it is tuned for.")
    lines.append("Accuracy (COCO mAP per format) needs trained weights and a dataset: "
                 "`ssd-eval --weights ssd.pt ssd.onnx ssd.int8.onnx --datapath DATA`.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="checkpoint (.pt) or torchvision state dict; default: random weights")
    parser.add_argument("--arch", default="mobilenetv3_ssd", help="architecture for random weights")
    parser.add_argument("--arch-of-weights", help="--arch for a torchvision state dict given as --weights")
    parser.add_argument("--calib-data", help="folder of calibration images (default: synthetic sample images)")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, help="intra-op threads (default: onnxruntime's choice)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path,
                        help="results markdown (default: benchmarks/results/int8_cpu_<arch>_b<batch>.md)")
    args = parser.parse_args(argv)
    args.load = os.getloadavg()[0]

    from ssd_edge.export.parity import compare_onnx
    from ssd_edge.runtime.preprocess import preprocess

    with tempfile.TemporaryDirectory() as work:
        paths, spec, probe = export_all(args, Path(work))
        feed = {spec.input_name: preprocess(probe, spec.input_size)}
        sessions = {name: make_session(path, args.threads) for name, path in paths.items()}
        timings = latency_ms(sessions, feed, args.warmup, args.runs)
        rows, agreement = [], {}
        for name, path in paths.items():
            p50, p90, p99 = np.percentile(timings[name], [50, 90, 99])
            rows.append((name, path.stat().st_size / 1e6, p50, p90, p99))
            if name != "fp32":
                report = compare_onnx(spec, path, paths["fp32"], probe, args.batch)
                agreement[name] = (f"{max(report.locs.max_rel, report.confs.max_rel):.3f}", f"{report.agreement:.1%}")
    text = markdown(args, spec, rows, agreement)
    out = args.out or RESULTS / f"int8_cpu_{spec.arch}_b{args.batch}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
