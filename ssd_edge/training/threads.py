"""CPU threads for training on a machine shared with other work.

PyTorch's CPU kernels run on OpenMP (libgomp in the pip wheels), one thread per core, and an
idle OpenMP thread spins (busy-waits) before it sleeps. That is right on an idle machine and
a collapse on a busy one: every parallel region waits for its slowest thread, so when other
processes hold the cores, the threads that did get a core burn their slice spinning for one
that did not, and a step slows far more than the load explains (issue 22 item 11: the seed's
command 10x slower at load 6-7 on 2 cores with 2 threads, against 1 thread under the same load).

Two remedies, both here:
- wait passively (`OMP_WAIT_POLICY=PASSIVE`): a thread with nothing to do sleeps at once and
  gives its core back. libgomp reads this when it is loaded, so it must be in the environment
  before `import torch`: the training commands set it first thing (`prefer_passive_waiting`),
  unless the user set it.
- `--threads auto` (the default) takes the CPUs this process may run on (its affinity mask
  and any cgroup CPU quota), split over the processes of a torchrun node. With passive waiting
  that is all it needs: a thread with no core sleeps instead of stalling its partners, and two
  passive threads beat one under a heavy competing load (benchmarks/results/train_under_load.md:
  2.7 against 3.8 s per batch at load 3.5-13). Only when OpenMP spins (the user chose
  OMP_WAIT_POLICY=ACTIVE, or torch was loaded before passive waiting could be set) does auto
  also leave out the CPUs that other work holds (the 1-minute load average, less our own
  threads). An explicit `--threads N`, or OMP_NUM_THREADS in the environment, is taken as it is.

Torch-free at import, so that the command line can call `prefer_passive_waiting` before torch
is imported.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_POLICY = "OMP_WAIT_POLICY"
AUTO = "auto"


def prefer_passive_waiting(environ: dict | None = None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose a policy; True when it now holds
    for this process (False when torch, and with it OpenMP, is already loaded: too late)."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules and WAIT_POLICY not in environ:
        return False
    environ.setdefault(WAIT_POLICY, "PASSIVE")
    return waits_passively(environ)


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup v2 quota allows (cpu.max "200000 100000" -> 2.0), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(float(quota) / float(period), 1.0)
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.floor(limit)) if limit is not None else cpus)


def auto_threads(cpus: int, load: float, own: float = 0.0, processes: int = 1, passive: bool = True) -> int:
    """Threads per process for `processes` training processes on `cpus` CPUs when the
    1-minute load average is `load`, `own` of it ours (our threads already running). Passive
    waiting: the CPUs, shared out. Spinning: only the CPUs the others leave free, rounded,
    shared out. At least 1 and at most the CPUs."""
    free = float(cpus)
    if not passive:
        free = max(1.0, cpus - max(0.0, load - own))
    return max(1, min(cpus, int(free + 0.5)) // max(1, processes))


def waits_passively(environ: dict | None = None) -> bool:
    """Whether OpenMP's idle threads sleep in this process (OMP_WAIT_POLICY=PASSIVE)."""
    environ = os.environ if environ is None else environ
    return environ.get(WAIT_POLICY, "").upper() == "PASSIVE"


def choose_threads(requested: str | int | None, own: float = 0.0) -> tuple[int, str]:
    """(threads, why) for --threads `requested`: a number as given; 'auto' or None from
    OMP_NUM_THREADS when the user set it, else from the CPUs (see auto_threads)."""
    if requested not in (None, AUTO):
        return int(requested), "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) >= 1:
        return int(env), "OMP_NUM_THREADS"
    cpus = available_cpus()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    passive = waits_passively()
    threads = auto_threads(cpus, load, own, processes, passive)
    split = f", {processes} processes" if processes > 1 else ""
    waiting = "passive waiting" if passive else "spinning"
    return threads, f"auto: {cpus} CPUs, load {load:.1f}, {waiting}{split}"

