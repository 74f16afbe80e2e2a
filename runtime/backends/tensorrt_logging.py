"""The process's one TensorRT logger, and TensorRT's Runtime and Builder created through it.

TensorRT keeps ONE logger per process: the one handed to the first Builder, Runtime or
Refitter; later objects log to it whatever logger they were given. A logger per engine
would therefore hear nothing from the second engine on, and its failure would come out with
no reason. So the runtime (deserializing engines) and the export (building them) share the
logger `process_logger(trt)` returns, and each operation reads only the errors logged while
it ran:

    logger = process_logger(trt)
    with logger.collecting() as errors:        # errors: list[str], filled during the block
        engine = runtime.deserialize_cuda_engine(data)

Errors and warnings also go to Python's `logging` (logger "ssd_edge.tensorrt").

When TensorRT cannot start (no or a mismatched CUDA driver, no GPU visible, out of memory)
its factory logs why and returns NULL, and the Python binding raises
`TypeError: pybind11::init(): factory function returned nullptr`. `create(trt, "Runtime")`
turns exactly that into an error naming the TensorRT version, the object and what TensorRT
logged; any other TypeError (a wrong argument) propagates.

tensorrt is never imported here: callers pass the module they imported.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

from ssd_edge.runtime.cuda.resources import GpuError

log = logging.getLogger("ssd_edge.tensorrt")

NULL_FACTORY = "returned nullptr"  # pybind11's message when a TensorRT factory returns NULL
NO_REASON = (
    "TensorRT logged no reason; check that the NVIDIA driver works (nvidia-smi) and that this "
    "TensorRT matches the installed CUDA"
)


class ErrorCollector:
    """Hands each logged error to every `collecting()` block open at the time. Thread-safe:
    TensorRT logs from its own threads during a build."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[list[str]] = []

    def add_error(self, message: str) -> None:
        with self._lock:
            for errors in self._open:
                errors.append(message)

    @contextmanager
    def collecting(self) -> Iterator[list[str]]:
        """A list that receives the errors logged until the block ends (and keeps them after)."""
        errors: list[str] = []
        with self._lock:
            self._open.append(errors)
        try:
            yield errors
        finally:
            with self._lock:
                self._open.remove(errors)


_LOGGERS: dict[int, tuple[ModuleType, object]] = {}  # id(trt module) -> (module, its logger)
_LOGGERS_LOCK = threading.Lock()


def process_logger(trt: ModuleType):
    """The logger every Runtime, Builder and OnnxParser of this process gets (a
    `trt.ILogger` with `collecting()`), made on first use."""
    with _LOGGERS_LOCK:
        entry = _LOGGERS.get(id(trt))
        if entry is None or entry[0] is not trt:
            entry = _LOGGERS[id(trt)] = (trt, _make_logger(trt))
        return entry[1]


def _make_logger(trt: ModuleType):
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class ProcessLogger(trt.ILogger):
        """TensorRT's errors to the open `collecting()` blocks and to `logging`; warnings to
        `logging`; the rest dropped."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._errors = ErrorCollector()
            self.collecting = self._errors.collecting

        def log(self, level, msg) -> None:
            if level in errors:
                self._errors.add_error(str(msg))
                log.error("%s", msg)
            elif level == severity.WARNING:
                log.warning("%s", msg)

    return ProcessLogger()


def create(trt: ModuleType, factory: str, error: type[Exception] = GpuError):
    """`trt.<factory>(process_logger(trt))`, factory "Runtime" or "Builder". When TensorRT
    cannot create it, `error` (GpuError by default; the export passes its own) saying so
    with TensorRT's version and logged reason; another TypeError propagates unchanged."""
    logger = process_logger(trt)
    with logger.collecting() as said:
        try:
            created = getattr(trt, factory)(logger)
        except TypeError as exc:
            if NULL_FACTORY not in str(exc):
                raise
            created = None
    if created is None:
        version = getattr(trt, "__version__", "(unknown version)")
        raise error(f"TensorRT {version} could not create its {factory}: {'; '.join(said) or NO_REASON}")
    return created
