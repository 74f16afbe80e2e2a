"""What `ssd-bench` does: open the models (and peers), time them, add accuracy, report.

    report = run_bench(BenchOptions(models=(Path("ssd.onnx"), Path("ssd.int8.onnx")), batches=(1, 8),
                                    peers=("torchvision",)))

Torch-free unless a PyTorch peer (`--peer torchvision`, `--compare-torch`) or accuracy
(`--data`, through ssd-eval) is asked for: then torch is imported for that, lazily. What is
timed is described in `ssd_edge.bench.latency`.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ssd_edge.bench import latency as bench
from ssd_edge.bench import report as bench_report
from ssd_edge.bench.latency import BenchError, Subject
from ssd_edge.bench.machine import RUNTIME_LIBRARIES, describe
from ssd_edge.common.errors import UsageError, require
from ssd_edge.runtime.backends import registry
from ssd_edge.runtime.spec import SpecError

PEERS = ("torchvision",)
SAMPLE_IMAGES = 16  # synthetic images in the built-in source
MAX_DIR_IMAGES = 64  # images read from a --source folder
Echo = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """The arguments of ssd-bench. threads None: every logical core (os.cpu_count()).
    source: 'images' (built-in synthetic sample images) or a folder of images.
    backend: one backend or several joined by commas ('onnxruntime-cpu,openvino'): every
    model runs on each, side by side. backend_options: {backend option name: value}, e.g.
    {"precision": "bf16", "spinning": True} (see runtime/backends/registry), each given to
    the backends that take it; left out: the backend's default."""

    models: tuple[Path, ...]
    backend: str = "auto"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    batches: tuple[int, ...] = (1,)
    runs: int = 300
    warmup: int = 30
    threads: int | None = None
    source: str = "images"
    peers: tuple[str, ...] = ()
    peer_weights: Path | None = None
    compare_torch: Path | None = None
    data: Path | None = None
    score_threshold: float | None = None
    agnostic_nms: bool | None = None
    json_path: Path | None = None
    markdown_path: Path | None = None
    plot_path: Path | None = None
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        """Refuse impossible settings where they are given, before anything is loaded; each
        message names the option."""
        if not self.models:
            raise BenchError("no model to benchmark: give --model PATH (.onnx or .engine), once per model")
        if not self.backends:
            raise BenchError("--backend needs at least one backend")
        for backend in self.backends:
            if backend not in registry.CHOICES:
                raise BenchError(f"unknown backend {backend!r}; choose from {', '.join(registry.CHOICES)}")
        if len(set(self.backends)) != len(self.backends):
            raise BenchError(f"--backend names a backend twice: {self.backend}")
        _check_backend_options(self)
        for model in self.models:
            if not Path(model).is_file():
                raise BenchError(f"{model}: no such model file (--model takes an exported .onnx or .engine)")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise BenchError(f"unknown peer {', '.join(unknown)}; --peer takes {', '.join(PEERS)}")
        for flag, value, low in (("--runs", self.runs, 1), ("--warmup", self.warmup, 0),
                                 ("--threads", self.threads, 1), *(("--batch", b, 1) for b in self.batches)):
            if value is not None and value < low:
                raise BenchError(f"{flag} must be at least {low}, got {value}")
        if not self.batches:
            raise BenchError("--batch needs at least one batch size")
        for flag, path in (("--compare-torch", self.compare_torch), ("--peer-weights", self.peer_weights)):
            if path is not None and not Path(path).is_file():
                raise BenchError(f"{path}: no such file ({flag})")
        if self.peer_weights is not None and "torchvision" not in self.peers:
            raise BenchError("--peer-weights is for the torchvision peer: add --peer torchvision")
        if self.data is not None and not Path(self.data).is_dir():
            raise BenchError(f"{self.data}: no such dataset folder (--data)")
        self._check_dependencies()

    def _check_dependencies(self) -> None:
        """MissingDependency naming the extra, before anything is run (not after the benchmark)."""
        if self.plot_path is not None:
            require("matplotlib", "plot", "ssd-bench --plot")
        if self.data is not None:
            from ssd_edge.evaluation.coco import require_coco_eval

            require_coco_eval()
        if self.peers or self.compare_torch is not None:
            for package in ("torch", "torchvision"):
                require(package, "train", "ssd-bench --peer / --compare-torch")

    @property
    def thread_count(self) -> int:
        return self.threads if self.threads is not None else (os.cpu_count() or 1)

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.backend.split(",") if part.strip())

    def detector_options(self, backend: str) -> dict:
        """The backend options that apply to `backend` (the Detector's `options`)."""
        takes = _taken_by([backend])
        return {k: v for k, v in self.backend_options.items() if v is not None and k in takes}

    def subject_name(self, model: Path, backend: str) -> str:
        """The model's path, with the backend in brackets when several backends run."""
        return str(model) if len(self.backends) == 1 else f"{model} [{backend}]"


