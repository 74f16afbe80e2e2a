"""INT8 that keeps the accuracy: the calibration method chosen by measured mAP, then the most
sensitive layers kept in float until INT8 is within a budget of FP32.

1. Every calibration method (MinMax, Percentile, Entropy) calibrates on the calibration
   images; each INT8 model is scored (pycocotools mAP@0.5 and mAP@0.5:0.95) on a held-out
   selection split, labelled images not used for calibration. The method with the
   smallest drop (the worse of the two metrics) wins.
2. If that INT8 model is over the budget, a sensitivity pass drops one layer at a time from
   the full INT8 model (that layer alone computes in float) and measures the network's
   output error against FP32 on a few dozen selection images (normalised squared error of
   `locs` and of the class probabilities). Layers are ranked by how much error their
   float fallback removes.
3. The top-ranked layers go back to float, a few more each step (1, 2, 3, 4, 6, 8, ...),
   each step scored by mAP on the selection split, until the budget is met or a quarter
   of the layers are float. The layers kept float and why are written into the model's
   quantization record (ONNX metadata) and returned for the export report.

Calibrated ranges are computed once per method (onnxruntime's calibration cache) and
reused by every variant, so a variant costs one quantization pass, not one calibration.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ssd_edge.common.atomic import atomic_path
from ssd_edge.evaluation.precision import BUDGETS, LabelledImages
from ssd_edge.export.onnx_model import batch_size, load_onnx, metadata, save, set_metadata
from ssd_edge.export.quantize import ImageSource, quantize_int8, quantized_layers
from ssd_edge.runtime.model_file import QUANTIZATION_KEY

Echo = Callable[[str], None]


DEFAULT_METHODS = ("minmax", "percentile")  # tried by default, chosen by measured mAP


@dataclass(frozen=True)
class SearchConfig:
    # Entropy is tried only when asked (--calib-method): onnxruntime's KL search is a Python loop
    # per candidate threshold, more than 15 minutes per flavour for an SSDLite on 2 cores
    methods: tuple[str, ...] = DEFAULT_METHODS
    budget: float = BUDGETS["int8"]  # the largest drop from FP32 allowed, in both metrics
    probe_images: int = 16  # selection images the sensitivity pass runs the network on
    max_float_fraction: float = 0.25  # at most this share of the quantized layers goes back to float


@dataclass
class Int8Choice:
    flavour: str
    method: str
    fp32: dict[str, float]
    scores: dict[str, dict[str, float]]  # per method, full INT8
    final: dict[str, float]
    float_layers: dict[str, str] = field(default_factory=dict)  # name -> why
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # (layer, error removed), ranked
    selection: str = ""
    budget: float = BUDGETS["int8"]

    @property
    def drop(self) -> float:
        return max(self.fp32["AP50"] - self.final["AP50"], self.fp32["AP"] - self.final["AP"])

    @property
    def within_budget(self) -> bool:
        return self.drop <= self.budget + 1e-9

    def record(self) -> dict:
        """What goes into the INT8 model's quantization record besides the flavour's own."""
        return {"selected_by": f"mAP on {self.selection}", "budget": self.budget,
                "selection_map": {"fp32": self.fp32, **{f"int8 {m}": s for m, s in self.scores.items()},
                                  "int8 final": self.final},
                "within_budget": self.within_budget}


def _drop(fp32: dict[str, float], score: dict[str, float]) -> float:
    return max(fp32["AP50"] - score["AP50"], fp32["AP"] - score["AP"])


def _text(score: dict[str, float]) -> str:
    return f"mAP@0.5 {score['AP50']:.4f}, mAP@0.5:0.95 {score['AP']:.4f}"


def output_error(reference: tuple[np.ndarray, np.ndarray], outputs: tuple[np.ndarray, np.ndarray]) -> float:
    """Normalised squared error of `locs` plus that of the class probabilities (softmax of
    `confs`): 0 for identical outputs; comparable between variants of one model."""
    def softmax(logits: np.ndarray) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    (ref_locs, ref_confs), (locs, confs) = reference, outputs
    ref_probs, probs = softmax(ref_confs), softmax(confs)
    loc_error = float(np.sum((locs - ref_locs) ** 2) / max(np.sum(ref_locs**2), 1e-12))
    prob_error = float(np.sum((probs - ref_probs) ** 2) / max(np.sum(ref_probs**2), 1e-12))
    return loc_error + prob_error


def _steps(limit: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... up to `limit` (the last step is `limit`)."""
    steps, k = [], 1
    while k < limit:
        steps.append(k)
        k = k + 1 if k < 4 else int(k * 1.5)
    return steps + [limit] if limit > 0 else []


class _Variants:
    """INT8 variants of one FP32 model and flavour, in a scratch folder: calibrated once per
    method, re-quantized with any set of float layers from the cached ranges."""

    def __init__(self, fp32: Path, flavour: str, calibration: Sequence[ImageSource], folder: Path, progress: bool):
        self.fp32, self.flavour, self.calibration = fp32, flavour, calibration
        self.folder, self.progress = folder, progress
        self.made: dict[tuple[str, frozenset[str]], Path] = {}

    def make(self, method: str, float_layers: dict[str, str] | None = None) -> Path:
        key = (method, frozenset(float_layers or {}))
        if key not in self.made:
            path = self.folder / f"variant{len(self.made)}.onnx"
            quantize_int8(self.fp32, path, self.calibration, self.flavour, progress=self.progress and not float_layers,
                          method_name=method, float_layers=float_layers, ranges_cache=self.folder / f"{method}.ranges")
            self.made[key] = path
        return self.made[key]

    def write(self, method: str, float_layers: dict[str, str], out: Path, record: dict) -> None:
        """The variant already made, written to `out` with the reasons and `record` in its
        quantization record."""
        proto = load_onnx(self.make(method, float_layers))
        entries = metadata(proto)
        previous = json.loads(entries[QUANTIZATION_KEY])
        previous["float_layers"].update(float_layers)
        set_metadata(proto, {**entries, QUANTIZATION_KEY: json.dumps({**previous, **record}, sort_keys=True)})
        with atomic_path(out) as tmp:
            save(proto, tmp)


