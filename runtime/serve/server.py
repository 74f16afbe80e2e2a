"""`DetectorServer`: Detectors of one model file behind Triton Inference Server, through
PyTriton (extra `serve`, in its own environment: PyTriton 0.7 needs numpy<2).

    from ssd_edge.runtime.serve.server import DetectorServer, ServeConfig

    with DetectorServer("model.onnx", ServeConfig(http_port=8000)) as server:
        server.wait()                       # until stop(), e.g. from SIGINT/SIGTERM

It binds two Triton models (see `protocol`): `<name>` takes encoded image files as a
BYTES tensor (B, 1), so images of any sizes batch together (Triton's dynamic batcher only
groups requests of equal shapes, and a BYTES element may be any length); `<name>_raw` takes
BGR pixels UINT8 (B, H, W, 3), which Triton batches across requests of the same image size
(a camera's frames; a client with frames of many sizes encodes them, PNG being lossless).
Resizing on the client to make every raw image one shape would move the model's
preprocessing into every client, plain tritonclient ones included, and detections would
then depend on the client's resize; PyTriton 0.7 cannot declare ragged inputs.

Triton itself answers health (/v2/health/live, /v2/health/ready), model readiness,
statistics (/v2/models/<name>/stats: executions per batch size) and Prometheus metrics
(metrics port, /metrics).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import signal
import sysconfig
import threading
from typing import Sequence

import numpy as np

from ssd_edge.runtime.detector import Detector
from ssd_edge.common.errors import SSDEdgeError, UsageError, require
from ssd_edge.runtime.serve.model import BatchLog, DetectorModel
from ssd_edge.runtime.serve.protocol import BYTES_INPUT, RAW_INPUT, model_parameters, raw_model

LOG = logging.getLogger(__name__)


class ServeError(SSDEdgeError, RuntimeError):
    """The server cannot start or stopped serving; the message says why."""


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How the server listens and batches.

    model_name: Triton name of the encoded-image model; the raw-array one is `<name>_raw`.
    address: interface for HTTP, gRPC and metrics ("0.0.0.0": all; "127.0.0.1": loopback).
    http_port / grpc_port / metrics_port: distinct, 1..65535.
    max_batch_size: most images one execution takes (Triton's max_batch_size).
    max_queue_delay_us: how long Triton holds a request to gather a bigger batch.
    instances: model instances, each with its own Detector (executions run in parallel).
    threads: onnxruntime intra-op threads per instance (None: onnxruntime's default).
    open_statistics: leave Triton's statistics endpoint open, so clients can read the batch
    sizes formed (PyTriton restricts it by default).
    """

    model_name: str = "ssd"
    address: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    instances: int = 1
    threads: int | None = None
    open_statistics: bool = True
    log_verbose: int = 0

    def __post_init__(self) -> None:
        ports = {name: getattr(self, name) for name in ("http_port", "grpc_port", "metrics_port")}
        for name, port in ports.items():
            if not 0 < port < 65536:
                raise UsageError(f"{name} must lie in 1..65535, got {port}")
        if len(set(ports.values())) != 3:
            raise UsageError(f"HTTP, gRPC and metrics ports must differ, got {', '.join(map(str, ports.values()))}")
        for name, least in (("max_batch_size", 1), ("max_queue_delay_us", 0), ("instances", 1)):
            if getattr(self, name) < least:
                raise UsageError(f"{name} must be at least {least}, got {getattr(self, name)}")
        if not self.model_name or "/" in self.model_name:
            raise UsageError(f"model_name must be a non-empty name without '/', got {self.model_name!r}")


