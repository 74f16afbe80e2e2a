"""What machine a benchmark ran on: CPU model and flags, cores, load, GPU, library versions.

Torch-free, and it imports nothing to learn a version: a library already imported gives
its `__version__`, any other its installed distribution's version. The GPU comes from
`nvidia-smi` (desktop, server) or the device tree (Jetson). Every benchmark in this
repository heads its results with `markdown(describe(...))`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

RUNTIME_LIBRARIES = ("numpy", "cv2", "onnxruntime", "tensorrt", "pycuda")


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags, from /proc/cpuinfo where there is one."""
    model, flags = "", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def has_vnni(flags: set[str]) -> bool:
    """Whether the CPU has int8 dot-product instructions (x86 VNNI/AMX, Arm dotprod)."""
    return bool(VNNI_FLAGS & flags)


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def library_version(module: str) -> str | None:
    """The version of `module` without importing it: its `__version__` when it is already
    imported, else that of the installed distribution providing it; None when absent."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return getattr(loaded, "__version__", None)
    for distribution in _distributions().get(module, [module]):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions(*modules: str) -> dict[str, str]:
    """{module: version} for the given modules that are installed."""
    found = {name: library_version(name) for name in modules}
    return {name: version for name, version in found.items() if version}


def gpu_description() -> dict[str, str] | None:
    """{'name', 'driver', 'cuda'} of the first NVIDIA GPU, or None when there is none."""
    if shutil.which("nvidia-smi"):
        try:
            query = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip().splitlines()
            banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        if query:
            name, _, driver = query[0].partition(",")
            cuda = re.search(r"CUDA Version:\s*([\d.]+)", banner)
            return {"name": name.strip(), "driver": driver.strip(), "cuda": cuda.group(1) if cuda else "?"}
    jetson = Path("/proc/device-tree/model")
    if jetson.exists():
        model = jetson.read_bytes().rstrip(b"\0").decode(errors="replace")
        if "jetson" in model.lower() or "nvidia" in model.lower():
            return {"name": model, "driver": "JetPack", "cuda": _jetson_cuda_version() or "?"}
    return None


def _jetson_cuda_version() -> str | None:
    version_file = Path("/usr/local/cuda/version.json")
    if version_file.exists():
        found = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', version_file.read_text())
        return found.group(1) if found else None
    return None


def describe(*modules: str) -> dict[str, object]:
    """The machine as plain data: CPU, cores, load average, GPU, Python and the versions of
    numpy and `modules`. torch's thread count is included when the caller imported torch."""
    model, flags = cpu_model_and_flags()
    info: dict[str, object] = {
        "cpu": model,
        "vnni": has_vnni(flags),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": versions("numpy", *modules),
    }
    gpu = gpu_description()
    if gpu is not None:
        info["gpu"] = gpu
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def gpu_text(info: dict[str, object]) -> str:
    gpu = info.get("gpu")
    if not gpu:
        return "none"
    return f"{gpu['name']} (driver {gpu['driver']}, CUDA {gpu['cuda']})"


def markdown(info: dict[str, object]) -> str:
    """The machine as markdown bullet lines."""
    versions_text = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"- CPU: {info['cpu']} ({info['cores']} logical cores visible; int8 dot product (VNNI): "
        f"{'yes' if info['vnni'] else 'no'}); {info['os']}",
        f"- GPU: {gpu_text(info)}",
        f"- Python {info['python']}; {versions_text}",
    ]
    if info.get("load_average") is not None:
        lines.append(f"- 1-minute load average when described: {info['load_average']}")
    if "torch_threads" in info:
        lines.append(f"- torch threads: {info['torch_threads']}")
    return "\n".join(lines)
