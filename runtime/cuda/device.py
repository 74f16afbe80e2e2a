"""Which NVIDIA GPU is here: name and compute capability from the CUDA driver API through
ctypes, so the question can be asked without pycuda, torch or a CUDA toolkit."""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from ssd_edge.runtime.errors import SSDEdgeError

CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


class NoGpu(SSDEdgeError, RuntimeError):
    """No usable NVIDIA GPU; the message says why."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": list(self.compute_capability)}


def _driver() -> ctypes.CDLL:
    for name in ("libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    raise NoGpu("no NVIDIA driver (libcuda) found")


def _check(status: int, call: str) -> None:
    if status != 0:
        raise NoGpu(f"CUDA driver call {call} failed with CUresult {status}")


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device `device` (0: the one TensorRT builds on)."""
    cuda = _driver()
    _check(cuda.cuInit(0), "cuInit")
    count = ctypes.c_int()
    _check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if count.value <= device:
        raise NoGpu(f"no CUDA device {device} ({count.value} visible)")
    handle = ctypes.c_int()
    _check(cuda.cuDeviceGet(ctypes.byref(handle), device), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    _check(cuda.cuDeviceGetName(name, len(name), handle), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(cuda.cuDeviceGetAttribute(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, handle), "cuDeviceGetAttribute")
    _check(cuda.cuDeviceGetAttribute(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, handle), "cuDeviceGetAttribute")
    return GpuInfo(name.value.decode(errors="replace"), (major.value, minor.value))
