"""INT8 post-training quantization: onnxruntime's static quantization in QDQ format,
calibrated on images preprocessed exactly as the runtime does it.

Two flavours, because their consumers want different things:

- `tensorrt`: symmetric int8 activations and weights (TensorRT rejects non-zero zero
  points), per-channel weights, biases left in float (TensorRT fuses them itself), only
  Conv/MatMul/Gemm inputs quantized, and the 3-channel stem conv left in float. TensorRT
  builds it as a strongly typed network: the Q/DQ nodes say exactly what runs in int8.
  Only the inputs of those layers get Q/DQ, not their outputs (NVIDIA's placement).
- `cpu`: tuned for onnxruntime's CPU kernels: uint8 asymmetric activations, int8
  per-channel weights (depthwise convolutions need per-channel scales), int32 biases, all
  operators onnxruntime can run quantized. It pays off on plain convolutions (VGG16 SSD
  about 3x faster than FP32 on an x86 CPU with VNNI) but not on MobileNetV3 SSDLite, whose
  depthwise convolutions and float HardSwish / squeeze-excite segments leave it no faster
  than FP32 there: see benchmarks/results/int8_cpu_*.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from ssd_edge.common.atomic import atomic_path
from ssd_edge.export.onnx_model import (
    ExportError,
    batch_size,
    load_onnx,
    metadata,
    save,
    set_metadata,
    spec_of,
)
from ssd_edge.runtime.image_io import read_image
from ssd_edge.runtime.model_file import QUANTIZATION_KEY
from ssd_edge.runtime.preprocess import preprocess

ImageSource = Union[str, os.PathLike, np.ndarray]  # a file to read, or a BGR uint8 image


@dataclass(frozen=True)
class Int8Flavour:
    """How to quantize: onnxruntime `quantize_static` arguments, by name."""

    name: str
    activation_type: str  # a QuantType member name
    weight_type: str
    per_channel: bool
    symmetric_activations: bool
    quantize_bias: bool
    float_stem: bool  # leave the first 3-channel convolution in float
    op_types: tuple[str, ...] | None = None  # None: every operator onnxruntime quantizes
    # Q/DQ on the outputs of op_types too (onnxruntime's default), not only on their inputs
    quantize_outputs: bool = True


STEM_REASON = "stem: the 3-channel input convolution (flavour rule)"  # why a float stem is float

FLAVOURS: dict[str, Int8Flavour] = {
    "tensorrt": Int8Flavour(
        name="tensorrt",
        activation_type="QInt8",
        weight_type="QInt8",
        per_channel=True,
        symmetric_activations=True,
        quantize_bias=False,
        float_stem=True,
        op_types=("Conv", "ConvTranspose", "MatMul", "Gemm"),
        # NVIDIA's placement: Q/DQ on the inputs of weighted layers only. Quantizing each
        # Conv's output as well rounds the tensor twice where an activation or an Add
        # follows (0.55 points of mAP@0.5 on the sample model: benchmarks/results/qat_sample.md)
        quantize_outputs=False,
    ),
    "cpu": Int8Flavour(
        name="cpu",
        activation_type="QUInt8",
        weight_type="QInt8",
        per_channel=True,
        symmetric_activations=False,
        quantize_bias=True,
        float_stem=False,
    ),
}

# Calibration methods by the names the CLI and the reports use: MinMax keeps every value in
# range; Percentile clips the rare outliers (99.999th percentile of |x| for symmetric
# activations); Entropy picks the threshold whose int8 histogram loses least information (KL
# divergence, TensorRT's own calibrator). Which suits a model is measured, not assumed.
METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
HISTOGRAM_STRIDE = 8  # histogram methods see this many batches at a time (memory stays bounded)
# Histogram resolution: onnxruntime's entropy default (128 bins for 128 quantized bins) leaves
# the KL search a single candidate, the full range, i.e. MinMax again. TensorRT's calibrator
# uses 2048 bins; onnxruntime's KL search is a Python loop per candidate threshold (about 20
# minutes for an SSDLite on 2 cores at 2048), so 512 bins: 193 candidate thresholds per tensor.
HISTOGRAM_OPTIONS = {
    CalibrationMethod.Percentile: {"num_bins": 2048, "percentile": 99.999},
    CalibrationMethod.Entropy: {"num_bins": 512, "num_quantized_bins": 128},
}
QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # the layers a float fallback can keep


def method(name: str) -> CalibrationMethod:
    if name not in METHODS:
        raise ExportError(f"unknown calibration method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def flavour(name: str) -> Int8Flavour:
    if name not in FLAVOURS:
        raise ExportError(f"unknown INT8 flavour {name!r}; choose from {', '.join(FLAVOURS)}")
    return FLAVOURS[name]


class CalibrationImages(CalibrationDataReader):
    """Feeds onnxruntime's calibrator: each `get_next()` is {input_name: (batch, 3, H, W)
    float32}, images preprocessed as the runtime does (stretched, RGB, [0, 1]). A short
    last batch is filled up with the first images again. Shows a progress bar."""

    def __init__(
        self,
        images: Sequence[ImageSource],
        input_name: str,
        input_size: tuple[int, int],
        batch: int = 1,
        progress: bool = True,
    ) -> None:
        if len(images) == 0:
            raise ExportError("no calibration images")
        self.images, self.input_name, self.input_size, self.batch = list(images), input_name, input_size, batch
        self.progress = progress
        self._batches: Iterator[dict[str, np.ndarray]] | None = None
        self._range = (0, len(self))
        self._bar = None

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Only batches [start_index, end_index) from now on (onnxruntime's strided calibration)."""
        self._range = (start_index, min(end_index, len(self)))
        self._batches = None

    def _generate(self) -> Iterator[dict[str, np.ndarray]]:
        from tqdm import tqdm

        padded = self.images + self.images[: len(self) * self.batch - len(self.images)]
        if self._bar is None:
            self._bar = tqdm(total=len(self), desc="calibrating", unit="batch", disable=not self.progress, leave=False)
        first, last = self._range
        for start in range(first * self.batch, last * self.batch, self.batch):
            self._bar.update(1)
            chunk = [image if isinstance(image, np.ndarray) else read_image(image)
                     for image in padded[start : start + self.batch]]
            yield {self.input_name: preprocess(chunk, self.input_size).copy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._generate()
        batch = next(self._batches, None)
        if batch is None and self._range[1] >= len(self) and self._bar is not None:
            self._bar.close()
        return batch

    def rewind(self) -> None:
        self._batches = None
        self._range = (0, len(self))


class _DropPreprocessingHint(logging.Filter):
    """onnxruntime logs "Please consider to run pre-processing before quantization" on the
    root logger for every model. Its pre-processing (shape inference and fusions) changed
    neither accuracy nor latency of our simplified SSD graphs, so the hint is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_preprocessing_hint() -> Iterator[None]:
    root = logging.getLogger()
    hint = _DropPreprocessingHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def stem_conv(proto) -> str:
    """The name of the first convolution reading the 3-channel input (naming it if unnamed)."""
    weights = {t.name: t for t in proto.graph.initializer}
    for index, node in enumerate(proto.graph.node):
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            if weights[node.input[1]].dims[1] == 3:
                if not node.name:
                    node.name = f"stem_conv_{index}"
                return node.name
    raise ExportError("no convolution over the 3-channel input found to keep in float")


def quantized_layers(proto, flavour_name: str) -> list[str]:
    """The layers (Conv/MatMul/Gemm nodes, by name) the flavour quantizes: those a float
    fallback can keep. The `tensorrt` flavour's float stem is not among them."""
    chosen = flavour(flavour_name)
    stem = stem_conv(proto) if chosen.float_stem else None
    return [node.name for node in proto.graph.node
            if node.op_type in QUANTIZED_OP_TYPES and node.name and node.name != stem]


def quantize_int8(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    images: Sequence[ImageSource],
    flavour_name: str = "cpu",
    progress: bool = True,
    method_name: str = "minmax",
    float_layers: Mapping[str, str] | None = None,
    ranges_cache: str | os.PathLike | None = None,
    record_extra: Mapping[str, object] | None = None,
) -> Path:
    """Write an INT8 QDQ copy of the FP32 ONNX at `onnx_path` to `out_path` (atomically).

    images: calibration images, files or BGR uint8 arrays, fed at the model's batch size
    (1 when its batch is dynamic). method_name: minmax, percentile or entropy (METHODS).
    float_layers: {node name: why} layers left in float besides the flavour's own rule (the
    mixed-precision fallback). ranges_cache: a file keeping the calibrated ranges of this
    model and method: computed and written when missing, read (no calibration run) when
    present. The ModelSpec metadata is carried over; the flavour, method, calibration size,
    every float layer with its reason and `record_extra` are recorded under `QUANTIZATION_KEY`.
    """
    chosen = flavour(flavour_name)
    calibrate_method = method(method_name)
    proto = load_onnx(onnx_path)
    spec = spec_of(proto, onnx_path)
    reader = CalibrationImages(images, spec.input_name, spec.input_size, batch_size(proto) or 1, progress)
    kept_float = {stem_conv(proto): STEM_REASON} if chosen.float_stem else {}
    unknown = sorted(set(float_layers or {}) - {node.name for node in proto.graph.node})
    if unknown:
        raise ExportError(f"{onnx_path}: no layer named {', '.join(unknown)} to keep in float")
    kept_float.update(float_layers or {})
    extra = {
        "ActivationSymmetric": chosen.symmetric_activations,
        "WeightSymmetric": True,
        "QuantizeBias": chosen.quantize_bias,
    }
    if not chosen.quantize_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = list(chosen.op_types or ())
    out_path = Path(out_path)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out_path))
        stack.enter_context(_quiet_preprocessing_hint())
        if calibrate_method is not CalibrationMethod.MinMax:
            if ranges_cache is None:
                ranges_cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssd-ranges-"))) / "ranges"
            if not Path(ranges_cache).is_file():
                _histogram_ranges(onnx_path, chosen, calibrate_method, reader, Path(ranges_cache))
        quantize_static(
            proto,
            tmp,
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(chosen.op_types) if chosen.op_types else None,
            per_channel=chosen.per_channel,
            activation_type=getattr(QuantType, chosen.activation_type),
            weight_type=getattr(QuantType, chosen.weight_type),
            nodes_to_exclude=list(kept_float),
            calibrate_method=calibrate_method,
            extra_options=extra,
            calibration_cache_path=ranges_cache,
        )
        quantized = load_onnx(tmp)
        record = {"flavour": chosen.name, "calibration_images": len(images), "format": "QDQ",
                  "calibration": method_name, "float_layers": kept_float, **(record_extra or {})}
        set_metadata(quantized, {**metadata(proto), QUANTIZATION_KEY: json.dumps(record, sort_keys=True)})
        save(quantized, tmp)
    return out_path


