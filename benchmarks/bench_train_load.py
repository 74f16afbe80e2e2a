"""Training steps under a fixed synthetic competing load: today's default threads and wait
policy against ssd-train's (issue 22 item 11).

    python -m benchmarks.bench_train_load --out benchmarks/results/train_under_load.md

What is timed: one optimiser step of the seed's model (mobilenetv3_ssd, 320x320, the sample
data's 3 classes), a batch of 5 (forward, MultiBoxLoss, backward, AdamW step), on random
images with fixed targets: wall seconds and this process's CPU seconds per step, after one
warm-up step. Each setting runs in its own process (OpenMP reads its wait policy when torch
is loaded), and the settings take turns, round after round, so they share the machine's
moods. The competing load: `--load N` busy-loop processes (`while True: pass`), each pinned
to one CPU (round-robin), started before the first round and stopped after the last.

Settings:
- default: what `python train_ssd.py` did before: torch's default threads (one per CPU) and
  OpenMP's default wait policy (spin, then sleep);
- passive: the same threads, OMP_WAIT_POLICY=PASSIVE;
- auto: ssd-train's default now: OMP_WAIT_POLICY=PASSIVE and `--threads auto`
  (ssd_edge.training.threads.choose_threads: free CPUs from affinity and the load average);
- one: one thread, OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = ("default", "passive", "auto", "one")
REPO = Path(__file__).resolve().parents[1]


def child(setting: str, steps: int) -> None:
    """Run in a fresh process with the environment `parent` gave it: time `steps` steps."""
    import numpy as np
    import torch

    from ssd_edge.models import build_model
    from ssd_edge.training.loss import MultiBoxLoss
    from ssd_edge.training.matching import target_encoder
    from ssd_edge.training.threads import choose_threads

    if setting == "auto":
        torch.set_num_threads(choose_threads("auto")[0])
    elif setting == "one":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("mobilenetv3_ssd", ("background", "circle", "square", "triangle"))
    model.train()
    encode = target_encoder(model.priors_cxcywh.cpu().numpy(), "hungarian_iou", model.spec.variances)
    rng = np.random.default_rng(0)
    locs, labels = [], []
    for _ in range(5):
        xy = rng.uniform(0, 200, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(40, 110, (3, 2))], 1).astype(np.float32) / 320
        target = encode(boxes, np.array([1, 2, 3]))
        locs.append(torch.from_numpy(np.asarray(target[0], np.float32)))
        labels.append(torch.from_numpy(np.asarray(target[1], np.int64)))
    x = torch.rand(5, 3, 320, 320)
    target_locs, target_labels = torch.stack(locs), torch.stack(labels)
    criterion = MultiBoxLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    walls, cpus = [], []
    for step in range(steps + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        out_locs, logits = model(x)
        loss, _ = criterion(out_locs, logits, target_locs, target_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:  # the first is warm-up
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    print(json.dumps({"setting": setting, "threads": torch.get_num_threads(),
                      "policy": os.environ.get("OMP_WAIT_POLICY", "OpenMP default"), "wall": walls, "cpu": cpus}))


def environment(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if setting != "default":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


LOADS = {
    "busy": "while True: pass",
    # work 3 ms, sleep 2 ms: a process that wakes up often (a camera reader, another detector)
    "bursty": "import time\nwhile True:\n    t = time.perf_counter()\n    while time.perf_counter() - t < 0.003: pass\n"
              "    time.sleep(0.002)",
}
"""The competing processes' code: `busy` holds a CPU all the time; `bursty` works 3 ms and
sleeps 2 ms, so the scheduler hands the cores back and forth."""


def start_load(processes: int, kind: str = "busy") -> list[subprocess.Popen]:
    """`processes` processes running LOADS[kind]: busy ones each pinned to one CPU
    (round-robin), bursty ones where the scheduler puts them, as real programs are."""
    cpus = sorted(os.sched_getaffinity(0))
    load = []
    for i in range(processes):
        p = subprocess.Popen([sys.executable, "-c", LOADS[kind]])
        if kind == "busy":
            os.sched_setaffinity(p.pid, {cpus[i % len(cpus)]})
        load.append(p)
    return load


def stop_load(load: list[subprocess.Popen]) -> None:
    for p in load:
        p.terminate()
    for p in load:
        p.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting and round (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over the settings (default 2)")
    p.add_argument("--load", type=int, default=2, help="busy-loop processes competing (default 2)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, from " + ", ".join(SETTINGS))
    p.add_argument("--out", type=Path, help="write the Markdown table here")
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.steps)
        return 0
    settings = args.settings.split(",")
    results = {s: {"wall": [], "cpu": [], "threads": set(), "policy": ""} for s in settings}
    loads = [os.getloadavg()[0]]
    load = start_load(args.load)
    began = time.time()
    try:
        for round_index in range(args.rounds):
            for setting in settings:
                done = subprocess.run([sys.executable, __file__, "--child", setting, "--steps", str(args.steps)],
                                      env=environment(setting), capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                result = results[setting]
                result["wall"] += row["wall"]
                result["cpu"] += row["cpu"]
                result["threads"].add(row["threads"])
                result["policy"] = row["policy"]
                loads.append(os.getloadavg()[0])
                print(f"round {round_index + 1} {setting}: threads {row['threads']}, "
                      f"wall {', '.join(f'{w:.2f}' for w in row['wall'])} s, load {loads[-1]:.1f}", flush=True)
            if args.out:  # after every round: a run cut short keeps what it measured
                args.out.write_text("\n".join(report(args, results, loads, time.time() - began)) + "\n")
    finally:
        stop_load(load)
    lines = report(args, results, loads, time.time() - began)
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


def report(args, results: dict, loads: list[float], seconds: float) -> list[str]:
    base = statistics.median(results["default"]["wall"]) if "default" in results else None
    lines = [
        "# Training under a fixed competing load: threads and OpenMP wait policy",
        "",
        f"- CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs available to the process "
        f"({os.cpu_count()} in the machine); Linux {platform.release()}",
        f"- competing load added: {args.load} busy-loop processes (`while True: pass`), each pinned to one CPU",
        f"- 1-minute load average: {loads[0]:.1f} before the added load; during the rounds "
        f"{min(loads[1:]):.1f}-{max(loads[1:]):.1f} (other engineers' work on the same machine included)",
        f"- {args.rounds} rounds x {args.steps} timed steps per setting (after 1 warm-up step each), "
        f"settings interleaved; {seconds:.0f} s in all",
        "- step: mobilenetv3_ssd 320x320, 3 classes, batch of 5: forward, MultiBoxLoss, backward, AdamW",
        f"- command: `python -m benchmarks.bench_train_load --steps {args.steps} --rounds {args.rounds} "
        f"--load {args.load}{' --out ' + str(args.out) if args.out else ''}`",
        "",
        "| setting | threads | OMP_WAIT_POLICY | wall s/batch p50 | p90 | CPU s/batch p50 | wall vs default |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting, r in results.items():
        if not r["wall"]:
            continue
        p50 = statistics.median(r["wall"])
        ratio = f"{base / p50:.2f}x faster" if base else "-"
        lines.append(f"| {setting} | {', '.join(map(str, sorted(r['threads'])))} | {r['policy']} | {p50:.2f} | "
                     f"{percentile(r['wall'], 0.9):.2f} | {statistics.median(r['cpu']):.2f} | {ratio} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
