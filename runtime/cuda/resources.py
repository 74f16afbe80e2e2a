"""CUDA resources of the GPU path, through pycuda: one small class per resource (the
primary context, a device buffer, a pinned host buffer, a stream, a compiled module),
each freeing what it holds, and one `check()` through which every CUDA and TensorRT
status goes.

pycuda is imported lazily: this module imports on any machine, and says plainly what is
missing when a GPU path is asked for where it cannot run.
"""

from __future__ import annotations

import atexit
import errno
import shutil
import threading
import weakref
from typing import Any, Callable

import numpy as np

from ssd_edge.common.errors import SSDEdgeError


class GpuError(SSDEdgeError, RuntimeError):
    """A CUDA or TensorRT call failed, or the machine cannot run the GPU path."""


class GpuContextLost(GpuError):
    """A kernel faulted (illegal address, launch failure, device assert, ...): the CUDA
    context is unusable from then on for every Detector of the process, and only a new
    process gets a working one."""


# cuGetErrorString's texts (which pycuda's messages carry) for the "sticky" errors: after one,
# every later call in the context fails the same way, whoever makes it.
STICKY_ERRORS = (
    "an illegal memory access was encountered",  # CUDA_ERROR_ILLEGAL_ADDRESS (700)
    "the launch timed out and was terminated",  # CUDA_ERROR_LAUNCH_TIMEOUT (702)
    "device-side assert triggered",  # CUDA_ERROR_ASSERT (710)
    "hardware stack error",  # CUDA_ERROR_HARDWARE_STACK_ERROR (714)
    "an illegal instruction was encountered",  # CUDA_ERROR_ILLEGAL_INSTRUCTION (715)
    "misaligned address",  # CUDA_ERROR_MISALIGNED_ADDRESS (716)
    "operation not supported on global/shared address space",  # CUDA_ERROR_INVALID_ADDRESS_SPACE (717)
    "invalid program counter",  # CUDA_ERROR_INVALID_PC (718)
    "unspecified launch failure",  # CUDA_ERROR_LAUNCH_FAILED (719)
    "uncorrectable ECC error encountered",  # CUDA_ERROR_ECC_UNCORRECTABLE (214)
)
RESTART = ("the CUDA context is now unusable for every Detector in this process (the fault may come "
           "from an earlier launch on the stream): restart the process")
_LOST: list[str] = []  # the first sticky error's message, once one happened


def _cuda_error_types() -> tuple[type, ...]:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return ()
    return (cuda.Error,)


def check(call: str, function: Callable[..., Any], *args: Any, must_succeed: bool = False, **kwargs: Any) -> Any:
    """Call `function(*args, **kwargs)`, a CUDA (pycuda) or TensorRT call named `call`.

    A CUDA error, or an exception TensorRT raises, becomes a GpuError that names the call
    once (pycuda's own messages already read "cuInit failed: <reason>"); with
    `must_succeed`, so does a False or None result (TensorRT reports most failures that
    way, with the reason in its log).
    """
    try:
        result = function(*args, **kwargs)
    except _cuda_error_types() + (RuntimeError,) as exc:
        if isinstance(exc, GpuError):
            raise
        message = str(exc)
        message = message if message.startswith(f"{call} failed") else f"{call} failed: {message}"
        if any(sticky in message for sticky in STICKY_ERRORS):
            if not _LOST:
                _LOST.append(message)
            raise GpuContextLost(f"{message}; a kernel fault: {RESTART}") from exc
        raise GpuError(message) from exc
    if must_succeed and (result is None or result is False):
        raise GpuError(f"{call} failed")
    return result


