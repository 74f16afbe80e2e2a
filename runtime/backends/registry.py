"""The one list of backends: name -> the model formats it runs, its options class, how to
open it (imported only then) and a one-line description. The Detector, ssd-bench and every
command with --backend take their choices from here; a backend's options are the fields of
its options class (a frozen dataclass in the backend's module, fields made with
`base.option`), so adding one touches that module alone.

    info = backend_info("openvino")
    info.options            # OpenVinoOptions
    info.open(path, overrides, OpenVinoOptions(precision="bf16"))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Mapping

from ssd_edge.common.errors import UsageError

AUTO = "auto"


@dataclass(frozen=True)
class BackendInfo:
    """One backend. family: its library, as messages name it ('onnxruntime', 'OpenVINO').
    module: where the backend and its options class live; backend, options_class: their
    names there. fixed: further constructor arguments (onnxruntime's provider flavour).
    ignores: options the Detector accepts for it and ignores (an engine has no threads)."""

    name: str
    formats: tuple[str, ...]
    family: str
    module: str
    backend: str
    options_class: str
    description: str
    fixed: tuple[tuple[str, Any], ...] = ()
    ignores: tuple[str, ...] = ()

    @property
    def options(self) -> type:
        """The options dataclass (its module imported; the library it drives is not)."""
        return getattr(import_module(self.module), self.options_class)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))

    def open(self, path: str | Path, overrides: Any, options: Any = None):
        """The backend on the model at `path` with `overrides` (PostprocessOverrides) and
        `options` (an instance of `self.options`; None: its defaults)."""
        cls = getattr(import_module(self.module), self.backend)
        return cls(path, overrides, options=options if options is not None else self.options(), **dict(self.fixed))


_ORT = "ssd_edge.runtime.backends.onnxruntime_backend"
BACKENDS: dict[str, BackendInfo] = {info.name: info for info in (
    BackendInfo("onnxruntime", ("onnx",), "onnxruntime", _ORT, "OnnxRuntimeBackend", "OnnxRuntimeOptions",
                "onnxruntime: its CUDA provider when onnxruntime-gpu is installed, else the CPU"),
    BackendInfo("onnxruntime-cpu", ("onnx",), "onnxruntime", _ORT, "OnnxRuntimeBackend", "OnnxRuntimeOptions",
                "onnxruntime on the CPU", fixed=(("flavour", "cpu"),)),
    BackendInfo("onnxruntime-tensorrt", ("onnx",), "onnxruntime", _ORT, "OnnxRuntimeBackend", "OnnxRuntimeOptions",
                "onnxruntime's TensorRT provider", fixed=(("flavour", "tensorrt"),)),
    BackendInfo("openvino", ("onnx",), "OpenVINO", "ssd_edge.runtime.backends.openvino_backend", "OpenVinoBackend",
                "OpenVinoOptions", "the ONNX model on OpenVINO (pip install 'ssd-edge[openvino]')"),
    BackendInfo("tensorrt", ("engine",), "TensorRT", "ssd_edge.runtime.backends.tensorrt_backend", "TensorRTBackend",
                "TensorRTOptions", "a TensorRT engine through pycuda", ignores=("threads",)),
)}
AUTO_FOR = {"onnx": "onnxruntime", "engine": "tensorrt"}
"""What 'auto' runs for each model format."""
CHOICES = (AUTO, *BACKENDS)
"""Every name a --backend takes."""


def check_backend_name(name: str) -> None:
    if name not in CHOICES:
        raise UsageError(f"unknown backend {name!r}; choose from {', '.join(CHOICES)}")


def backend_info(name: str) -> BackendInfo:
    check_backend_name(name)
    if name == AUTO:
        raise UsageError("'auto' is chosen by the model's format: use resolve()")
    return BACKENDS[name]


def resolve(name: str, model_format: str, path: Any) -> BackendInfo:
    """The backend `name` ('auto' or a registered one) for a model of `model_format`
    ('onnx', 'engine'); UsageError naming `path` when that backend does not run it."""
    check_backend_name(name)
    info = BACKENDS[AUTO_FOR[model_format] if name == AUTO else name]
    if model_format not in info.formats:
        if model_format == "engine":
            raise UsageError(f"{path}: a TensorRT engine runs on backend 'tensorrt', not {name!r}")
        if name == "tensorrt":
            raise UsageError(
                f"{path}: backend 'tensorrt' runs engines; build one with `ssd-export --format engine`, "
                "or use 'onnxruntime-tensorrt' for onnxruntime's TensorRT provider"
            )
        runs = [n for n, i in BACKENDS.items() if model_format in i.formats]
        raise UsageError(f"{path}: backend {name!r} does not run .{model_format} models ({', '.join(runs)} do)")
    return info


def candidates(name: str) -> list[BackendInfo]:
    """The backends `name` may stand for: itself, or for 'auto' one per model format."""
    check_backend_name(name)
    return [BACKENDS[n] for n in AUTO_FOR.values()] if name == AUTO else [BACKENDS[name]]


def families_taking(option: str) -> list[str]:
    """The libraries whose backends take `option`, e.g. ['onnxruntime', 'OpenVINO']."""
    return list(dict.fromkeys(i.family for i in BACKENDS.values() if option in i.option_names))


def check_options_apply(name: str, given: Mapping[str, Any], label=lambda option: option) -> None:
    """UsageError when an option in `given` (option name -> value, None: not given) means
    nothing to backend `name`, e.g. "spinning is an onnxruntime option; backend is 'openvino'"."""
    accepted = {o for info in candidates(name) for o in (*info.option_names, *info.ignores)}
    for option, value in given.items():
        if value is not None and option not in accepted:
            families = families_taking(option)
            if not families:
                known = sorted({o for i in BACKENDS.values() for o in i.option_names})
                raise UsageError(f"unknown backend option {label(option)!r}; the backends take {', '.join(known)}")
            owner = "/".join(families)
            article = "an" if owner[0].lower() in "aeiou" else "a"
            raise UsageError(f"{label(option)} is {article} {owner} option; backend is {name!r}")


def option_fields() -> dict[str, dataclasses.Field]:
    """Every backend option by name, in the registry's order (where several backends take
    one, e.g. threads, the first one's field: its help and flag)."""
    found: dict[str, dataclasses.Field] = {}
    for info in BACKENDS.values():
        for field in dataclasses.fields(info.options):
            found.setdefault(field.name, field)
    return found


def option_flag(name: str) -> str:
    """The command-line flag of backend option `name`: its field's `flag`, else --name."""
    field = option_fields().get(name)
    flag = field.metadata.get("flag") if field is not None else None
    return flag or "--" + name.replace("_", "-")


def build_options(info: BackendInfo, given: Mapping[str, Any]):
    """info.options built from the values in `given` it takes (None: not given, its default);
    the options its backend ignores, or that 'auto' meant for another format, are dropped."""
    names = info.option_names
    return info.options(**{k: v for k, v in given.items() if v is not None and k in names})


__all__ = ["AUTO", "AUTO_FOR", "BACKENDS", "CHOICES", "BackendInfo", "backend_info", "build_options",
           "candidates", "check_backend_name", "check_options_apply", "families_taking", "option_fields",
           "option_flag", "resolve"]
