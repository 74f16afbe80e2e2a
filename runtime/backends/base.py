"""What every backend is: the `Backend` protocol, its one I/O check and its host input buffer.

A backend runs one model file's network and decodes its outputs; the Detector preprocesses
into `input_buffer(n)` and calls `detect(n, sizes, timer)`. Backends differ in what runs
the network (onnxruntime, OpenVINO, TensorRT) and in their options, each a small frozen
dataclass in the backend's own module (see `registry`); they share `check_network_io`,
which every backend calls with its network's tensor shapes before anything is sized from
the ModelSpec, and `HostInputBuffer` (onnxruntime and OpenVINO; TensorRT's is pinned).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ssd_edge.common.errors import UsageError
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.spec import ModelSpec, SpecError
from ssd_edge.runtime.stage_timer import StageTimer

Shape = Sequence[Any]
"""A tensor's shape as a runtime reports it: ints, with None, text or -1 for a dynamic dimension."""


@runtime_checkable
class Backend(Protocol):
    """One model file's network and decode + NMS, ready to run.

    spec: the model's ModelSpec. config: the postprocessing in effect (the spec's values with
    the caller's overrides). name: what runs it, e.g. 'onnxruntime (CPUExecutionProvider)'.
    max_batch: the most images one `detect` takes (None: no limit)."""

    spec: ModelSpec
    config: PostprocessConfig
    name: str

    @property
    def max_batch(self) -> int | None: ...

    def input_buffer(self, batch: int) -> np.ndarray:
        """The reused (batch, 3, H, W) float32 array preprocessing writes `batch` images into."""

    def detect(self, batch: int, image_sizes: Sequence[tuple[int, int]], timer: StageTimer) -> list[Detections]:
        """Run the network on input_buffer(batch) and decode: one Detections per image size (h, w)."""

    def close(self) -> None:
        """Free what the backend holds (idempotent enough for the Detector's one call)."""


def option(default: Any, help: str, *, flag: str | None = None, choices: Sequence[str] | None = None,
           parse: Callable[[str], Any] | None = None, metavar: str | None = None) -> Any:
    """A backend option: a dataclass field whose metadata the command lines read.

    help: one line for `--help`. flag: the command-line flag (default: `--` and the field's
    name with '-' for '_'). choices: the words the flag takes; parse: text -> value (default:
    the text, or int for an int option given as `parse=int`). A backend's options class is
    all a new option needs: the Detector's keyword arguments, the registry and every command
    with --backend take it from there."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "parse": parse,
                                            "metavar": metavar})


def on_off(text: str) -> bool:
    """'on' -> True, 'off' -> False: a command-line switch's words."""
    return text == "on"


THREADS_HELP = ("inference threads (default: one per physical core; OpenVINO on the CPU: that or 1, whichever "
                "recent calls ran faster)")
"""--threads' one help line: the flag is shared by the CPU backends (onnxruntime, OpenVINO)."""


