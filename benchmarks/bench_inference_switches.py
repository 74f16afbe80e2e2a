"""How the backends' threads wait between layers: context switches per call (issue 22 item 11).

    python -m benchmarks.bench_inference_switches --calls 15 --load 2

For each setting, the network on one 320x320 image (as in bench_inference_load), 3 rounds x
`--calls` calls, interleaved; per call: wall ms, this process's CPU ms, and the voluntary and
involuntary context switches summed over the process's threads (/proc/self/task/*/status).
A voluntary switch is a thread going to sleep (a futex wait); an involuntary one is a thread
taken off its core while runnable: preempted, or giving the core away with sched_yield.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_inference_load import export_model, network, open_backend
from benchmarks.bench_train_load import start_load, stop_load

SETTINGS = {
    "onnxruntime, 2 threads (default)": ("onnxruntime", {}),
    "openvino, 2 threads unpinned (default before ThreadChoice)": ("openvino", {"pinning": False, "threads": 2}),
    "openvino, 2 threads unpinned, partitioner auto": ("openvino", {"pinning": False, "partitioner": "auto",
                                                                    "threads": 2}),
    "openvino, 1 thread": ("openvino", {"pinning": False, "threads": 1}),
}


def switches() -> tuple[int, int]:
    """(voluntary, involuntary) context switches, summed over this process's threads."""
    voluntary = involuntary = 0
    for status in glob.glob(f"/proc/{os.getpid()}/task/*/status"):
        try:
            for line in Path(status).read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "voluntary_ctxt_switches":
                    voluntary += int(value)
                elif key == "nonvoluntary_ctxt_switches":
                    involuntary += int(value)
        except FileNotFoundError:  # a thread that ended
            pass
    return voluntary, involuntary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=15, help="calls per setting and round (default 15)")
    p.add_argument("--load", type=int, default=2, help="busy-loop processes competing (default 2)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = export_model(Path(folder))
        runs = {name: network(open_backend(kind, options, path)) for name, (kind, options) in SETTINGS.items()}
        images = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
        for run in runs.values():
            for _ in range(5):
                run(images)
        totals = {name: [0, 0, 0.0, 0.0] for name in runs}
        load = start_load(args.load)
        try:
            time.sleep(2)
            before = os.getloadavg()[0]
            for _ in range(3):
                for name, run in runs.items():
                    (v0, n0), wall, cpu = switches(), time.perf_counter(), time.process_time()
                    for _ in range(args.calls):
                        run(images)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    v1, n1 = switches()
                    for i, value in enumerate((v1 - v0, n1 - n0, wall, cpu)):
                        totals[name][i] += value
        finally:
            stop_load(load)
    calls = 3 * args.calls
    print(f"{args.load} busy-loop processes added (load average {before:.1f} -> {os.getloadavg()[0]:.1f})\n")
    print("| setting | wall ms | CPU ms | voluntary switches | involuntary switches |\n|---|---|---|---|---|")
    for name, (voluntary, involuntary, wall, cpu) in totals.items():
        print(f"| {name} | {1000 * wall / calls:.1f} | {1000 * cpu / calls:.1f} | {voluntary / calls:.1f} | "
              f"{involuntary / calls:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
