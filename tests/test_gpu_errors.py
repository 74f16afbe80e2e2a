"""What the GPU path says when CUDA fails, on a machine without a GPU: pycuda is replaced by a
stand-in package of the few names runtime/cuda/resources.py calls, raising what pycuda 2026.1
raises (its compiler's OSErrors, its driver's Error with cuGetErrorString's text)."""

from __future__ import annotations

import errno
import sys
import types

import pytest

from ssd_edge.runtime.cuda import resources
from ssd_edge.runtime.cuda.resources import GpuContextLost, GpuError


class _CudaError(Exception):
    """pycuda.driver.Error's stand-in."""


@pytest.fixture
def pycuda(monkeypatch):
    """A stand-in pycuda (pycuda.driver.Error, pycuda.compiler.SourceModule) in sys.modules;
    set `.compile` to what SourceModule should do."""
    package = types.ModuleType("pycuda")
    driver = types.ModuleType("pycuda.driver")
    driver.Error = _CudaError
    compiler = types.ModuleType("pycuda.compiler")
    package.driver, package.compiler = driver, compiler
    state = types.SimpleNamespace(compile=None)
    compiler.SourceModule = lambda source, **kwargs: state.compile()
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "pycuda.compiler", compiler)
    monkeypatch.setattr(resources, "_LOST", [])
    return state


def _raise(exc: BaseException):
    def call():
        raise exc
    return call


def test_missing_nvcc_says_put_nvcc_on_path(pycuda, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    # pytools.prefork.ExecError (an OSError) as pycuda's get_nvcc_version raises it
    pycuda.compile = _raise(OSError("error invoking 'nvcc --version': [Errno 2] No such file or directory"))
    with pytest.raises(GpuError, match=r"compiling decode_nms.cu needs nvcc on PATH \(error invoking 'nvcc"):
        resources.compile_module("", "decode_nms.cu")


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_an_unwritable_compile_cache_is_named_not_blamed_on_nvcc(pycuda, code, tmp_path, monkeypatch):
    """pycuda's cache folder under a read-only HOME raises an OSError too: nvcc is there."""
    (tmp_path / "nvcc").write_text("#!/bin/sh\n")
    (tmp_path / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    cache = "/home/jetson/.cache/pycuda/compiler-cache-v1"
    pycuda.compile = _raise(OSError(code, "Read-only file system" if code == errno.EROFS else "Permission denied",
                                    cache))
    with pytest.raises(GpuError) as caught:
        resources.compile_module("", "decode_nms.cu")
    message = str(caught.value)
    assert f"pycuda cannot write its compile cache {cache}" in message
    assert "PYCUDA_CACHE_DIR" in message and "nvcc on PATH" not in message


def test_another_os_error_with_nvcc_present_is_reported_as_it_is(pycuda, tmp_path, monkeypatch):
    (tmp_path / "nvcc").write_text("#!/bin/sh\n")
    (tmp_path / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    pycuda.compile = _raise(OSError('CUDA SDK library file "libcudadevrt.a" not found'))
    with pytest.raises(GpuError, match=r'^compiling decode_nms.cu failed: CUDA SDK library file "libcudadevrt.a"'):
        resources.compile_module("", "decode_nms.cu")


def test_a_kernel_fault_says_the_process_must_restart(pycuda):
    """A fault shows up at the next synchronisation, maybe in another Detector's call: the
    message says the context is gone for the whole process, and later contexts are refused."""
    fault = _raise(_CudaError("cuStreamSynchronize failed: an illegal memory access was encountered"))
    with pytest.raises(GpuContextLost) as caught:
        resources.check("cuStreamSynchronize", fault)
    message = str(caught.value)
    assert message.startswith("cuStreamSynchronize failed: an illegal memory access was encountered; a kernel fault")
    assert "unusable for every Detector in this process" in message and message.endswith("restart the process")
    with pytest.raises(GpuContextLost, match=r"an earlier CUDA call of this process failed \(cuStreamSynchronize"):
        resources.primary_context()


def test_an_ordinary_cuda_error_is_not_called_fatal(pycuda):
    with pytest.raises(GpuError) as caught:
        resources.check("cuMemAlloc", _raise(_CudaError("cuMemAlloc failed: out of memory")))
    assert not isinstance(caught.value, GpuContextLost)
    assert str(caught.value) == "cuMemAlloc failed: out of memory"
    assert resources._LOST == []


def test_at_exit_unclosed_users_are_freed_before_the_contexts_are_released(monkeypatch):
    """The atexit hook closes every GPU user still open (a Detector nobody closed), inside
    the context's life, and only then releases the primary contexts."""
    events = []

    class Context:
        def release(self):
            events.append("context released")

    class Backend:
        def __init__(self, name, fails=False):
            self.name, self.fails = name, fails

        def close(self):
            events.append(f"{self.name} closed")
            if self.fails:
                raise GpuError("cuMemFree failed: whatever")

    monkeypatch.setattr(resources, "_CONTEXTS", {0: Context()})
    monkeypatch.setattr(resources, "_OPEN", type(resources._OPEN)())
    users = [Backend("first", fails=True), Backend("second")]
    for user in users:
        resources.close_at_exit(user)
    resources._release_contexts()
    assert events[-1] == "context released"
    assert sorted(events[:-1]) == ["first closed", "second closed"]
    assert resources._CONTEXTS == {} and len(resources._OPEN) == 0
