"""Torch-free work on ONNX files: our metadata, simplification, the FP16 graph.

Everything here needs only `onnx` (and onnxsim / onnxruntime where named), so an engine can
be built from an exported ONNX on a machine without torch, such as a Jetson.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.runtime.model_file import spec_from_onnx_metadata
from ssd_edge.runtime.spec import ModelSpec


class ExportError(SSDEdgeError, ValueError):
    """An export that cannot go on; the message names the file and the problem."""


def load_onnx(path: str | os.PathLike):
    """The ModelProto in `path`, or an ExportError naming the file."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as exc:
        raise ExportError(f"{path}: not a readable ONNX model ({exc})") from None


def set_metadata(proto, entries: dict[str, str]) -> None:
    """Set (replace) string entries in an ONNX model's metadata_props."""
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def metadata(proto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def spec_of(proto, source: str | os.PathLike = "ONNX model") -> ModelSpec:
    """The ModelSpec stored in an ONNX model's metadata_props."""
    return spec_from_onnx_metadata(metadata(proto), source)


def read_spec(path: str | os.PathLike) -> ModelSpec:
    return spec_of(load_onnx(path), path)


def batch_size(proto) -> int | None:
    """The fixed batch size of the model's first input, or None when it is dynamic."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def simplify(proto, source: str | os.PathLike = "ONNX model"):
    """onnxsim's simplified model with our metadata kept; on any onnxsim failure a warning
    and the model unchanged (simplification is an optimisation, never a requirement)."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
    except Exception as exc:  # onnxsim raises anything from its C++ core
        first_line = (str(exc).strip().splitlines() or [""])[0]
        warnings.warn(f"{source}: onnxsim failed ({type(exc).__name__}: {first_line}); keeping the unsimplified model")
        return proto
    if not ok:
        warnings.warn(f"{source}: onnxsim could not validate its result; keeping the unsimplified model")
        return proto
    set_metadata(simplified, metadata(proto))
    return simplified


def topological_sort(graph) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (in place)."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in known for name in n.input)]
        if not ready:
            raise ExportError(f"graph {graph.name!r} has a cycle or inputs nobody produces "
                              f"(e.g. node {pending[0].name!r})")
        for node in ready:
            known.update(node.output)
        ordered += ready
        taken = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in taken]
    del graph.node[:]
    graph.node.extend(ordered)


def fp16_graph(proto):
    """The same network computing in float16, with float32 `images`, `locs` and `confs`
    (casts at the edges), for TensorRT versions where precision comes from the graph.

    Uses onnxruntime's float16 converter; its output is re-sorted topologically, which
    onnx.checker and TensorRT's parser need.
    """
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise ExportError(f"an FP16 graph needs onnxruntime's float16 converter: {exc}") from None
    half = convert_float_to_float16(proto, keep_io_types=True)
    topological_sort(half.graph)
    set_metadata(half, metadata(proto))
    onnx.checker.check_model(half)
    return half


def save(proto, path: str | os.PathLike) -> None:
    import onnx

    onnx.save(proto, str(path))