def python_library_first(environ: dict | None = None) -> str | None:
    """Put this interpreter's libpython directory first on LD_LIBRARY_PATH in `environ`
    (default os.environ), which the tritonserver child and its Python-backend stubs inherit.

    The stub links libpython3.X.so dynamically; without this it may load the system's,
    whose C code does not match a pyenv/conda interpreter's standard library, and model load
    fails with e.g. "'_thread.RLock' object has no attribute '_recursion_count'". Returns
    the directory, or None when this interpreter has no shared libpython (the stub then
    uses the system's, which must be the same Python version)."""
    environ = os.environ if environ is None else environ
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not glob.glob(os.path.join(libdir, "libpython3*.so*")):
        LOG.warning("no shared libpython in %s; Triton's Python stub will use the system's", libdir)
        return None
    parts = [p for p in environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    environ["LD_LIBRARY_PATH"] = ":".join([libdir, *parts])
    return libdir


def _add_parameters(triton, model_name: str, parameters: dict[str, str]) -> bool:
    """Add `parameters` to a bound model's Triton config. PyTriton 0.7 has no public way
    (its ModelConfig has no parameters); this extends the backend parameters of the config
    it generates, a private API of the pinned version: on failure, warn and go on."""
    try:
        model = next(m for m in triton._model_manager.models if m.model_name == model_name)
        model._get_triton_model_config().backend_parameters.update(parameters)
        return True
    except Exception as exc:  # noqa: BLE001 - private API of a pinned dependency
        LOG.warning("cannot publish parameters of model %s (PyTriton internals changed?): %s", model_name, exc)
        return False


class DetectorServer:
    """Triton serving `config.instances` Detectors of `model_path` as `<name>` and
    `<name>_raw`.

    start() launches tritonserver (a child process) and returns once the models are ready;
    wait() blocks until stop() or a dead server; stop() shuts down (idempotent). As a
    context manager: start on enter, stop on exit. detector_kwargs go to every Detector
    (backend, score_threshold, iou_threshold, max_detections, top_k).
    """

    def __init__(self, model_path: str | os.PathLike, config: ServeConfig = ServeConfig(), **detector_kwargs) -> None:
        require("pytriton", "serve", "ssd-serve (in an environment of its own: PyTriton 0.7 needs numpy<2)")
        self.config = config
        self.batch_log = BatchLog()
        self._stop = threading.Event()
        self._serving = threading.Event()
        self.detectors = [Detector(model_path, threads=config.threads, **detector_kwargs)
                          for _ in range(config.instances)]
        try:
            self._bind(first=self.detectors[0])
        except BaseException:
            for detector in self.detectors:
                detector.close()
            raise

    def _bind(self, first: Detector) -> None:
        """Create the Triton object and bind both models to the Detectors."""
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

        config = self.config
        self.model_path = first.model_path
        restricted = [e for e in DEFAULT_PROTECTED_ENDPOINTS if not (config.open_statistics and e == "statistics")]
        self._triton = Triton(
            config=TritonConfig(
                http_address=config.address, http_port=config.http_port,
                grpc_address=config.address, grpc_port=config.grpc_port,
                metrics_address=config.address, metrics_port=config.metrics_port,
                allow_gpu_metrics=False, log_verbose=config.log_verbose, exit_timeout_secs=5,
            ),
            security_config=TritonSecurityConfig(restricted_endpoints=restricted),
        )
        model_config = ModelConfig(max_batch_size=config.max_batch_size,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=config.max_queue_delay_us))
        outputs = [
            Tensor(name="boxes", dtype=np.float32, shape=(-1, 4)),
            Tensor(name="labels", dtype=np.int64, shape=(-1,)),
            Tensor(name="scores", dtype=np.float32, shape=(-1,)),
            Tensor(name="confs", dtype=np.float32, shape=(-1, len(first.class_names))),
            Tensor(name="count", dtype=np.int32, shape=(1,)),
            Tensor(name="error", dtype=bytes, shape=(1,)),
        ]
        parameters = model_parameters(first.class_names, first.spec.input_size, first.config)
        for name, tensor in (
            (config.model_name, Tensor(name=BYTES_INPUT, dtype=bytes, shape=(1,))),
            (raw_model(config.model_name), Tensor(name=RAW_INPUT, dtype=np.uint8, shape=(-1, -1, 3))),
        ):
            self._triton.bind(
                model_name=name,
                infer_func=[DetectorModel(d, tensor.name, self.batch_log) for d in self.detectors],
                inputs=[tensor], outputs=outputs, config=model_config, strict=True,
            )
            _add_parameters(self._triton, name, parameters)

    @property
    def host(self) -> str:
        """Where a client on this machine reaches the server."""
        return "127.0.0.1" if self.config.address in ("0.0.0.0", "") else self.config.address

    def start(self) -> "DetectorServer":
        """Launch tritonserver and load the models (seconds). On a failure, or a
        KeyboardInterrupt meanwhile, shut down what started and re-raise (ServeError)."""
        python_library_first()
        try:
            self._triton.run()
        except Exception as exc:
            self.stop()
            c = self.config
            raise ServeError(f"Triton did not start on ports {c.http_port}/{c.grpc_port}/{c.metrics_port} "
                             f"with {self.model_path}: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        self._serving.set()
        return self

    def wait(self, poll_s: float = 1.0) -> None:
        """Serve until stop() (e.g. from `stop_on_signals`); ServeError when Triton or a
        model instance dies meanwhile."""
        while not self._stop.wait(poll_s):
            if not self._triton.is_alive():
                raise ServeError("Triton Inference Server or a model instance died; see its log above")

    def request_stop(self) -> None:
        """Make wait() return (safe from a signal handler); stop() then shuts down."""
        self._stop.set()

    def stop(self) -> None:
        """Stop Triton (waits up to 5 s for requests in flight) and free the Detectors."""
        self._stop.set()
        self._triton.stop()
        for detector in self.detectors:
            detector.close()

    def __enter__(self) -> "DetectorServer":
        return self if self._serving.is_set() else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_on_signals(server: DetectorServer, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
    """SIGINT/SIGTERM end `server.wait()`; while starting they raise KeyboardInterrupt,
    which start() answers by shutting down. Call from the main thread."""

    def handler(signum: int, frame: object) -> None:
        if server._serving.is_set():
            server.request_stop()
        else:
            raise KeyboardInterrupt(f"signal {signum} while starting")

    for sig in signals:
        signal.signal(sig, handler)