def check_threads(threads: int | None) -> None:
    """UsageError unless threads is None or at least 1."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"threads must be at least 1, got {threads}")


def check_network_io(
    spec: ModelSpec, inputs: Mapping[str, Shape], outputs: Mapping[str, Shape], source: Any,
    error: type[Exception] = SpecError, explain: Callable[[str, tuple, tuple], str] | None = None,
) -> int | None:
    """Check a network's tensors against `spec`; returns the fixed batch (None: dynamic).

    inputs, outputs: {tensor name: shape}. The network must take `spec.input_name` as
    (B, 3, H, W) with (H, W) = spec.input_size, and give `spec.output_names` as locs (B, P, 4)
    and confs (B, P, C), P = spec.num_priors, C = spec.num_classes (background included).
    A dimension given as text, None or a negative number (dynamic) is not compared, except
    the input's 3, H, W, which must be fixed. Run when a model is opened, before anything is
    sized from the spec, so metadata that does not describe the network (fewer class names
    than it scores, feature maps it does not have) is refused instead of giving ghost
    classes or sizing buffers from nonsense.

    source: names the file in messages. error: the exception raised (SpecError). explain:
    (tensor name, its shape, the shape expected) -> the message for a shape that disagrees,
    for a backend whose file pairs a network with a description written beside it."""
    name = spec.input_name
    if name not in inputs:
        raise error(f"{source}: no input '{name}' (it has {', '.join(sorted(inputs))})")
    missing = [n for n in spec.output_names if n not in outputs]
    if missing:
        raise error(f"{source}: outputs {missing} missing (it has {', '.join(sorted(outputs))})")
    shape = list(inputs[name])
    batch = shape[0] if shape and _fixed(shape[0]) else None
    wanted = expected_shapes(spec, shape[0] if shape else None)
    if len(shape) != 4 or shape[1:] != list(wanted[name][1:]):
        raise error(explain(name, tuple(shape), wanted[name]) if explain else
                    f"{source}: input shape {inputs[name]} does not match the ModelSpec's (B, 3, "
                    f"{spec.input_size[0]}, {spec.input_size[1]})")
    for output in spec.output_names:
        problem = _output_problem(spec, output, list(outputs[output]), wanted[output], source)
        if problem:
            raise error(explain(output, tuple(outputs[output]), wanted[output]) if explain else problem)
    return batch


def _fixed(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def expected_shapes(spec: ModelSpec, batch: Any) -> dict[str, tuple]:
    """{tensor name: shape} a network of `spec` has, batch first: input (B, 3, H, W),
    locs (B, P, 4), confs (B, P, C)."""
    height, width = spec.input_size
    locs, confs = spec.output_names
    return {spec.input_name: (batch, 3, height, width), locs: (batch, spec.num_priors, 4),
            confs: (batch, spec.num_priors, spec.num_classes)}


def _output_problem(spec: ModelSpec, name: str, shape: list, wanted: tuple, source: Any) -> str | None:
    """What is wrong with output `name` of `shape` (None: nothing)."""
    batch, priors, width = wanted
    if len(shape) != 3:
        return f"{source}: output '{name}' has shape {shape}; expected (batch, {priors}, {width})"
    if isinstance(batch, int) and isinstance(shape[0], int) and shape[0] != batch:
        return f"{source}: output '{name}' has batch {shape[0]}, but the input's is {batch}"
    rows, columns = (d if isinstance(d, int) and d >= 0 else None for d in shape[1:])
    if rows is not None and rows != priors:
        return (f"{source}: output '{name}' has {rows} default boxes, but the ModelSpec's default boxes "
                f"make {priors}; the metadata does not describe this network")
    if columns is not None and columns != width:
        confs = name == spec.output_names[1]
        what = "class scores" if confs else "box coordinates"
        detail = f"; the ModelSpec lists {spec.num_classes} class names (background included)" if confs else ""
        return (f"{source}: output '{name}' has {columns} {what} per box, expected {width}{detail}; "
                "the metadata does not describe this network")
    return None


class HostInputBuffer:
    """The reused (rows, 3, H, W) float32 host array a backend's network reads its images from.

    fixed_batch: the model's fixed batch (every run takes that many rows, the unused ones
    left as they are), or None when its batch is dynamic (the array grows to the largest
    batch seen)."""

    def __init__(self, input_size: tuple[int, int], fixed_batch: int | None) -> None:
        self.input_size = tuple(input_size)
        self.fixed_batch = fixed_batch
        self.array = np.zeros((fixed_batch or 1, 3, *self.input_size), np.float32)

    def rows(self, batch: int) -> int:
        """How many rows a run of `batch` images takes: the fixed batch, or `batch`."""
        return self.fixed_batch or batch

    def view(self, batch: int) -> np.ndarray:
        """The first `batch` rows, for preprocessing to write into (grown when needed)."""
        rows = self.rows(batch)
        if self.array.shape[0] < rows:
            self.array = np.zeros((rows, 3, *self.input_size), np.float32)
        return self.array[:batch]

    def network_input(self, batch: int) -> np.ndarray:
        """The rows the network runs on for `batch` images (padded to the fixed batch)."""
        return self.array[: self.rows(batch)]