def _taken_by(backends: list[str]) -> set[str]:
    """The backend options some backend in `backends` takes (or accepts and ignores)."""
    return {o for b in backends for info in registry.candidates(b) for o in (*info.option_names, *info.ignores)}


def _check_backend_options(options: BenchOptions) -> None:
    """BenchError when a backend option is given that no backend in --backend takes, naming
    the flags of that library's own options, e.g. "--spinning is onnxruntime's: add
    onnxruntime to --backend"; a bad value is refused as its options class refuses it."""
    given = {k: v for k, v in options.backend_options.items() if v is not None}
    refused = [name for name in given if name not in _taken_by(list(options.backends))]
    if refused:
        families = registry.families_taking(refused[0]) or ["no backend"]
        own = [name for name in registry.option_fields() if registry.families_taking(name) == families[:1]]
        names = [registry.option_flag(name) for name in own or refused[:1]]
        flags = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        first = next((n for n, i in registry.BACKENDS.items() if i.family == families[0]), families[0])
        raise BenchError(f"{flags} {'is' if len(own) <= 1 else 'are'} {families[0]}'s: add {first} to --backend")
    for backend in options.backends:
        for info in registry.candidates(backend):
            try:
                registry.build_options(info, given)
            except UsageError as exc:
                raise BenchError(str(exc)) from None


def load_images(source: str) -> tuple[list[np.ndarray], str]:
    """The benchmark images (BGR uint8) and how to name their source."""
    from ssd_edge.data.synth import sample_images
    from ssd_edge.runtime.image_io import ImageError, list_images, read_image

    if source == "images":
        return sample_images(SAMPLE_IMAGES, seed=0), "built-in synthetic sample images (240-480 px)"
    try:
        found = len(list_images(source, recursive=True))
        paths = list_images(source, MAX_DIR_IMAGES, recursive=True)
    except ImageError as exc:
        raise BenchError(f"--source: {exc}") from None
    taken = f" ({len(paths)} of its {found} images, spread evenly by name)" if len(paths) < found else ""
    return [read_image(p) for p in paths], f"{source}{taken}"


def open_subjects(options: BenchOptions, images: list[np.ndarray]) -> tuple[list[Subject], dict[str, str]]:
    """The models then the peers, opened; and {peer subject name: ratio label}."""
    overrides = {"score_threshold": options.score_threshold, "agnostic_nms": options.agnostic_nms}
    subjects, reference = [], None
    try:
        for model in options.models:
            for backend in options.backends:
                subject, detector = bench.detector_subject(
                    model, backend, options.thread_count, options.subject_name(model, backend),
                    options.detector_options(backend), **overrides,
                )
                subjects.append(subject)
                if reference is None:
                    reference = detector  # the first model sets the peers' classes and thresholds
        peers = open_peers(options, reference, overrides, images) if (options.peers or options.compare_torch) else []
    except BaseException:
        for subject in subjects:
            subject.close()
        raise
    labels = {peer.name: ("torchvision" if peer.name.startswith("torchvision") else "torch") for peer in peers}
    return subjects + peers, labels


def open_peers(options: BenchOptions, reference, overrides: dict, images: list[np.ndarray]) -> list[Subject]:
    """The PyTorch peers (torch imported here), at the same thread count as the models."""
    from ssd_edge.bench import peers as bench_peers

    bench_peers.set_threads(options.thread_count)
    peers = []
    if "torchvision" in options.peers:
        weights = options.peer_weights or convertible(options.compare_torch)
        peers.append(bench_peers.torchvision_peer(reference.spec, reference.config, weights, images))
    if options.compare_torch is not None:
        peers.append(bench_peers.torch_model_peer(options.compare_torch, overrides))
    return peers


