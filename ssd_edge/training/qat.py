"""Quantization-aware fine-tuning (QAT) for TensorRT's explicit INT8: fake quantization
where the `tensorrt` PTQ flavour (export/quantize.py) puts its Q/DQ pairs on a Conv, so the
network learns to live with the rounding its INT8 engine will do.

What is quantized, as the `tensorrt` flavour does it: every Conv2d but the stem (the first
convolution over the 3-channel image, which the flavour keeps float) gets
- its weight fake-quantized per output channel, symmetric int8, the scale from the weight's
  own amax (max |w| per channel, recomputed at every step, so it follows the weights);
- its input fake-quantized per tensor, symmetric int8, with an amax calibrated once on a few
  batches of training images before fine-tuning (the 99.999th percentile of |x| from a
  2048-bin histogram, the flavour's percentile calibration; or the max) and then kept fixed,
  as NVIDIA's QAT recipe for TensorRT does: the weights adapt to the ranges, the ranges
  stay what calibration measured;
- its bias left float (TensorRT fuses it).
BatchNorm is folded into the convolution before any of this (TensorRT, and our ONNX export,
fold it too), so the weight that is fake-quantized here is the one the engine quantizes.

The fake quantization is PyTorch's own (`torch.fake_quantize_per_tensor_affine` /
`torch.fake_quantize_per_channel_affine`, straight-through gradients), which torch's ONNX
exporter writes as QuantizeLinear/DequantizeLinear pairs: the export needs no other library.

A QAT model differs from a float one in its modules (folded BatchNorms, QuantConv2d), so its
checkpoint says so under QAT_KEY (ssd_edge/checkpoint.py, with the other checkpoint keys);
`ssd_edge.checkpoint` rebuilds the same structure with `prepare_qat` before loading the
weights and ranges.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ssd_edge.common.errors import SSDEdgeError

QMIN, QMAX = -128, 127  # int8, zero point 0: the range torch's exporter writes as int8 Q/DQ
CALIBRATIONS = ("percentile", "max")
PERCENTILE = 99.999  # the tensorrt flavour's percentile (export/quantize.py HISTOGRAM_OPTIONS)
BINS = 2048


class QatError(SSDEdgeError, ValueError):
    """A model that cannot be prepared for QAT (a BatchNorm with no convolution before it, no
    stem, no readable image to calibrate on)."""


@dataclass(frozen=True)
class QatRecord:
    """What makes a model a QAT one: the stem kept float, the quantized convolutions (module
    names), how their input ranges were calibrated and on how many images."""

    stem: str
    layers: tuple[str, ...]
    calibration: str = "percentile"
    calibration_images: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data: dict) -> "QatRecord":
        return cls(str(data["stem"]), tuple(data["layers"]), str(data.get("calibration", "percentile")),
                   int(data.get("calibration_images", 0)))


def fake_quantize_input(x: Tensor, amax: Tensor) -> Tensor:
    """Per-tensor symmetric int8 fake quantization of an activation (scale amax / 127)."""
    scale = (amax.float() / QMAX).clamp_min(torch.finfo(torch.float32).tiny).reshape(1)
    zero_point = torch.zeros(1, dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, QMIN, QMAX).to(x.dtype)


def weight_scale(weight: Tensor) -> Tensor:
    """Per-output-channel scale of a symmetric int8 weight: max |w| / 127 (1 for a zero channel)."""
    amax = weight.detach().abs().flatten(1).amax(dim=1)
    return torch.where(amax > 0, amax / QMAX, torch.ones_like(amax)).float()


def fake_quantize_weight(weight: Tensor) -> Tensor:
    """Per-output-channel symmetric int8 fake quantization of a convolution weight (O, I, kH, kW)."""
    scale = weight_scale(weight)
    zero_point = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, QMIN, QMAX)


class QuantConv2d(nn.Conv2d):
    """A Conv2d whose input (per tensor, fixed calibrated `input_amax`) and weight (per
    output channel, amax from the weight) are fake-quantized to symmetric int8; the bias
    stays float. `fake_quant = False` runs it as the plain convolution (calibration, the
    FP32 export of a QAT model). It is an nn.Conv2d, so module and ONNX node names stay.
    `input_amax` is 0 until `calibrate_inputs` (or a QAT checkpoint) sets it; it is not
    checked at each call, which would synchronise a GPU once per layer and step."""

    fake_quant: bool = True

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "QuantConv2d":
        quant = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        quant.load_state_dict(conv.state_dict(), strict=False)
        return quant

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("input_amax", torch.zeros((), device=self.weight.device))

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant:
            return super().forward(x)
        return self._conv_forward(fake_quantize_input(x, self.input_amax), fake_quantize_weight(self.weight),
                                  self.bias)


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every BatchNorm2d into the Conv2d just before it in the same Sequential (the
    BatchNorm becomes an Identity, the convolution gains its bias); returns how many. A
    BatchNorm that follows no convolution is a QatError naming it."""
    folded = 0
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (_, first), (name, second) in zip(children, children[1:]):
            if isinstance(second, nn.BatchNorm2d) and isinstance(first, nn.Conv2d):
                fused = fuse_conv_bn_eval(first.eval(), second.eval())
                first.weight, first.bias = fused.weight, fused.bias
                setattr(parent, name, nn.Identity())
                folded += 1
    left = [name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]
    if left:
        raise QatError(f"cannot fold BatchNorm {left[0]} into a convolution (none directly before it)")
    return folded


