"""OpenVINO against onnxruntime on the CPU, end to end, with torchvision eager as the peer;
and onnxruntime's intra-op spinning on and off, with and without a competing process.

    python -m benchmarks.bench_openvino                                  # random SSDLite320 weights
    python -m benchmarks.bench_openvino --weights ssd.pt --data dataset_coco   # + mAP per backend

Part 1 (ssd-bench, one run per score threshold 0.001 and 0.3): the model's ONNX FP32 and
its INT8 QDQ copy (`ssd-export --format int8`, `cpu` flavour), each on onnxruntime's CPU
provider and on OpenVINO (CPU, f32 inference precision), side by side with torchvision's
eager ssdlite320_mobilenet_v3_large on the same weights, batch 1 and 8, subjects taking
turns in rounds (what is timed: see ssd_edge/bench/latency.py). With --data, the
score-0.001 run adds mAP@0.5 and mAP@0.5:0.95 of every model on every backend (ssd-eval).
OpenVINO is also asked for bf16 once, to record what it says on this CPU.

Part 2 (spinning): the FP32 model on onnxruntime with spinning on and with it off, batch 1,
the two Detectors taking turns in rounds; once on the machine as it is, once with a
competing process (a NumPy busy loop of one thread) running on one core.

Part 3 (preprocessing inside OpenVINO): one 480 x 640 BGR image, batch 1, FP32 on OpenVINO
f32: our NumPy/OpenCV preprocessing into the float input then the infer request, against a
copy of the model whose input is the uint8 BGR HWC image and whose first layers (OpenVINO's
PrePostProcessor: bilinear resize, BGR -> RGB, / 255) do the same; taking turns in rounds,
the largest raw-output difference between the two given.

Weights, models and the calibration folder are made as benchmarks/e2e_cpu.py makes them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.e2e_cpu import calibration_folder, describe_weights, torchvision_weights
from ssd_edge.bench import latency as bench
from ssd_edge.bench import report as bench_report
from ssd_edge.bench.machine import RUNTIME_LIBRARIES, describe
from ssd_edge.bench.machine import markdown as machine_markdown
from ssd_edge.bench.run import BenchOptions, run_bench
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.data.synth import sample_images
from ssd_edge.export.pipeline import ExportOptions, run_export

RESULTS = Path(__file__).resolve().parent / "results"
PEER = "torchvision"
BACKENDS = "onnxruntime-cpu,openvino"
COMPETITOR = """
import numpy as np, os
os.environ["OMP_NUM_THREADS"] = "1"
a = np.random.default_rng(0).random((256, 256))
while True:
    a = np.tanh(a @ a)
"""


def export_models(weights: Path, calib: Path, work: Path) -> list[Path]:
    """ONNX FP32 and its INT8 QDQ (`cpu` flavour) copy."""
    run_export(ExportOptions(weights=weights, arch="mobilenetv3_ssd", formats=("onnx", "int8"), calib_data=calib,
                             calib_images=64, int8_flavour="cpu", output=work, progress=False), echo=print)
    return [work / f"{weights.stem}.onnx", work / f"{weights.stem}.int8.onnx"]


def bf16_note(model: Path) -> str:
    """What OpenVINO says when asked for bf16 on this CPU."""
    from ssd_edge.runtime import Detector

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Detector(model, backend="openvino", precision="bf16") as detector:
            name, note = detector.backend, detector._backend.precision_note
    return f"`Detector(..., backend='openvino', precision='bf16')` here: `{name}`; {len(caught)} warning: {note}"


def spinning_rows(model: Path, threads: int, runs: int, warmup: int, loaded: bool) -> list[dict]:
    """onnxruntime with spinning on and off, batch 1, taking turns; under a competitor if `loaded`."""
    images = sample_images(16, seed=0)
    subjects = []
    for spinning in (True, False):
        subject, _ = bench.detector_subject(model, "onnxruntime-cpu", threads,
                                            name=f"spinning {'on' if spinning else 'off'}",
                                            options={"spinning": spinning})
        subjects.append(subject)
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if loaded else None
    try:
        if competitor is not None:
            time.sleep(1.0)
        measured = bench.measure(subjects, images, 1, runs, warmup, progress=False)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
        for subject in subjects:
            subject.close()
    return [bench.summarize(m) for m in measured]


def ppp_model(core, path: Path, height: int, width: int):
    """The ONNX model with OpenVINO's preprocessing in front: input uint8 (1, height, width, 3)
    BGR -> resized bilinear to the model's input, RGB, scaled to [0, 1]."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor, ResizeAlgorithm

    model = core.read_model(str(path))
    model.reshape({"images": [1, 3, *model.input("images").get_partial_shape()[2:].to_shape()]})
    ppp = PrePostProcessor(model)
    step = ppp.input("images")
    step.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR) \
        .set_spatial_static_shape(height, width)
    step.preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB) \
        .resize(ResizeAlgorithm.RESIZE_LINEAR).scale(255.0)
    step.model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


