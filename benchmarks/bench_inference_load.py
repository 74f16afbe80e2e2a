"""The network on onnxruntime and OpenVINO (CPU, f32) under a fixed synthetic competing load
(issue 22 item 11).

    python -m benchmarks.bench_inference_load --quiet-first --load-kind bursty --out FILE.md

What is timed: `backend(images)` (the network alone, no pre/postprocessing) on one
320x320 image, for the seed's model (mobilenetv3_ssd, 3 classes, untrained: the network's
cost does not depend on its weights), exported to ONNX once. Wall milliseconds per call and
this process's CPU milliseconds per call, after warm-up; the backends take turns, round after
round, in one process. The competing load: `--load N` processes for the whole run, busy all
the time, each pinned to one CPU (`--load-kind busy`), or working 3 ms and sleeping 2 ms,
unpinned (`bursty`); `--quiet-first` adds the same rounds before it starts. OpenVINO's
default (ours) chooses per call between its default thread count and 1 (ThreadChoice); how
many calls ran with each is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_train_load import LOADS, cpu_model, percentile, start_load, stop_load

ADAPTIVE = "openvino, default: its thread count or 1, by latency (ours now)"


def settings(many: int) -> dict:
    """{row: (backend kind, options)}; many: OpenVINO's default thread count here (with 1, the
    default is the 1-thread row and there is no "before" row)."""
    before = {f"openvino, {many} threads always (ours before)": ("openvino", {"threads": many})} if many > 1 else {}
    return {
        "onnxruntime (default: spinning off)": ("onnxruntime", {}),
        ADAPTIVE: ("openvino", {}),
        **before,
        "openvino, 1 thread": ("openvino", {"threads": 1}),
        "onnxruntime, 1 thread": ("onnxruntime", {"threads": 1}),
    }


def export_model(folder: Path) -> Path:
    from ssd_edge.export.to_onnx import export_onnx
    from ssd_edge.models import build_model

    model = build_model("mobilenetv3_ssd", ("background", "circle", "square", "triangle")).eval()
    return export_onnx(model, folder / "ssd.onnx")


def open_backend(kind: str, options: dict, path: Path):
    if kind == "onnxruntime":
        from ssd_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeOptions

        return OnnxRuntimeBackend(path, options=OnnxRuntimeOptions(**options))
    from ssd_edge.runtime.backends.openvino_backend import OpenVinoBackend, OpenVinoOptions

    return OpenVinoBackend(path, options=OpenVinoOptions(**options))


def network(backend):
    """The network alone, as each backend's detect runs it: session.run / the infer request."""
    if hasattr(backend, "session"):
        names, feed = list(backend.spec.output_names), backend.spec.input_name
        return lambda images: backend.session.run(names, {feed: images})
    return backend._infer


def measure(backends: dict, images: np.ndarray, rounds: int, runs: int, warmup: int) -> dict:
    backends = {name: network(backend) for name, backend in backends.items()}
    results = {name: {"wall": [], "cpu": []} for name in backends}
    for backend in backends.values():
        for _ in range(warmup):
            backend(images)
    for _ in range(rounds):
        for name, backend in backends.items():
            for _ in range(runs):
                wall, cpu = time.perf_counter(), time.process_time()
                backend(images)
                results[name]["wall"].append(1000 * (time.perf_counter() - wall))
                results[name]["cpu"].append(1000 * (time.process_time() - cpu))
    return results


def calls(adaptive) -> dict | None:
    """{threads: calls} the adaptive backend has run (None: its thread count is fixed, or the
    1-thread compile failed and it went back to one count)."""
    return dict(adaptive.thread_choice.calls) if adaptive.thread_choice is not None else None


def split(adaptive, before: dict | None) -> dict | None:
    """{threads: calls} the adaptive backend ran since `before` (calls() then)."""
    now = calls(adaptive)
    if before is None or now is None:
        return None
    return {threads: count - before[threads] for threads, count in now.items()}


def table(results: dict) -> list[str]:
    base = statistics.median(next(iter(results.values()))["wall"])
    lines = ["| backend | wall ms p50 | p90 | CPU ms p50 | wall vs onnxruntime |", "|---|---|---|---|---|"]
    for name, r in results.items():
        p50 = statistics.median(r["wall"])
        lines.append(f"| {name} | {p50:.1f} | {percentile(r['wall'], 0.9):.1f} | {statistics.median(r['cpu']):.1f} | "
                     f"{p50 / base:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="timed calls per backend and round (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="default 3")
    p.add_argument("--warmup", type=int, default=3, help="default 3")
    p.add_argument("--load", type=int, default=2, help="processes competing (default 2)")
    p.add_argument("--load-kind", choices=sorted(LOADS), default="busy",
                   help="busy: always running; bursty: 3 ms of work, 2 ms of sleep (default busy)")
    p.add_argument("--quiet-first", action="store_true", help="the same rounds before the load starts")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    import onnxruntime
    import openvino

    with tempfile.TemporaryDirectory() as folder:
        path = export_model(Path(folder))
        adaptive = open_backend("openvino", {}, path)
        many = adaptive.thread_choice.many if adaptive.thread_choice else 1
        backends = {name: adaptive if name == ADAPTIVE else open_backend(kind, options, path)
                    for name, (kind, options) in settings(many).items()}
        images = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
        sections = []
        if args.quiet_first:
            before, calls_before = os.getloadavg()[0], calls(adaptive)
            quiet = measure(backends, images, args.rounds, args.runs, args.warmup)
            sections.append((f"no added load (load average {before:.1f} -> {os.getloadavg()[0]:.1f})", quiet,
                             split(adaptive, calls_before)))
        load = start_load(args.load, args.load_kind)
        try:
            time.sleep(2)
            before, calls_before = os.getloadavg()[0], calls(adaptive)
            loaded = measure(backends, images, args.rounds, args.runs, args.warmup)
            sections.append((f"{args.load} {args.load_kind} processes added (load average {before:.1f} -> "
                             f"{os.getloadavg()[0]:.1f})", loaded, split(adaptive, calls_before)))
        finally:
            stop_load(load)
        names = [backend.name for backend in backends.values()]
    lines = [
        "# The network on onnxruntime and OpenVINO under a fixed competing load",
        "",
        f"- CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs available ({os.cpu_count()} in the machine); "
        f"Linux {platform.release()}; onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}",
        f"- backends: {'; '.join(names)}; threads: as each row says (onnxruntime's default: one per physical "
        f"core; OpenVINO's: {many} here)",
        f"- competing load: {args.load} {args.load_kind} processes (`{LOADS[args.load_kind]!r}`), "
        + ("each pinned to one CPU" if args.load_kind == "busy" else "unpinned"),
        f"- {args.warmup} warm-up + {args.rounds} rounds x {args.runs} timed calls per backend, interleaved by round; "
        "one 320x320 image, the network only (onnxruntime's session.run, OpenVINO's infer request), "
        "mobilenetv3_ssd with 3 classes",
        f"- command: `python -m benchmarks.bench_inference_load --runs {args.runs} --rounds {args.rounds} "
        f"--load {args.load} --load-kind {args.load_kind}{' --quiet-first' if args.quiet_first else ''}"
        f"{' --out ' + str(args.out) if args.out else ''}`",
    ]
    for title, results, ran in sections:
        lines += ["", f"## {title}", "", *table(results)]
        if ran:
            lines += ["", f"OpenVINO's default ran {ran[many]} calls with {many} threads and {ran[1]} with 1 "
                          "(warm-up included)."]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
