"""FP16 and bf16 measured on a CPU: the FP32 ONNX with every weight and every activation
rounded to the lower precision, computed in float32 by onnxruntime.

What a TensorRT FP16 engine (or an OpenVINO bf16 one) changes in the numbers is where
tensors are stored: weights and activations lose mantissa bits (10 kept for fp16, 7 for
bf16; fp16 also overflows past 65504), while the convolutions' sums accumulate in a wider
type. Rounding each tensor once (a `Cast` to the type and back after every node, the
initializers rounded in place) reproduces that storage exactly and the accumulation to
within float32's error, with float32 `images`, `locs` and `confs` as the engine's bindings
have them. It runs on any onnxruntime CPU build: no float16 or bf16 kernels are needed.
Layer fusion on the device (Conv+BN+activation kept in one kernel) rounds fewer
intermediate tensors, so this emulation is, if anything, the pessimistic side of the engine.
"""

from __future__ import annotations

import numpy as np

from ssd_edge.export.onnx_model import ExportError, metadata, set_metadata

PRECISIONS = ("fp16", "bf16")
EMULATION_KEY = "ssd_edge.emulated_precision"


def round_to(values: np.ndarray, precision: str) -> np.ndarray:
    """float32 `values` rounded to the nearest fp16 or bf16 value (ties to even), as float32."""
    values = np.asarray(values, dtype=np.float32)
    if precision == "fp16":
        with np.errstate(over="ignore"):
            return values.astype(np.float16).astype(np.float32)
    if precision == "bf16":
        bits = values.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        nan = np.isnan(values)
        out = rounded.astype(np.uint32).view(np.float32).reshape(values.shape)
        return np.where(nan, values, out)
    raise ExportError(f"unknown emulated precision {precision!r}; choose from {', '.join(PRECISIONS)}")


def emulated(proto, precision: str):
    """A copy of the float32 ModelProto `proto` computing as a `precision` (fp16 or bf16)
    network would store its tensors; inputs and outputs stay float32 and keep their names.
    Its metadata is `proto`'s plus EMULATION_KEY."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if precision not in PRECISIONS:
        raise ExportError(f"unknown emulated precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    target = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.BFLOAT16
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            graph.initializer[index].CopyFrom(
                numpy_helper.from_array(round_to(numpy_helper.to_array(tensor), precision), tensor.name))
    float_tensors = _float_tensors(model)
    nodes = []
    rounded_inputs = {}
    for graph_input in graph.input:
        if graph_input.name in float_tensors and graph_input.name not in {t.name for t in graph.initializer}:
            rounded_inputs[graph_input.name] = f"{graph_input.name}/{precision}"
            nodes.extend(_round_trip(helper, graph_input.name, rounded_inputs[graph_input.name], target, precision))
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in rounded_inputs:
                node.input[position] = rounded_inputs[name]
        nodes.append(node)
        for position, name in enumerate(node.output):
            if name in float_tensors and node.op_type != "Constant":
                full = f"{name}/full"
                node.output[position] = full
                nodes.extend(_round_trip(helper, full, name, target, precision))
    copied = [onnx.NodeProto() for _ in nodes]
    for fresh, node in zip(copied, nodes):
        fresh.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copied)
    set_metadata(model, {**metadata(proto), EMULATION_KEY: precision})
    return model


def _round_trip(helper, source: str, result: str, target: int, precision: str) -> list:
    from onnx import TensorProto

    narrow = f"{result}/{precision}_narrow"
    return [helper.make_node("Cast", [source], [narrow], to=target, name=f"{narrow}/cast"),
            helper.make_node("Cast", [narrow], [result], to=TensorProto.FLOAT, name=f"{result}/cast_back")]


def _float_tensors(model) -> set[str]:
    """Names of the float32 tensors of `model` (shape inference tells the intermediate ones)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    typed = list(graph.input) + list(graph.value_info) + list(graph.output)
    names = {value.name for value in typed if value.type.tensor_type.elem_type == TensorProto.FLOAT}
    names |= {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    return names