def preprocessing_rows(model: Path, threads: int, runs: int, warmup: int) -> list[str]:
    """p50 / p90 of ours (preprocess + infer) and OpenVINO's (infer with preprocessing inside)."""
    import numpy as np
    import openvino as ov

    from ssd_edge.runtime.backends.openvino_backend import OpenVinoBackend, OpenVinoOptions, openvino_core
    from ssd_edge.runtime.preprocess import preprocess

    image = sample_images(1, seed=5)[0]
    import cv2

    image = cv2.resize(image, (640, 480))
    backend = OpenVinoBackend(model, options=OpenVinoOptions(threads=threads))
    core = openvino_core()  # one Core per process: two freed in creation order unmap a signal stack
    properties = OpenVinoBackend._properties(ov, "f32", threads)
    inside = core.compile_model(ppp_model(core, model, 480, 640), "CPU", properties).create_infer_request()
    buffer = backend.input_buffer(1)

    def ours():
        preprocess([image], backend.spec.input_size, out=buffer)
        return backend._infer(buffer)

    def theirs():
        results = inside.infer({0: image[None]}, share_inputs=True, share_outputs=True)
        return tuple(results[i] for i in range(2))

    times = {"ours": [], "inside": []}
    for _ in range(warmup):
        ours(), theirs()
    for _ in range(10):
        for name, call in (("ours", ours), ("inside", theirs)):
            for _ in range(max(1, runs // 10)):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1e3)
    a, b = [o.copy() for o in ours()], [o.copy() for o in theirs()]
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    lines = ["| preprocessing | p50 ms | p90 ms |", "|---|---|---|"]
    for name, label in (("ours", "ours (OpenCV resize, NumPy) + infer"),
                        ("inside", "inside OpenVINO (PrePostProcessor)")):
        p50, p90 = np.percentile(times[name], [50, 90])
        lines.append(f"| {label} | {p50:.2f} | {p90:.2f} |")
    lines += ["", f"Largest raw-output difference between the two (locs and confs logits): {diff:.3g} "
              "(the two resizes round differently)."]
    backend.close()
    return lines


def spinning_table(rows_by_load: dict[str, list[dict]]) -> list[str]:
    """One markdown row per load and setting: latency percentiles and the network's p50."""
    def cells(load: str, row: dict) -> str:
        numbers = [row["latency_ms"][k] for k in ("p50", "p90", "p99", "mean")] + [row["stages_p50_ms"]["network"]]
        return f"| {load} | {row['name'].split()[-1]} | " + " | ".join(f"{v:.2f}" for v in numbers) + " |"

    return ["| load | spinning | p50 ms | p90 ms | p99 ms | mean ms | net p50 ms |", "|---|---|---|---|---|---|---|",
            *(cells(load, row) for load, rows in rows_by_load.items() for row in rows)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--weights", type=Path, help="as in benchmarks/e2e_cpu.py (default: random SSDLite320)")
    parser.add_argument("--data", type=Path, help="dataset: calibration images and mAP per backend (default: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", default="images", help="ssd-bench --source (default: synthetic images)")
    parser.add_argument("--skip-spinning", action="store_true")
    parser.add_argument("--only-preprocessing", action="store_true", help="only part 3, written to --out")
    parser.add_argument("--out", type=Path, default=RESULTS / "openvino_cpu.md")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.bench_openvino", *(sys.argv[1:] if argv is None else argv)])

    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = args.weights or torchvision_weights(work / "ssdlite320_random.pth")
        models = export_models(weights, calibration_folder(args.data, work), work)
        preprocessing = preprocessing_rows(models[0], args.threads, args.runs, args.warmup)
        if args.only_preprocessing:
            write_text_atomic(args.out, "\n".join([f"Command: `{command}`", "", *preprocessing]) + "\n")
            return
        for score in (0.001, 0.3):
            options = BenchOptions(
                models=tuple(models), backend=BACKENDS, batches=(1, 8), runs=args.runs, warmup=args.warmup,
                threads=args.threads, source=args.source, peers=(PEER,), peer_weights=weights,
                data=args.data if score == 0.001 else None, score_threshold=score, progress=False,
                json_path=args.out.with_name(f"{args.out.stem}_score{score:g}.json"), command=command,
            )
            report = run_bench(options)
            sections.append("#" + bench_report.markdown(report, f"Score threshold {score:g}"))
        bf16 = bf16_note(models[0])
        spinning = {} if args.skip_spinning else {
            "as is": spinning_rows(models[0], args.threads, args.runs, args.warmup, loaded=False),
            "+1 busy process": spinning_rows(models[0], args.threads, args.runs, args.warmup, loaded=True),
        }
    text = [
        "# OpenVINO and onnxruntime on the CPU, end to end, vs torchvision eager", "",
        machine_markdown(describe(*RUNTIME_LIBRARIES, "torch", "torchvision")), "",
        f"Command: `{command}`. Weights: {describe_weights(args.weights)}; ONNX FP32 and INT8 QDQ (`cpu` flavour) "
        "exported with ssd-export; the torchvision peer runs the same weights. The machine is shared with other "
        "work (see the load averages): numbers are noisy, compare rows of one run only.", "",
        f"- bf16: {bf16}", "",
        *sections,
    ]
    text += ["## Preprocessing inside OpenVINO", "", f"Batch 1, one 480 x 640 image, {args.threads} threads, "
             f"{args.warmup} warm-up + {args.runs} timed calls each, taking turns in rounds.", "", *preprocessing, ""]
    if spinning:
        text += ["## onnxruntime intra-op spinning", "",
                 f"FP32 model, batch 1, {args.threads} threads, {args.warmup} warm-up + {args.runs} timed calls each, "
                 "on and off taking turns in rounds; '+1 busy process': a one-thread NumPy loop runs meanwhile.", "",
                 *spinning_table(spinning)]
    write_text_atomic(args.out, "\n".join(text) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