def choose_int8(fp32_path: str | Path, out_path: str | Path, flavour: str, calibration: Sequence[ImageSource],
                selection: LabelledImages, config: SearchConfig = SearchConfig(), echo: Echo = print,
                progress: bool = True) -> Int8Choice:
    """Write to `out_path` the INT8 QDQ model of `fp32_path` (flavour `flavour`) that the
    search above picks, and say what it picked and why."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    fp32 = selection.score(fp32_path)
    echo(f"  FP32 on {selection.name}: {_text(fp32)}")
    with tempfile.TemporaryDirectory(prefix="ssd-int8-") as scratch:
        variants = _Variants(fp32_path, flavour, calibration, Path(scratch), progress)
        scores = {}
        for method in config.methods:
            scores[method] = selection.score(variants.make(method))
            drop = _drop(fp32, scores[method])
            echo(f"  INT8 {flavour}, {method} calibration: {_text(scores[method])} (drop {drop:.4f})")
        method = min(config.methods, key=lambda m: (_drop(fp32, scores[m]), -scores[m]["AP"]))
        choice = Int8Choice(flavour, method, fp32, scores, scores[method], selection=selection.name,
                            budget=config.budget)
        echo(f"  chosen: {method} calibration (smallest drop from FP32 on {selection.name})")
        if not choice.within_budget:
            _fall_back(choice, variants, fp32_path, selection, config, echo, progress)
        variants.write(method, choice.float_layers, out_path,
                       {**choice.record(), "calibration_candidates": list(config.methods)})
    return choice


def with_float_layer(qdq, fp32, layer: str):
    """A copy of the QDQ ModelProto `qdq` in which `layer` reads its float inputs (activation,
    weight and bias as in the FP32 ModelProto `fp32`) instead of their dequantized copies:
    that one layer computes in float, everything else as quantized. The sensitivity probe
    (no re-quantization, so hundreds of layers cost seconds); the model that is written is
    always re-quantized with the layer excluded."""
    import onnx

    source = next((node for node in fp32.graph.node if node.name == layer), None)
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    target = next((node for node in model.graph.node if node.name == layer), None)
    if source is None or target is None:
        raise ValueError(f"no layer named {layer!r} in both the FP32 and the INT8 model")
    weights = {t.name: t for t in fp32.graph.initializer}
    inputs = []
    for name in source.input:
        if name in weights:  # under a name of its own: the QDQ graph may already use the original one
            copy = onnx.TensorProto()
            copy.CopyFrom(weights[name])
            copy.name = f"{name}/float_fallback"
            model.graph.initializer.append(copy)
            name = copy.name
        inputs.append(name)
    del target.input[:]
    target.input.extend(inputs)
    return model


def _run(model, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    from ssd_edge.runtime.parity import onnx_outputs

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the bypassed Q/DQ nodes left unused are expected, not worth a warning each
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx_outputs("sensitivity probe", x, batch, session=session)


def _fall_back(choice: Int8Choice, variants: _Variants, fp32_path: Path, selection: LabelledImages,
               config: SearchConfig, echo: Echo, progress: bool) -> None:
    """Rank the layers by sensitivity and keep the top ones in float until within budget."""
    from tqdm import tqdm

    from ssd_edge.runtime.preprocess import preprocess

    fp32 = load_onnx(fp32_path)
    layers = quantized_layers(fp32, choice.flavour)
    qdq = load_onnx(variants.make(choice.method))
    x = preprocess(selection.images[: config.probe_images], _input_size(fp32))
    batch = batch_size(fp32) or len(x)
    reference = _run(fp32, x, batch)
    full_error = output_error(reference, _run(qdq, x, batch))
    echo(f"  over budget ({choice.drop:.4f} > {config.budget:g}): sensitivity of {len(layers)} layers on "
         f"{len(x)} images (output error of full INT8: {full_error:.4g})")
    errors = {layer: output_error(reference, _run(with_float_layer(qdq, fp32, layer), x, batch))
              for layer in tqdm(layers, desc="sensitivity", unit="layer", disable=not progress, leave=False)}
    ranked = sorted(layers, key=lambda name: errors[name])
    choice.sensitivity = [(name, full_error - errors[name]) for name in ranked]
    limit = max(1, math.floor(len(layers) * config.max_float_fraction))
    best = (choice.drop, {}, choice.final)
    for count in _steps(limit):
        kept = {name: (f"sensitivity rank {rank + 1}/{len(layers)}: output error vs FP32 {full_error:.4g} -> "
                       f"{errors[name]:.4g} with this layer alone in float; kept float until INT8 is within "
                       f"{config.budget:g} of FP32 on {selection.name}")
                for rank, name in enumerate(ranked[:count])}
        score = selection.score(variants.make(choice.method, kept))
        drop = _drop(choice.fp32, score)
        echo(f"  {count} layer(s) in float: {_text(score)} (drop {drop:.4f})")
        if drop < best[0]:
            best = (drop, kept, score)
        if drop <= config.budget + 1e-9:
            break
    choice.float_layers, choice.final = best[1], best[2]
    if not choice.within_budget:
        echo(f"  budget not met with up to {limit} layers in float; kept the closest ({len(best[1])} layer(s) float)")


def _input_size(proto) -> tuple[int, int]:
    from ssd_edge.export.onnx_model import spec_of

    return tuple(spec_of(proto).input_size)
