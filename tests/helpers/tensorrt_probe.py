"""Run by tests/test_tensorrt_bindings.py as `python -m tests.helpers.tensorrt_probe` in a fresh
interpreter whose `import tensorrt` finds real TensorRT bindings over the stand-in libraries
(tests/tensorrt_standin/; the repository root on PYTHONPATH). Prints one JSON
object: the version and whether we support it; for a supported one, the feature detection,
the check of every API use found in our source and of known-wrong uses (argv[1], JSON from
tensorrt_api_uses), the
fakes' API against this module's, and what our code says when TensorRT cannot create its
Runtime or Builder (with and without a reason logged by the stand-in)."""

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import tensorrt as trt

from ssd_edge.export.engine import EngineOptions, TensorRTUnavailable, _serialize, build_environment
from ssd_edge.runtime.backends.tensorrt_backend import EngineRunner, import_tensorrt
from ssd_edge.runtime.backends.tensorrt_logging import create
from ssd_edge.runtime.backends.tensorrt_support import Capabilities
from ssd_edge.runtime.cuda.device import GpuInfo
from ssd_edge.runtime.cuda.resources import GpuError
from tests.helpers import tensorrt_api_uses, tensorrt_fakes

REASON_ENV = "SSD_EDGE_TRT_STANDIN_ERROR"  # what the stand-in factories log before returning NULL


def message(function, *args) -> str:
    """The project error `function(*args)` raises (type: message), or 'returned'."""
    try:
        function(*args)
    except (GpuError, TensorRTUnavailable) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "returned"


def starting(reason: str | None) -> dict:
    """What the runtime and the export say when TensorRT cannot start."""
    if reason is None:
        os.environ.pop(REASON_ENV, None)
    else:
        os.environ[REASON_ENV] = reason
    sidecar = SimpleNamespace(spec=None, built_for=lambda: "TensorRT 10.3.0 on Orin (sm_87)")
    engine = Path(sys.argv[2]) / "model.engine"
    engine.write_bytes(b"not an engine")
    return {
        "create Runtime": message(create, trt, "Runtime"),
        "create Builder": message(create, trt, "Builder", TensorRTUnavailable),
        "runtime": message(EngineRunner, engine, sidecar, trt, SimpleNamespace(name="Orin", compute_capability=(8, 7)),
                           None),
        "export": message(_serialize, trt, Capabilities.of(trt), GpuInfo("Orin", (8, 7)), None,
                          engine.with_suffix(".onnx"), EngineOptions(), {}),
    }


def main() -> None:
    import tensorrt_bindings

    out = {"version": trt.__version__, "file": trt.__file__, "bindings": tensorrt_bindings.__file__}
    out["runtime_import"] = message(import_tensorrt, Path("model.engine"), SimpleNamespace(built_for=lambda: "?"))
    out["build_environment"] = message(build_environment)
    if out["runtime_import"] == "returned":
        capabilities = Capabilities.of(trt)
        out["capabilities"] = asdict(capabilities)
        out["missing"] = capabilities.missing()
        out["fp16_from_graph"] = capabilities.fp16_from_graph()
        uses = json.loads(Path(sys.argv[1]).read_text())
        out["api"] = tensorrt_api_uses.verify(trt, tensorrt_api_uses.from_json(uses["project"]), capabilities)
        out["mutants"] = tensorrt_api_uses.verify(trt, tensorrt_api_uses.from_json(uses["mutants"]), capabilities)
        fake_api = tensorrt_fakes.api_of(tensorrt_fakes.fake_tensorrt())
        out["fake_api"], out["real_api"] = fake_api, tensorrt_fakes.kinds_at(trt, fake_api)
        out["start_with_reason"] = starting("CUDA initialization failure with error: 35")
        out["start_without_reason"] = starting(None)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
