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

Starting is guarded: the three ports are checked free before anything starts (and a
tritonserver that exits while starting is reported with its reason, e.g. a port taken
meanwhile); the models are written into the workspace's model store before tritonserver
starts, which loads them before it opens its ports, so /v2/health/ready never answers ready
while a model is missing; the server identifies itself by a unique id, and nothing is ever
sent to a server this process did not start. Workspaces (in PyTriton's home, ~/.cache/pytriton)
are named `ssd-serve-<pid>-<random>` and locked while in use: those of killed servers are
removed on the next start.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import glob
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

import numpy as np

from ssd_edge.common.errors import SSDEdgeError, UsageError
from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.serve.environment import require_pytriton
from ssd_edge.runtime.serve.inputs import DEFAULT_MAX_MEGAPIXELS, limit_opencv_pixels
from ssd_edge.runtime.serve.model import BatchLog, DetectorModel
from ssd_edge.runtime.serve.protocol import BYTES_INPUT, RAW_INPUT, model_parameters, raw_model

LOG = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 300.0  # tritonserver's start and model load; ends at once when it exits
WORKSPACE_PREFIX = "ssd-serve-"


class ServeError(SSDEdgeError, RuntimeError):
    """The server cannot start or stopped serving; the message says why."""


class PortInUseError(ServeError):
    """A port the server would listen on is taken (by another server or program)."""


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
    max_megapixels: the most pixels of one encoded image, read from its header before it is
    decoded; a larger one is refused alone through its request's `error` output.
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
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS

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
        if not self.max_megapixels > 0:
            raise UsageError(f"max_megapixels must be above 0, got {self.max_megapixels}")
        if not self.model_name or "/" in self.model_name:
            raise UsageError(f"model_name must be a non-empty name without '/', got {self.model_name!r}")

    @property
    def ports(self) -> dict[str, int]:
        """{"HTTP": port, "gRPC": port, "metrics": port}."""
        return {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}


def check_ports_free(config: ServeConfig) -> None:
    """PortInUseError naming the first of the three ports that cannot be bound on
    `config.address` now (another ssd-serve, or any program, listens there); ServeError
    when the address itself cannot be listened on."""
    for label, port in config.ports.items():
        try:
            infos = socket.getaddrinfo(config.address or "0.0.0.0", port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ServeError(f"cannot listen on address {config.address!r}: {exc.strerror}") from None
        family, kind, proto, _, where = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
            try:
                probe.bind(where)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(f"{label} port {port} on {config.address} is already in use") from None
                raise ServeError(f"cannot listen on {config.address} port {port} ({label}): "
                                 f"{exc.strerror or exc}") from None


def _port_in_use_from_log(log: str, config: ServeConfig) -> PortInUseError | None:
    """The port tritonserver's log says was taken (it exits when it cannot bind one)."""
    for line in log.splitlines():
        if "already in use" in line.lower():
            found = re.search(r":(\d+)'?\s+already in use", line)
            for label, port in config.ports.items():
                if found and int(found.group(1)) == port:
                    return PortInUseError(f"{label} port {port} on {config.address} is already in use")
            return PortInUseError(f"a port of {config.address} is already in use: {line.strip()}")
    return None


def _log_end(log: str, lines: int = 8) -> str:
    """The last lines of tritonserver's log that say something (errors first)."""
    said = [line.strip()[:300] for line in log.splitlines() if line.strip()]  # a stub's traceback is one line
    errors = [line for line in said if line[:1] == "E" or "error" in line.lower()]
    return " | ".join((errors or said)[-lines:]) or "(no output)"


class Workspace:
    """PyTriton's workspace folder for one server: `<home>/ssd-serve-<pid>-<random>`, held
    by an flock on `<folder>.lock` while this process lives, so that a later start tells
    a killed server's folder (lock free) from a running one's. `pytriton` is PyTriton's
    Workspace over the folder (it removes the folder when Triton stops)."""

    def __init__(self, home: Path) -> None:
        from pytriton.utils.workspace import Workspace as PyTritonWorkspace

        home.mkdir(parents=True, exist_ok=True)
        name = f"{WORKSPACE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.lock_path = home / (name + ".lock")
        self._lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # held before the folder exists: never seen unlocked
        self.pytriton = PyTritonWorkspace(home / name)
        self.path = self.pytriton.path

    def release(self) -> None:
        """Remove what Triton left of the folder, then the lock (idempotent)."""
        if self._lock is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        os.close(self._lock)
        self._lock = None


def remove_stale_workspaces(home: Path) -> list[Path]:
    """Remove the workspace folders (and lock files) in `home` that killed ssd-serve
    processes left: those whose lock nobody holds. Returns the folders removed."""
    removed: list[Path] = []
    try:
        entries = sorted(home.iterdir())
    except OSError:
        return removed
    for lock_path in (p for p in entries if p.name.startswith(WORKSPACE_PREFIX) and p.name.endswith(".lock")):
        try:
            handle = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            continue  # a running server's
        try:
            folder = lock_path.with_name(lock_path.name[:-len(".lock")])
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(handle)
    known = {p.name[:-len(".lock")] for p in entries if p.name.endswith(".lock")}
    for folder in (p for p in entries if p.name.startswith(WORKSPACE_PREFIX) and p.is_dir()):
        if folder.name not in known:  # its lock went first: the folder of a server killed while stopping
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _clean_models_locally(manager) -> None:
    """PyTriton's ModelManager.clean without its unload requests: Triton.stop() calls it
    after tritonserver has stopped, when whatever answers on the ports is not ours."""
    for model in list(manager.models):
        model.clean()
    manager._models.clear()


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


def _guard_backend_model(version_dir: Path) -> None:
    """Put `triton_backend_model.py` in front of PyTriton's Python-backend model.py (which
    becomes pytriton_model.py beside it): it answers requests with empty inputs itself."""
    (version_dir / "model.py").replace(version_dir / "pytriton_model.py")
    shutil.copyfile(Path(__file__).with_name("triton_backend_model.py"), version_dir / "model.py")


def _add_parameters(triton, model_name: str, parameters: dict[str, str]) -> bool:
    """Add `parameters` to a bound model's Triton config and rewrite its config in the local
    model store. PyTriton 0.7 has no public way (its ModelConfig has no parameters); this
    extends the backend parameters of the config it generates, a private API of the pinned
    version: on failure, warn and go on."""
    try:
        model = next(m for m in triton._model_manager.models if m.model_name == model_name)
        model._get_triton_model_config().backend_parameters.update(parameters)
        store = triton._workspace.model_store_path
        (store / model_name / "config.pbtxt").unlink()  # bind() wrote it; written again with the parameters
        model.generate_model(store)
        _guard_backend_model(store / model_name / str(model.model_version))
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
        require_pytriton()  # in an environment of its own: PyTriton 0.7 needs numpy<2
        check_ports_free(config)  # before the model loads: a taken port is said in a second
        limit_opencv_pixels(config.max_megapixels)
        self.config = config
        self.batch_log = BatchLog()
        self._stop = threading.Event()
        self._serving = threading.Event()
        self._stopped = False
        self.server_id = f"ssd-serve-{os.getpid()}-{secrets.token_hex(4)}"
        self.detectors = [Detector(model_path, threads=config.threads, model_thresholds=True, **detector_kwargs)
                          for _ in range(config.instances)]
        self.workspace: Workspace | None = None
        try:
            self._bind(first=self.detectors[0])
        except BaseException:
            self._release()
            raise

    def _bind(self, first: Detector) -> None:
        """Create the Triton object (its models written into a local model store, loaded
        by tritonserver before it opens its ports) and bind both models to the Detectors."""
        from pytriton.constants import PYTRITON_HOME
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import (
            DEFAULT_PROTECTED_ENDPOINTS,
            Triton,
            TritonConfig,
            TritonLifecyclePolicy,
            TritonSecurityConfig,
        )

        config = self.config
        self.model_path = first.model_path
        for folder in remove_stale_workspaces(PYTRITON_HOME):
            LOG.info("removed %s, the workspace of an ssd-serve that was killed", folder)
        self.workspace = Workspace(PYTRITON_HOME)
        restricted = [e for e in DEFAULT_PROTECTED_ENDPOINTS if not (config.open_statistics and e == "statistics")]
        self._triton = Triton(
            config=TritonConfig(
                id=self.server_id,
                http_address=config.address, http_port=config.http_port,
                grpc_address=config.address, grpc_port=config.grpc_port,
                metrics_address=config.address, metrics_port=config.metrics_port,
                allow_gpu_metrics=False, log_verbose=config.log_verbose, exit_timeout_secs=5,
                strict_readiness=True,
            ),
            workspace=self.workspace.pytriton,
            triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=True, local_model_store=True),
            security_config=TritonSecurityConfig(restricted_endpoints=restricted),
        )
        manager = self._triton._model_manager
        manager.clean = functools.partial(_clean_models_locally, manager)
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
                infer_func=[DetectorModel(d, tensor.name, self.batch_log, config.max_megapixels)
                            for d in self.detectors],
                inputs=[tensor], outputs=outputs, config=model_config, strict=True,
            )
            _add_parameters(self._triton, name, parameters)

    @property
    def host(self) -> str:
        """Where a client on this machine reaches the server."""
        return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.config.address, self.config.address)

    def start(self) -> "DetectorServer":
        """Launch tritonserver (it loads both models, then opens its ports) and connect the
        models (seconds). PortInUseError when a port is taken; ServeError with tritonserver's
        reason when it exits while starting. On a failure, or a KeyboardInterrupt meanwhile,
        shut down what started and re-raise."""
        python_library_first()
        try:
            check_ports_free(self.config)
            self._launch()
            self._triton.connect()
        except SSDEdgeError:
            self.stop()
            raise
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

    def _launch(self) -> None:
        """Start tritonserver and wait until it answers as this server (its id), ready;
        ServeError at once when it exits meanwhile."""
        self._triton._run_server()  # PyTriton's launch of the tritonserver child, without its blind wait
        process = self._triton._triton_server
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._answers_as_ours():
            if not process.is_alive():
                log = process.logs()
                taken = _port_in_use_from_log(log, self.config)
                if taken is not None:
                    raise taken
                raise ServeError(f"Triton Inference Server exited while starting with {self.model_path}: "
                                 f"{_log_end(log)}")
            if time.monotonic() > deadline:
                raise ServeError(f"Triton Inference Server was not ready within {STARTUP_TIMEOUT_S:g} s; "
                                 f"its log ends: {_log_end(process.logs())}")
            time.sleep(0.2)

    def _answers_as_ours(self) -> bool:
        """Whether the HTTP port answers with this server's id and says it is ready."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"http://{host}:{self.config.http_port}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{base}/v2", timeout=2) as answer:
                if json.loads(answer.read()).get("name") != self.server_id:
                    return False
            with opener.open(f"{base}/v2/health/ready", timeout=2) as answer:
                return answer.status == 200
        except (OSError, ValueError):  # not listening yet, not ready (HTTP 400), or not Triton
            return False

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
        """Stop Triton (waits up to 5 s for requests in flight), free the Detectors and
        remove the workspace (idempotent). Sends nothing to the ports: once tritonserver
        has stopped, whatever answers there is not this server."""
        self._stop.set()
        if self._stopped:
            return
        self._stopped = True
        try:
            self._triton.stop()
        finally:
            self._release()

    def _release(self) -> None:
        for detector in self.detectors:
            detector.close()
        if self.workspace is not None:
            self.workspace.release()

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
