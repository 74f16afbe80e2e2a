"""Which NVIDIA GPU is here, the project's one answer to the question.

`gpu_info` asks the CUDA driver API through ctypes (name and compute capability), so the
question can be asked without pycuda, torch or a CUDA toolkit. `describe_gpu` adds the
driver and CUDA versions for benchmark reports and falls back, where the driver API cannot
answer, to `nvidia-smi` (desktop, server) or the device tree (Jetson).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ssd_edge.common.errors import SSDEdgeError

CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


class NoGpu(SSDEdgeError, RuntimeError):
    """No usable NVIDIA GPU; the message says why."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]


def _driver() -> ctypes.CDLL:
    for name in ("libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    raise NoGpu("no NVIDIA driver (libcuda) found")


def _check(status: int, call: str, cuda: ctypes.CDLL | None = None) -> None:
    """NoGpu naming the driver call (once) and its CUresult, by name where the driver says."""
    if status != 0:
        name = ctypes.c_char_p()
        known = cuda is not None and cuda.cuGetErrorName(status, ctypes.byref(name)) == 0 and name.value
        what = f"{name.value.decode()} ({status})" if known else f"CUresult {status}"
        raise NoGpu(f"CUDA driver call {call} failed with {what}")


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device `device` (0: the one TensorRT builds on)."""
    cuda = _driver()
    _check(cuda.cuInit(0), "cuInit", cuda)
    count = ctypes.c_int()
    _check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount", cuda)
    if count.value <= device:
        raise NoGpu(f"no CUDA device {device} ({count.value} visible)")
    handle = ctypes.c_int()
    _check(cuda.cuDeviceGet(ctypes.byref(handle), device), "cuDeviceGet", cuda)
    name = ctypes.create_string_buffer(256)
    _check(cuda.cuDeviceGetName(name, len(name), handle), "cuDeviceGetName", cuda)
    major, minor = ctypes.c_int(), ctypes.c_int()
    for value, attribute in ((major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                             (minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)):
        _check(cuda.cuDeviceGetAttribute(ctypes.byref(value), attribute, handle), "cuDeviceGetAttribute", cuda)
    return GpuInfo(name.value.decode(errors="replace"), (major.value, minor.value))


def driver_cuda_version() -> str | None:
    """The newest CUDA version the installed driver supports ('12.4'), as nvidia-smi's
    banner shows it; None without a driver."""
    try:
        cuda = _driver()
    except NoGpu:
        return None
    version = ctypes.c_int()
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _nvidia_smi() -> dict[str, str] | None:
    """{'name', 'driver', 'cuda'} of the first GPU nvidia-smi lists, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()
        banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if not query:
        return None
    name, _, driver = query[0].partition(",")
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", banner)
    return {"name": name.strip(), "driver": driver.strip(), "cuda": cuda.group(1) if cuda else "?"}


def _jetson() -> dict[str, str] | None:
    """{'name', 'driver', 'cuda'} of a Jetson from its device tree, or None elsewhere."""
    model_file = Path("/proc/device-tree/model")
    if not model_file.exists():
        return None
    model = model_file.read_bytes().rstrip(b"\0").decode(errors="replace")
    if "jetson" not in model.lower() and "nvidia" not in model.lower():
        return None
    cuda, version_file = "?", Path("/usr/local/cuda/version.json")
    if version_file.exists():
        found = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', version_file.read_text())
        cuda = found.group(1) if found else "?"
    return {"name": model, "driver": "JetPack", "cuda": cuda}


def describe_gpu(device: int = 0) -> dict[str, str] | None:
    """{'name', 'driver', 'cuda'} of NVIDIA GPU `device`, or None when none is found.

    The name is the CUDA driver's (`gpu_info`); where the driver API cannot answer, that of
    nvidia-smi or of a Jetson's device tree. `driver` is the driver version (nvidia-smi) or
    'JetPack'; `cuda` the newest CUDA version the driver supports; '?' where unknown.
    """
    try:
        name = gpu_info(device).name
    except NoGpu:
        name = None
    fallback = _nvidia_smi() or _jetson()
    if name is None and fallback is None:
        return None
    described = dict(fallback or {"driver": "?", "cuda": "?"})
    described["name"] = name or described["name"]
    described["cuda"] = driver_cuda_version() or described["cuda"]
    return {key: described[key] for key in ("name", "driver", "cuda")}


def gpu_text(gpu: dict[str, str] | None) -> str:
    """One line for a report: 'Orin (driver JetPack, CUDA 12.2)', or 'none'."""
    if not gpu:
        return "none"
    return f"{gpu['name']} (driver {gpu['driver']}, CUDA {gpu['cuda']})"