def _histogram_ranges(onnx_path, chosen: Int8Flavour, calibrate_method: CalibrationMethod, reader: CalibrationImages,
                      cache: Path) -> None:
    """Percentile or entropy ranges of every tensor the flavour quantizes, written to `cache`
    (onnxruntime's calibration cache format, which quantize_static then reads). Histograms
    are collected a few batches at a time (onnxruntime merges them), so memory stays bounded;
    MinMax, reduced inside its calibration graph, does not need this."""
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    options = {"symmetric": chosen.symmetric_activations, **HISTOGRAM_OPTIONS[calibrate_method]}
    op_types = list(chosen.op_types) if chosen.op_types else sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    with tempfile.TemporaryDirectory(prefix="ssd-calibrate-") as folder:
        model_path = Path(folder) / "model.onnx"  # as quantize_static hands it to its calibrator
        onnx.save_model(load_onnx(onnx_path), str(model_path), save_as_external_data=True)
        calibrator = create_calibrator(model_path, op_types,
                                       augmented_model_path=str(Path(folder) / "augmented.onnx"),
                                       calibrate_method=calibrate_method, extra_options=options)
        stride = _stride(len(reader))
        for start in range(0, len(reader), stride):
            reader.set_range(start, start + stride)
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache)


def _stride(batches: int) -> int:
    """The largest number of batches up to HISTOGRAM_STRIDE that divides `batches`
    (onnxruntime's strided calibration needs a divisor)."""
    return next(step for step in range(min(HISTOGRAM_STRIDE, batches), 0, -1) if batches % step == 0)