def convertible(checkpoint: Path | None) -> Path | None:
    """`checkpoint` when it can give torchvision's SSDLite320 its weights, else None."""
    if checkpoint is None:
        return None
    from ssd_edge.bench import peers as bench_peers

    try:
        bench_peers.peer_weights(checkpoint)
    except (BenchError, ValueError):
        return None
    return checkpoint


def accuracy(options: BenchOptions, echo: Echo) -> list[dict]:
    """mAP of every model on every backend (and of --compare-torch) through ssd-eval's own
    evaluation (with each backend's default device and precision)."""
    from ssd_edge.evaluation.report import evaluate_models

    echo(f"accuracy: ssd-eval on {options.data}")
    entries = []
    for n, backend in enumerate(options.backends):
        torch_too = n == 0 and options.compare_torch is not None
        paths = [str(m) for m in options.models] + ([str(options.compare_torch)] if torch_too else [])
        rows = evaluate_models(paths, str(options.data), backend=backend, progress=options.progress)
        names = {str(m): options.subject_name(m, backend) for m in options.models}
        if torch_too:
            from ssd_edge.bench.peers import torch_model_name

            names[str(options.compare_torch)] = torch_model_name(options.compare_torch)
        entries += [{"name": names.get(r["model"], r["model"]), **{k: r[k] for k in ("AP", "AP50", "AP75", "size_mb")},
                     "images": r["images"]} for r in rows]
    return entries


def subject_entry(subject: Subject, label: str | None) -> dict:
    return {"name": subject.name, "label": label or Path(subject.name).name, "kind": subject.kind,
            "format": subject.format, "backend": subject.backend, "size_mb": subject.size_mb,
            "path": subject.path, "note": subject.note}


def run_bench(options: BenchOptions, echo: Echo = print) -> dict:
    """Benchmark, print the table, write the files asked for; returns the report."""
    images, source = load_images(options.source)
    load_start = os.getloadavg()[0]
    subjects, peer_labels = open_subjects(options, images)
    try:
        machine = describe(*RUNTIME_LIBRARIES, "torch", "torchvision")
        echo(f"machine: {bench_report.machine_text(machine, options.thread_count)}")
        results = []
        for batch in options.batches:
            measured = bench.measure(subjects, images, batch, options.runs, options.warmup, options.progress)
            results += [bench.summarize(m) for m in measured]
    finally:
        for subject in subjects:
            subject.close()
    bench.add_ratios(results, peer_labels)
    report = {
        "tool": "ssd-bench",
        "machine": machine,
        "settings": {
            "command": options.command, "backend": options.backend,
            **{name: options.backend_options.get(name) for name in registry.option_fields() if name != "threads"},
            "batches": list(options.batches),
            "runs": options.runs, "warmup": options.warmup, "threads": options.thread_count, "source": source,
            "images": len(images), "score_threshold": options.score_threshold, "agnostic_nms": options.agnostic_nms,
            "data": str(options.data) if options.data else None,
            "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
        },
        "subjects": [subject_entry(s, peer_labels.get(s.name)) for s in subjects],
        "results": results,
        "accuracy": accuracy(options, echo) if options.data is not None else None,
    }
    echo(bench_report.terminal(report, machine=False))  # its machine line came first
    write_outputs(report, options, echo)
    return report


def write_outputs(report: dict, options: BenchOptions, echo: Echo) -> None:
    from ssd_edge.common.atomic import write_text_atomic

    if options.json_path is not None:
        write_text_atomic(options.json_path, bench_report.to_json(report))
        echo(f"wrote {options.json_path}")
    if options.markdown_path is not None:
        write_text_atomic(options.markdown_path, bench_report.markdown(report))
        echo(f"wrote {options.markdown_path}")
    if options.plot_path is not None:
        from ssd_edge.bench.plot import plot_latencies

        plot_latencies(report, options.plot_path)
        echo(f"wrote {options.plot_path}")


def command_line(argv: list[str] | None) -> str:
    """The command as typed, for the report."""
    return shlex.join(["ssd-bench", *(sys.argv[1:] if argv is None else argv)])


__all__ = ["BenchError", "BenchOptions", "PEERS", "SpecError", "command_line", "run_bench"]
