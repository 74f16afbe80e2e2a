"""A small stand-in for the `tensorrt` module: just what the logger and Runtime/Builder
creation use, behaving as the real bindings do where it matters here:

- TensorRT keeps ONE logger per process, the one given to the first Runtime/Builder; later
  objects log to it whatever logger they are handed;
- a factory that cannot start logs its reason and the binding raises
  `TypeError: pybind11::init(): factory function returned nullptr`
  (checked against tensorrt-cu12-bindings 10.3.0 and 11.4.0.106 on stand-in libraries).
"""

from __future__ import annotations

from types import SimpleNamespace

NULL_FACTORY_ERROR = "pybind11::init(): factory function returned nullptr"


class Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity, msg) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def fake_tensorrt(version: str = "10.3.0", start_failure: str | None = None, reason: str | None = None):
    """A fake tensorrt module. `start_failure` ("Runtime" or "Builder") cannot be created:
    it logs `reason` (when given) and raises pybind11's TypeError. A Runtime's
    `deserialize_cuda_engine(data)` logs the error `data` carries and returns None."""
    trt = SimpleNamespace(__version__=version, ILogger=ILogger, loggers_given=[])
    process = {}

    def adopt(logger) -> ILogger:
        if not isinstance(logger, ILogger):
            raise TypeError("__init__(): incompatible constructor arguments")
        trt.loggers_given.append(logger)
        return process.setdefault("logger", logger)  # the first logger stays the process's

    class _Created:
        name = ""

        def __init__(self, logger) -> None:
            self.logger = adopt(logger)
            if start_failure == self.name:
                if reason:
                    self.logger.log(Severity.ERROR, reason)
                raise TypeError(NULL_FACTORY_ERROR)

    class Runtime(_Created):
        name = "Runtime"

        def deserialize_cuda_engine(self, data: bytes):
            process["logger"].log(Severity.WARNING, "a warning, not an error")
            process["logger"].log(Severity.ERROR, data.decode())
            return None

    class Builder(_Created):
        name = "Builder"

    trt.Runtime, trt.Builder = Runtime, Builder
    return trt
