"""The INT8 QDQ ONNX of a quantization-aware fine-tuned model (ssd_edge/training/qat.py).

torch's exporter writes each fake quantization as a QuantizeLinear/DequantizeLinear pair:
on every quantized Conv's input (per tensor) and weight (per output channel), symmetric
int8 with zero points 0, the stem and the biases float, exactly the Conv inputs and weights
the `tensorrt` PTQ flavour quantizes (export/quantize.py). No calibration is run: the ranges
are the model's own. The file records its ModelSpec and, under QUANTIZATION_KEY, that it is
the tensorrt flavour from QAT, so `ssd-export --format engine --int8` builds it as it is and
onnxruntime (ssd-eval, the Detector) runs it on the CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ssd_edge.common.atomic import atomic_path
from ssd_edge.export.onnx_model import ExportError, load_onnx, metadata, save, set_metadata
from ssd_edge.runtime.model_file import QUANTIZATION_KEY


def export_qat_int8(model, path: str | os.PathLike, *, batch: int = 1, dynamic: bool = False, opset: int | None = None,
                    simplified: bool = True) -> Path:
    """Export the QAT `model` (fake quantization on) to `path` as a QDQ ONNX, atomically."""
    from ssd_edge.export.quantize import STEM_REASON, stem_conv
    from ssd_edge.export.to_onnx import DEFAULT_OPSET, export_onnx
    from ssd_edge.training.qat import qat_record

    record = qat_record(model)
    if record is None:
        raise ExportError("not a quantization-aware (QAT) model: its INT8 ONNX is made by calibration "
                          "(ssd-export --format int8 --calib-data DIR)")
    opset = opset or DEFAULT_OPSET
    if opset < 13:
        raise ExportError(f"opset {opset}: per-channel QuantizeLinear needs opset 13 or later")
    path = Path(path)
    with atomic_path(path) as tmp:
        export_onnx(model, tmp, batch=batch, dynamic=dynamic, opset=opset, simplified=simplified)
        proto = load_onnx(tmp)
        fold_weight_quantization(proto)
        # "qat": a field of the quantization record, as "flavour" and "calibration" are (this file's
        # ranges came from QAT), not the checkpoint's QAT_KEY entry, which holds a QatRecord
        entry = {"flavour": "tensorrt", "format": "QDQ", "calibration": f"qat ({record.calibration} ranges)",
                 "calibration_images": record.calibration_images, "qat": True,
                 "float_layers": {stem_conv(proto): STEM_REASON}}
        set_metadata(proto, {**metadata(proto), QUANTIZATION_KEY: json.dumps(entry, sort_keys=True)})
        save(proto, tmp)
    return path


def fold_weight_quantization(proto) -> int:
    """Store each quantized weight as int8, as the PTQ flavours do: a QuantizeLinear of a
    float initializer becomes an int8 initializer feeding its DequantizeLinear (the values
    onnxruntime's QuantizeLinear computes: round half to even, saturate). Q/DQ scales and
    zero points that torch wrote as Constant nodes become initializers. Returns how many
    weights were folded."""
    import numpy as np
    from onnx import numpy_helper

    constants = {node.output[0]: node for node in proto.graph.node
                 if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value"}
    initializers = {t.name: t for t in proto.graph.initializer}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for node in qdq:
        for name in node.input[1:]:
            if name in constants and name not in initializers:
                tensor = numpy_helper.from_array(numpy_helper.to_array(constants[name].attribute[0].t), name)
                proto.graph.initializer.append(tensor)
                initializers[name] = tensor
                proto.graph.node.remove(constants.pop(name))
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = 0
    for node in qdq:
        if node.op_type != "QuantizeLinear" or node.input[0] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[0]])
        scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        zero_point = numpy_helper.to_array(initializers[node.input[2]])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1:
            shape = [1] * weight.ndim
            shape[axis] = -1
            scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        info = np.iinfo(zero_point.dtype)
        codes = np.clip(np.rint(weight / scale) + zero_point.astype(np.int32), info.min, info.max)
        quantized = numpy_helper.from_array(codes.astype(zero_point.dtype), f"{node.input[0]}_quantized")
        proto.graph.initializer.append(quantized)
        for consumer in consumers.get(node.output[0], []):
            for index, name in enumerate(consumer.input):
                if name == node.output[0]:
                    consumer.input[index] = quantized.name
        proto.graph.node.remove(node)
        folded += 1
    used = {name for node in proto.graph.node for name in node.input}
    for tensor in list(proto.graph.initializer):
        if tensor.name not in used:
            proto.graph.initializer.remove(tensor)
    for name, node in constants.items():
        if name not in used:
            proto.graph.node.remove(node)
    return folded