def import_pycuda():
    """pycuda.driver, or a GpuError saying how to get it."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        if "libcuda" in str(exc):
            raise GpuError(
                f"no NVIDIA GPU driver on this machine ({exc}): run the ONNX model with backend='onnxruntime' instead"
            ) from None
        raise GpuError(
            f"the GPU path needs pycuda ({exc}); install it with `pip install ssd-edge[gpu]` "
            "(on a Jetson, build it against JetPack's CUDA), or use backend='onnxruntime'"
        ) from None
    return cuda


class CudaContext:
    """A device's primary context, the one TensorRT and onnxruntime use too. Retained once
    per process (see `primary_context`) and kept, as pycuda.autoprimaryctx does; `with
    context:` makes it current on the calling thread for the block, so the objects made in
    it can be used, and freed, from any thread."""

    def __init__(self, device: int = 0) -> None:
        cuda = import_pycuda()
        self._cuda = cuda
        check("cuInit", cuda.init)
        count = check("cuDeviceGetCount", cuda.Device.count)
        if count == 0:
            raise GpuError("no CUDA GPU on this machine: run the ONNX model with backend='onnxruntime' instead")
        if not 0 <= device < count:
            raise GpuError(f"CUDA device {device} does not exist (this machine has {count})")
        self.device = check("cuDeviceGet", cuda.Device, device)
        self._context = check("cuDevicePrimaryCtxRetain", self.device.retain_primary_context)
        self.name = self.device.name()
        self.compute_capability = self.device.compute_capability()

    def __enter__(self) -> "CudaContext":
        check("cuCtxPushCurrent", self._context.push)
        return self

    def __exit__(self, *exc_info: object) -> None:
        check("cuCtxPopCurrent", self._cuda.Context.pop)

    def release(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            check("cuDevicePrimaryCtxRelease", context.detach)


_CONTEXTS: dict[int, CudaContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def primary_context(device: int = 0) -> CudaContext:
    """The process's CudaContext for `device`, retained on first use; a GpuContextLost
    once a kernel has faulted in this process."""
    if _LOST:
        raise GpuContextLost(f"an earlier CUDA call of this process failed ({_LOST[0]}): {RESTART}")
    with _CONTEXTS_LOCK:
        if device not in _CONTEXTS:
            _CONTEXTS[device] = CudaContext(device)
            if len(_CONTEXTS) == 1:
                atexit.register(_release_contexts)
        return _CONTEXTS[device]


_OPEN: "weakref.WeakSet[Any]" = weakref.WeakSet()


def close_at_exit(user: Any) -> None:
    """Close `user` (an object with an idempotent close() holding GPU resources: a backend
    or the doctor's session) at exit if it is still open then, before the contexts go:
    freeing memory after its context was released fails."""
    _OPEN.add(user)


def _release_contexts() -> None:
    """At exit: the unclosed users first (their buffers, streams and engines need the
    context), then the contexts."""
    for user in list(_OPEN):
        try:
            user.close()
        except Exception:  # at exit, one user's failure must not keep the others open
            pass
    _OPEN.clear()
    while _CONTEXTS:
        _, context = _CONTEXTS.popitem()
        try:
            context.release()
        except GpuError:
            pass  # the driver is going away with the process anyway


class DeviceBuffer:
    """`nbytes` of device memory, allocated once. Use inside the context. driver: the
    pycuda.driver-like module to call (default: pycuda.driver itself)."""

    def __init__(self, nbytes: int, what: str = "buffer", driver=None) -> None:
        cuda = driver if driver is not None else import_pycuda()
        self.nbytes = int(nbytes)
        self.what = what
        self._allocation = check(f"cuMemAlloc({what}, {self.nbytes} bytes)", cuda.mem_alloc, max(self.nbytes, 1))

    @property
    def address(self) -> int:
        return int(self._allocation)

    def free(self) -> None:
        if self._allocation is not None:
            allocation, self._allocation = self._allocation, None
            check(f"cuMemFree({self.what})", allocation.free)


class PinnedBuffer:
    """Page-locked host memory seen as a NumPy array, so copies to and from the device are
    truly asynchronous. Use inside the context."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, what: str = "buffer", driver=None) -> None:
        cuda = driver if driver is not None else import_pycuda()
        self.what = what
        self.array: np.ndarray | None = check(f"cuMemHostAlloc({what})", cuda.pagelocked_empty, shape, np.dtype(dtype))

    def free(self) -> None:
        if self.array is not None:
            array, self.array = self.array, None
            check(f"cuMemFreeHost({self.what})", array.base.free)


class Stream:
    """One CUDA stream: every copy and launch of a Detector is queued on it, in order."""

    def __init__(self, driver=None) -> None:
        cuda = driver if driver is not None else import_pycuda()
        self._cuda = cuda
        self._stream = check("cuStreamCreate", cuda.Stream)

    @property
    def handle(self) -> int:
        return int(self._stream.handle)

    @property
    def pycuda_stream(self):
        return self._stream

    def copy_to_device(self, address: int, host: np.ndarray) -> None:
        check("cuMemcpyHtoDAsync", self._cuda.memcpy_htod_async, address, host, self._stream)

    def copy_to_host(self, host: np.ndarray, address: int) -> None:
        check("cuMemcpyDtoHAsync", self._cuda.memcpy_dtoh_async, host, address, self._stream)

    def synchronize(self) -> None:
        check("cuStreamSynchronize", self._stream.synchronize)

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            check("cuStreamSynchronize", stream.synchronize)
            del stream  # pycuda destroys the stream with its last reference


def compile_module(source: str, what: str):
    """`source` compiled for the current device by pycuda's SourceModule (nvcc runs once
    per machine: pycuda caches the binary on disk). Call inside the context."""
    import_pycuda()
    from pycuda.compiler import SourceModule

    try:
        return check(f"nvcc ({what})", SourceModule, source, no_extern_c=True, options=["-O3"])
    except OSError as exc:
        raise GpuError(_compile_os_error(what, exc)) from None


def _compile_os_error(what: str, exc: OSError) -> str:
    """What an OSError from pycuda's compiler means: nvcc missing, or its disk cache (under
    HOME, or PYCUDA_CACHE_DIR) not writable, or something else, said as it is."""
    filename = getattr(exc, "filename", None)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC) and filename:
        return (f"compiling {what}: pycuda cannot write its compile cache {filename} ({exc.strerror}): "
                "set PYCUDA_CACHE_DIR to a writable folder, or PYCUDA_DISABLE_CACHE=1")
    if "nvcc" in str(exc) or shutil.which("nvcc") is None:  # pycuda's ExecError: "error invoking 'nvcc ..."
        return f"compiling {what} needs nvcc on PATH ({exc}); on a Jetson add /usr/local/cuda/bin to PATH"
    return f"compiling {what} failed: {exc}"
