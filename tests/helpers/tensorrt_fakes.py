"""A small stand-in for the `tensorrt` module: just what the logger, Runtime/Builder creation
and the engine runner's tensor checks use, behaving as the real bindings do where it matters:

- TensorRT keeps ONE logger per process, the one given to the first Runtime/Builder; later
  objects log to it whatever logger they are handed;
- a factory that cannot start logs its reason and the binding raises
  `TypeError: pybind11::init(): factory function returned nullptr`;
- an engine describes its I/O tensors by name (mode, dtype, shape with -1 for a dynamic
  batch, and the optimisation profile's min/opt/max shapes).

Every public name the fake defines exists in the real bindings with the same kind (class,
enum member, method, property): tests/test_tensorrt_bindings.py checks `api_of(fake)`
against tensorrt-cu12-bindings 10.3.0. Bookkeeping only tests read starts with `_`.
"""

from __future__ import annotations

import enum
import inspect
from types import SimpleNamespace

NULL_FACTORY_ERROR = "pybind11::init(): factory function returned nullptr"


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity, msg) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


class IExecutionContext:
    """Records the addresses and input shapes it is given."""

    def __init__(self) -> None:
        self._addresses: dict[str, int] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._addresses[name] = address
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        return True


class ICudaEngine:
    """An engine's I/O: `tensors` {name: (TensorIOMode, DataType, shape)} in binding order;
    `profile` {input name: (min, opt, max)} for a dynamic batch."""

    def __init__(self, tensors: dict, profile: dict | None = None) -> None:
        self._tensors = dict(tensors)
        self._profile = dict(profile or {})

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def get_tensor_name(self, index: int) -> str:
        return list(self._tensors)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._tensors[name][0] if name in self._tensors else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._tensors[name][1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name][2])

    def get_tensor_profile_shape(self, name: str, profile_index: int):
        return self._profile[name]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext()


def ssd_engine(spec, batch: int = 1, max_batch: int | None = None, num_classes: int | None = None) -> ICudaEngine:
    """The engine ssd-export builds for `spec`: images (B, 3, H, W) -> locs (B, P, 4), confs
    (B, P, C); batch -1 is dynamic, from 1 to `max_batch`. `num_classes` overrides C (an
    engine of another model)."""
    height, width = spec.input_size
    p, c = spec.num_priors, num_classes or spec.num_classes
    locs, confs = spec.output_names
    tensors = {
        spec.input_name: (TensorIOMode.INPUT, DataType.FLOAT, (batch, 3, height, width)),
        locs: (TensorIOMode.OUTPUT, DataType.FLOAT, (batch, p, 4)),
        confs: (TensorIOMode.OUTPUT, DataType.FLOAT, (batch, p, c)),
    }
    profile = {}
    if batch == -1:
        top = max_batch or 1
        profile[spec.input_name] = ((1, 3, height, width), (top, 3, height, width), (top, 3, height, width))
    return ICudaEngine(tensors, profile)


def fake_tensorrt(version: str = "10.3.0", start_failure: str | None = None, reason: str | None = None):
    """A fake tensorrt module. `start_failure` ("Runtime" or "Builder") cannot be created:
    it logs `reason` (when given) and raises pybind11's TypeError. A Runtime's
    `deserialize_cuda_engine(data)` returns the engine registered under `data` in
    `trt._engines`, else logs the error `data` carries and returns None."""
    trt = SimpleNamespace(
        __version__=version, ILogger=ILogger, TensorIOMode=TensorIOMode, DataType=DataType,
        ICudaEngine=ICudaEngine, IExecutionContext=IExecutionContext, _loggers_given=[], _engines={},
    )
    process = {}

    def adopt(logger) -> ILogger:
        if not isinstance(logger, ILogger):
            raise TypeError("__init__(): incompatible constructor arguments")
        trt._loggers_given.append(logger)
        return process.setdefault("logger", logger)  # the first logger stays the process's

    class _Created:
        _factory = ""

        def __init__(self, logger) -> None:
            self._logger = adopt(logger)
            if start_failure == self._factory:
                if reason:
                    self._logger.log(Severity.ERROR, reason)
                raise TypeError(NULL_FACTORY_ERROR)

    class Runtime(_Created):
        _factory = "Runtime"

        def deserialize_cuda_engine(self, serialized_engine: bytes):
            if serialized_engine in trt._engines:
                return trt._engines[serialized_engine]
            process["logger"].log(Severity.WARNING, "a warning, not an error")
            process["logger"].log(Severity.ERROR, serialized_engine.decode())
            return None

    class Builder(_Created):
        _factory = "Builder"

    trt.Runtime, trt.Builder = Runtime, Builder
    return trt


# --- what the fake claims about TensorRT's API, checked against the real module ----------


def kind_of(owner, name: str) -> str:
    """The kind of `owner.name`: 'absent', 'class', 'enum member', 'property', 'method',
    or the value's type name ('str' for __version__)."""
    if not hasattr(owner, name):
        return "absent"
    static = inspect.getattr_static(owner, name) if inspect.isclass(owner) else getattr(owner, name)
    value = getattr(owner, name)
    if inspect.isclass(owner) and name in getattr(owner, "__members__", {}):
        return "enum member"
    if isinstance(static, property):
        return "property"
    if inspect.isclass(value):
        return "class"
    if callable(value):
        return "method"
    return type(value).__name__


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__version__"


def api_of(module) -> dict[str, str]:
    """{dotted name: kind} of every public name `module` defines, classes walked down to
    their own methods, properties, nested classes and enum members."""
    found: dict[str, str] = {}

    def walk(owner, prefix: str, names) -> None:
        for name in names:
            if not _public(name):
                continue
            dotted = f"{prefix}{name}"
            found[dotted] = kind_of(owner, name)
            value = getattr(owner, name)
            if found[dotted] == "class":
                members = getattr(value, "__members__", None)
                walk(value, dotted + ".", list(members) if members is not None else list(vars(value)))

    walk(module, "", list(vars(module)))
    return found


def kinds_at(module, dotted_names) -> dict[str, str]:
    """{dotted name: kind} of the same names in `module` (the real tensorrt)."""
    found = {}
    for dotted in dotted_names:
        owner = module
        *path, name = dotted.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        found[dotted] = "absent" if owner is None else kind_of(owner, name)
    return found
