"""Latency of detectors, end to end and per stage, torch-free: the engine of `ssd-bench`.

What is timed, per call: BGR uint8 images already in memory in, final `Detections` out
(preprocess, host->device copy, network, device->host copy, decode + NMS), by wall clock
(`time.perf_counter`) around the whole call; the stages by a `StageTimer` handed to the
call. Image decoding from files is not timed. Every subject first runs `warmup` untimed
calls; the timed calls then alternate between the subjects in rounds, so a change of the
machine's load during the benchmark hits them all alike. Every subject gets the same
batches of the same images, in the same order.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.runtime.model_file import format_label
from ssd_edge.runtime.stage_timer import STAGES, StageTimer

PERCENTILES = (50, 90, 99)
ROUNDS = 10  # timed calls alternate between subjects in this many rounds
NOT_SEPARATE = {
    "host_to_device": "no separate input copy on this backend (CPU: none; onnxruntime CUDA: inside `network`)",
    "device_to_host": "no separate output copy on this backend (CPU: none; onnxruntime CUDA: inside `network`)",
}

Call = Callable[[Sequence[np.ndarray], StageTimer], object]


class BenchError(SSDEdgeError, ValueError):
    """A benchmark that cannot run as asked; the message says what to change."""


@dataclass
class Subject:
    """One thing to time. call(images, timer) runs it on a batch of BGR uint8 images.

    kind: 'model' (an exported model on the runtime) or 'peer' (a reference to compare
    against). note: what a reader must know about it (weights, thresholds)."""

    name: str
    call: Call
    kind: str
    format: str
    backend: str
    size_mb: float | None = None
    path: str | None = None
    note: str = ""
    close: Callable[[], None] = lambda: None

    @property
    def short_name(self) -> str:
        """The file name of a model, the name of a peer."""
        return Path(self.name).name if self.kind == "model" else self.name


@dataclass
class Measurement:
    """The timed calls of one subject at one batch size, in seconds."""

    subject: Subject
    batch: int
    latencies: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    entered: set[str] = field(default_factory=set)

    def record(self, seconds: float, timer: StageTimer) -> None:
        self.latencies.append(seconds)
        for stage in STAGES:
            self.stages[stage].append(timer.seconds[stage])
        self.entered |= timer.entered


def detector_subject(
    path: str | os.PathLike, backend: str = "auto", threads: int | None = None, name: str | None = None,
    options: dict | None = None, **overrides: float | int | None
) -> tuple[Subject, object]:
    """A Detector on `path` as a Subject, and the Detector (its `config` sets the peers' thresholds).

    name: the subject's name (default: the path; several backends on one file need their own).
    options: the backend's options, {name: value} (see runtime/backends/registry)."""
    from ssd_edge.runtime.detector import Detector

    path = Path(path)
    # ssd-bench measures at the model's own thresholds unless told otherwise (not a Detector's deployment default)
    detector = Detector(path, backend=backend, threads=threads, options=dict(options or {}), model_thresholds=True,
                        **overrides)

    def call(images: Sequence[np.ndarray], timer: StageTimer) -> object:
        return detector(list(images), timer=timer)

    subject = Subject(
        name=name or str(path), call=call, kind="model", format=format_label(path), backend=detector.backend,
        size_mb=path.stat().st_size / 1e6, path=str(path), close=detector.close,
    )
    return subject, detector


def image_batches(images: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """Batches of `batch` images taken from `images` in turn (wrapping around), one batch
    starting at each image, so that every image is used equally often."""
    if not images:
        raise BenchError("no images to benchmark with")
    count = len(images)
    return [[images[(start * batch + j) % count] for j in range(batch)] for start in range(count)]


class Progress:
    """A progress bar on stderr (tqdm when installed, else a line per round)."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.enabled, self.description, self.total, self.done = enabled, description, total, 0
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=description, unit="call", leave=False, file=sys.stderr)

    def update(self, count: int, status: str) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(count)
        elif self.enabled:
            print(f"{self.description}: {self.done}/{self.total} calls ({status})", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _timed_call(subject: Subject, images: Sequence[np.ndarray], measurement: Measurement | None) -> None:
    timer = StageTimer()
    start = time.perf_counter()
    subject.call(images, timer)
    elapsed = time.perf_counter() - start
    if measurement is not None:
        measurement.record(elapsed, timer)


def round_sizes(runs: int, rounds: int = ROUNDS) -> list[int]:
    """`runs` split into at most `rounds` nearly equal rounds."""
    rounds = max(1, min(rounds, runs))
    return [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]


def measure(
    subjects: Sequence[Subject], images: Sequence[np.ndarray], batch: int, runs: int, warmup: int,
    progress: bool = True,
) -> list[Measurement]:
    """Time every subject at one batch size: `warmup` untimed calls each, then `runs` timed
    calls each, the subjects taking turns in rounds. Call i of every subject gets batch i."""
    batches = image_batches(images, batch)
    measurements = [Measurement(subject, batch) for subject in subjects]
    bar = Progress(len(subjects) * (warmup + runs), f"batch {batch}", progress)
    try:
        for subject in subjects:
            for i in range(warmup):
                _timed_call(subject, batches[i % len(batches)], None)
            bar.update(warmup, f"warm-up {subject.short_name}")
        done = 0
        for size in round_sizes(runs):
            for subject, measurement in zip(subjects, measurements):
                for i in range(done, done + size):
                    _timed_call(subject, batches[i % len(batches)], measurement)
                bar.update(size, subject.short_name)
            done += size
    finally:
        bar.close()
    return measurements


def summarize(measurement: Measurement) -> dict:
    """Percentiles, mean and throughput of a measurement, and its stages (ms per call).

    Stage means add up, with `other` (the caller's own work between stages: argument
    checks, the lock, batching), to the mean latency."""
    latencies_ms = np.asarray(measurement.latencies) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(latencies_ms, PERCENTILES))
    mean = float(latencies_ms.mean())
    stages_mean = {s: float(np.mean(v)) * 1e3 for s, v in measurement.stages.items()}
    stages_p50 = {s: float(np.median(v)) * 1e3 for s, v in measurement.stages.items()}
    timed = measurement.entered
    subject = measurement.subject
    return {
        "name": subject.name,
        "kind": subject.kind,
        "format": subject.format,
        "backend": subject.backend,
        "size_mb": subject.size_mb,
        "batch": measurement.batch,
        "runs": len(latencies_ms),
        "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": mean,
                       "min": float(latencies_ms.min()), "max": float(latencies_ms.max())},
        "images_per_s": measurement.batch * 1e3 / mean,
        "stages_ms": {**stages_mean, "other": max(mean - sum(stages_mean.values()), 0.0)},
        "stages_p50_ms": stages_p50,
        "stages_timed": [s for s in STAGES if s in timed],
        "stages_not_separate": {s: NOT_SEPARATE.get(s, "not timed separately") for s in STAGES if s not in timed},
        "vs": {},
        "latencies_ms": [round(float(v), 4) for v in latencies_ms],
    }


def add_ratios(rows: list[dict], peer_names: dict[str, str]) -> None:
    """Each row's speed-up over each peer at the same batch size: the peer's p50 latency
    over the row's (above 1: faster than the peer). peer_names: subject name -> short label."""
    for row in rows:
        for peer_name, label in peer_names.items():
            peer = next((r for r in rows if r["name"] == peer_name and r["batch"] == row["batch"]), None)
            if peer is not None and row["name"] != peer_name:
                row["vs"][label] = peer["latency_ms"]["p50"] / row["latency_ms"]["p50"]


def overhead_ratio(row: dict) -> float | None:
    """(preprocess + decode/NMS) / network, from the stages' p50s; None without a network stage."""
    stages = row["stages_p50_ms"]
    if "network" not in row["stages_timed"] or stages["network"] <= 0:
        return None
    return (stages["preprocess"] + stages["decode_nms"]) / stages["network"]