def stem_name(model: nn.Module) -> str:
    """The first convolution over the 3-channel image: the `tensorrt` flavour keeps it float."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name
    raise QatError("no convolution over the 3-channel input found")


def prepare_qat(model: nn.Module) -> QatRecord:
    """Make `model` a QAT model in place: BatchNorms folded, every Conv2d but the stem a
    QuantConv2d (input ranges not calibrated yet: `calibrate_inputs`). Returns its record."""
    stem = stem_name(model)
    fold_batchnorms(model)
    layers = []
    for name, module in list(model.named_modules()):
        if type(module) is nn.Conv2d and name != stem:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, QuantConv2d.from_conv(module))
            layers.append(name)
    model.qat_record = QatRecord(stem, tuple(layers))
    return model.qat_record


def quant_convs(model: nn.Module) -> dict[str, QuantConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantConv2d)}


def qat_record(model: nn.Module) -> QatRecord | None:
    """The record of a QAT model (set by `prepare_qat`, `start_qat` or its checkpoint); None for a float one."""
    return getattr(model, "qat_record", None)


@contextlib.contextmanager
def fake_quant_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run a QAT model as the float network it fine-tunes (its FP32 export, calibration)."""
    convs = list(quant_convs(model).values())
    for conv in convs:
        conv.fake_quant = False
    try:
        yield model
    finally:
        for conv in convs:
            conv.fake_quant = True


@torch.no_grad()
def calibrate_inputs(model: nn.Module, batches: Iterable[Tensor], method: str = "percentile",
                     forward=None) -> None:
    """Set every QuantConv2d's `input_amax` from `batches` (images as the model takes them):
    "max" is the largest |x| seen; "percentile" the PERCENTILE-th percentile of |x| from a
    BINS-bin histogram over [0, max] (a second pass over the same batches).

    Both are taken where the activation is (a GPU's activations never cross to the CPU): the
    running max and the bin counts (int64, exact) stay on its device until the end, and only
    they, a scalar and BINS counts per layer, come to the CPU."""
    if method not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {method!r}; choose from {', '.join(CALIBRATIONS)}")
    batches = list(batches)
    convs = quant_convs(model)
    forward = forward or model.raw
    amax: dict[str, Tensor] = {}  # on the activations' device, from the first batch
    hist: dict[str, Tensor] = {}
    top: dict[str, float] = {}  # each layer's max, the histogram's upper edge (read once, after the first pass)

    def observe(pass_index: int):
        def hook(module, args, name):
            x = args[0].detach().abs().float()
            if pass_index == 0:
                seen = x.amax()
                amax[name] = torch.maximum(amax[name], seen) if name in amax else seen
            else:
                counts = torch.histc(x, BINS, 0.0, top[name]).long()  # histc's counts are whole numbers
                hist[name] = hist[name] + counts if name in hist else counts
        return hook

    was_training = model.training
    model.eval()
    try:
        with fake_quant_disabled(model):
            for pass_index in range(1 if method == "max" else 2):
                handles = [conv.register_forward_pre_hook(
                    lambda module, args, name=name, hook=observe(pass_index): hook(module, args, name))
                    for name, conv in convs.items()]
                try:
                    for images in batches:
                        forward(images)
                finally:
                    for handle in handles:
                        handle.remove()
                if pass_index == 0:
                    top.update((name, float(value)) for name, value in amax.items())
    finally:
        model.train(was_training)
    for name, conv in convs.items():
        value = top.get(name, 0.0)  # 0: no batch reached the layer
        if method == "percentile":
            counts = hist[name].cpu() if name in hist else torch.zeros(BINS, dtype=torch.int64)
            value = _percentile(counts.double(), value)
        conv.input_amax.fill_(value if value > 0 else 1.0)


def _percentile(histogram: Tensor, top: float) -> float:
    """The PERCENTILE-th percentile of a histogram of BINS bins over [0, top] (upper bin edge)."""
    total = float(histogram.sum())
    if total == 0 or top == 0:
        return top
    index = int(torch.searchsorted(histogram.cumsum(0), torch.tensor(total * PERCENTILE / 100, dtype=torch.float64)))
    return top * min(index + 1, BINS) / BINS


CALIBRATION_IMAGES = 32  # training images the input ranges are calibrated on
CALIBRATION_BATCH = 8


def start_qat(model: nn.Module, image_paths: Iterable, method: str = "percentile",
              count: int = CALIBRATION_IMAGES) -> QatRecord:
    """Make a trained float `model` a QAT model (`prepare_qat`) and calibrate its input
    ranges on the first `count` readable `image_paths`, preprocessed as the runtime does
    (stretched to the input size, RGB, [0, 1]: what the engine will see). Returns the record
    its checkpoint keeps."""
    from ssd_edge.runtime.image_io import ImageError, read_image
    from ssd_edge.runtime.preprocess import preprocess

    images = []
    for path in image_paths:
        try:
            images.append(read_image(path))
        except ImageError:
            continue  # an unreadable image is skipped here as training skips it
        if len(images) == count:
            break
    if not images:
        raise QatError("no readable training image to calibrate the QAT input ranges on")
    size = model.spec.input_size
    batches = [torch.from_numpy(preprocess(images[i:i + CALIBRATION_BATCH], size))
               for i in range(0, len(images), CALIBRATION_BATCH)]
    record = prepare_qat(model)
    calibrate_inputs(model, batches, method)
    model.qat_record = QatRecord(record.stem, record.layers, method, len(images))
    return model.qat_record
