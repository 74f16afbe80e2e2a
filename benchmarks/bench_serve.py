"""ssd-serve under load on loopback, beside the same Detector called directly in the same run.

    python -m benchmarks.bench_serve                     # writes benchmarks/results/serve_cpu.md
    python -m benchmarks.bench_serve --model ssd.onnx --clients 1 8 16 --requests 1000

The server: `ssd-serve` started from .venv-serve (its own environment; PyTriton needs
numpy<2) on 127.0.0.1 with --max-batch and --max-queue-delay-us as given, one instance.
The clients: N threads in this process, each with its own DetectionClient (HTTP or gRPC)
sending one JPEG file per request (the `<name>` model: the server decodes it), round robin
over 16 sample images of three sizes (640x480, 800x600, 1280x720), until --requests were
sent in all or --duration seconds passed, whichever comes first. A request's latency is
its round trip as the client sees it (encode the request, wire, queueing in Triton's
batcher, JPEG decode, preprocess, onnxruntime, decode + NMS, the answer). Batch sizes are
the executions per batch size Triton formed, from its statistics endpoint (read before and
after each run, so they include the warm-up requests). Errors: requests that failed, with the first message.

The peer: the same model in a Detector in this process, N threads sharing it (the
Detector serialises calls), each call one JPEG decoded (cv2.imdecode) and detected, as the
server does per image, run before and after the server's runs (the machine's load drifts).
Every run after --warmup requests per client, not counted.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from benchmarks.bench_tracking import export_model
from ssd_edge.bench import machine
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.data.synth import sample_images
from ssd_edge.runtime import Detector
from ssd_edge.runtime.image_io import encode_image
from ssd_edge.runtime.serve.client import DetectionClient
from tests.helpers.serve_launch import launch_server

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((640, 480), (800, 600), (1280, 720))


@dataclass
class Run:
    """One load run: what it was, its latencies (ms), errors and the batches formed."""

    label: str
    clients: int
    seconds: float
    latencies_ms: np.ndarray
    errors: list[str]
    batches: dict[int, int] = field(default_factory=dict)

    def row(self) -> str:
        p50, p90, p99 = np.percentile(self.latencies_ms, [50, 90, 99]) if len(self.latencies_ms) else [np.nan] * 3
        done = len(self.latencies_ms) + len(self.errors)
        executions = sum(self.batches.values())
        mean = sum(k * v for k, v in self.batches.items()) / executions if executions else float("nan")
        formed = ", ".join(f"{k}: {v}" for k, v in sorted(self.batches.items())) or "-"
        return (f"| {self.label} | {self.clients} | {done} | {done / self.seconds:.1f} | {p50:.1f} | {p90:.1f} | "
                f"{p99:.1f} | {len(self.errors)} | {formed} | {mean:.2f} |")


def run_load(label: str, clients: int, open_call: Callable[[], tuple[Callable, Callable]], payload: list,
             requests: int, duration_s: float, warmup: int) -> Run:
    """`clients` threads, each `open_call()` -> (call(item), close()), sending `payload`
    round robin until `requests` in all or `duration_s` (after `warmup` calls each)."""
    tickets = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    clock = [0.0, 0.0]  # start, deadline: set as the last thread reaches the barrier

    def start_clock() -> None:
        clock[0] = time.perf_counter()
        clock[1] = clock[0] + duration_s

    ready = threading.Barrier(clients + 1, action=start_clock)

    def worker(index: int) -> None:
        call, close = open_call()
        try:
            for i in range(warmup):
                call(payload[(index + i) % len(payload)])
        finally:
            ready.wait()
        try:
            while (ticket := next(tickets)) < requests and time.perf_counter() < clock[1]:
                t0 = time.perf_counter()
                try:
                    call(payload[ticket % len(payload)])
                    failed = None
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    failed = f"{type(exc).__name__}: {exc}"
                ms = (time.perf_counter() - t0) * 1e3
                with lock:
                    latencies.append(ms) if failed is None else errors.append(failed)
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    for thread in threads:
        thread.join(duration_s + 120)
    return Run(label, clients, time.perf_counter() - clock[0], np.array(latencies), errors)


def serve_version(python: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('nvidia-pytriton'), m.version('onnxruntime'))"
    pytriton, ort = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return f"nvidia-pytriton {pytriton} (tritonserver inside), onnxruntime {ort} in the server's environment"


def server_runs(args: argparse.Namespace, model: Path, payload: list[bytes], log: Path) -> list[Run]:
    options = ["--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.max_queue_delay_us)]
    options += ["--threads", str(args.threads)] if args.threads else []
    runs = []
    with launch_server(args.serve_python, model, log, *options, timeout_s=180, cwd=ROOT) as server:
        for protocol in args.protocols:
            for clients in args.clients:
                def open_call(address=getattr(server, protocol)):
                    client = DetectionClient(address)
                    return client, client.close

                with DetectionClient(server.http) as probe:
                    before = probe.statistics()
                    run = run_load(f"ssd-serve {protocol}", clients, open_call, payload, args.requests,
                                   args.duration, args.warmup)
                    after = probe.statistics()
                run.batches = {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}
                print(run.row(), flush=True)
                runs.append(run)
    return runs


def direct_runs(args: argparse.Namespace, model: Path, payload: list[bytes], when: str) -> list[Run]:
    runs = []
    with Detector(model, threads=args.threads) as detector:
        def open_call():
            def call(data):
                return detector(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))

            return call, (lambda: None)

        for clients in args.clients:
            runs.append(run_load(f"Detector, direct ({when})", clients, open_call, payload, args.requests,
                                 args.duration, args.warmup))
            print(runs[-1].row(), flush=True)
    return runs


def markdown(runs: list[Run], args: argparse.Namespace, model_text: str, versions_text: str, command: str) -> str:
    what = __doc__.split("\n\n", 2)[2].strip()
    table = ["| what | clients | requests | requests/s | p50 ms | p90 ms | p99 ms | errors | batches formed "
             "(images: executions) | mean batch |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    return "\n".join([
        "# ssd-serve on loopback, beside the Detector called directly", "",
        machine.markdown(machine.describe("onnxruntime", "cv2", "tritonclient")),
        f"- Server: {versions_text}", "",
        f"Command: `{command}`", "",
        f"Model: {model_text}. Server: --max-batch {args.max_batch}, --max-queue-delay-us "
        f"{args.max_queue_delay_us}, 1 instance, onnxruntime threads {args.threads or 'default'}; "
        f"each run at most {args.requests} requests or {args.duration:g} s, after {args.warmup} warm-up "
        "requests per client.", "",
        "What is timed:", what, "",
        *table, *(run.row() for run in runs), "",
        "Server, clients and the direct peer share this machine's cores, so with more clients "
        "the clients' own work (threads, serialising requests) competes with the server. "
        "Timings on a shared machine are noisy: compare rows of one run, not across runs.", "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: mobilenetv3_ssd 320 exported here)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--protocols", nargs="+", choices=("http", "grpc"), default=["http", "grpc"])
    parser.add_argument("--requests", type=int, default=200, help="most requests per run (all clients)")
    parser.add_argument("--duration", type=float, default=30.0, help="most seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="requests per client before timing")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (server and direct)")
    parser.add_argument("--serve-python", type=Path, default=ROOT / ".venv-serve" / "bin" / "python")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_cpu.md")
    args = parser.parse_args(argv)
    if not args.serve_python.is_file():
        raise SystemExit(f"{args.serve_python}: no ssd-serve environment; `make setup` creates it")
    images = sample_images(16, seed=5)
    payload = [encode_image(cv2.resize(image, SIZES[i % len(SIZES)]), ".jpg", f"sample {i}")
               for i, image in enumerate(images)]
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or export_model(Path(folder))
        model_text = (f"`{args.model}`" if args.model else
                      "mobilenetv3_ssd 320x320 ONNX FP32, random weights with BatchNorm statistics of sample images")
        runs = direct_runs(args, model, payload, "before")
        runs += server_runs(args, model, payload, Path(folder) / "server.log")
        runs += direct_runs(args, model, payload, "after")
    for run in runs:
        for message in run.errors[:1]:
            print(f"{run.label}, {run.clients} clients: first error: {message}")
    command = shlex.join(["python", "-m", "benchmarks.bench_serve", *(argv if argv is not None else sys.argv[1:])])
    write_text_atomic(args.out, markdown(runs, args, model_text, serve_version(args.serve_python), command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
