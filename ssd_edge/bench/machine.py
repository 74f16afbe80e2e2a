"""What machine a benchmark ran on: CPU model and flags, cores, load, GPU, library versions.

Torch-free, and it imports nothing to learn a version: a library already imported gives
its `__version__`, any other its installed distribution's version. The GPU comes from
`ssd_edge.runtime.cuda.device.describe_gpu` (the CUDA driver, else nvidia-smi or a
Jetson's device tree). Every benchmark in this repository heads its results with
`markdown(describe(...))`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

from ssd_edge.runtime.cuda import device

RUNTIME_LIBRARIES = ("numpy", "cv2", "onnxruntime", "openvino", "tensorrt", "pycuda")


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


BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX512_BF16 / AMX, Arm BF16


def has_bf16(flags: set[str]) -> bool:
    """Whether the CPU computes in bfloat16 natively (what OpenVINO's bf16 precision needs)."""
    return bool(BF16_FLAGS & flags)


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


def describe(*modules: str) -> dict[str, object]:
    """The machine as plain data: CPU, cores, load average, GPU, Python and the versions of
    numpy and `modules`. torch's thread count is included when the caller imported torch."""
    model, flags = cpu_model_and_flags()
    info: dict[str, object] = {
        "cpu": model,
        "vnni": has_vnni(flags),
        "bf16": has_bf16(flags),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": versions("numpy", *modules),
    }
    gpu = device.describe_gpu()
    if gpu is not None:
        info["gpu"] = gpu
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def gpu_text(info: dict[str, object]) -> str:
    """The GPU of a `describe()` result as one line, or 'none'."""
    return device.gpu_text(info.get("gpu"))


def markdown(info: dict[str, object]) -> str:
    """The machine as markdown bullet lines."""
    versions_text = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"- CPU: {info['cpu']} ({info['cores']} logical cores visible; int8 dot product (VNNI): "
        f"{'yes' if info['vnni'] else 'no'}; bf16: {'yes' if info.get('bf16') else 'no'}); {info['os']}",
        f"- GPU: {gpu_text(info)}",
        f"- Python {info['python']}; {versions_text}",
    ]
    if info.get("load_average") is not None:
        lines.append(f"- 1-minute load average when described: {info['load_average']}")
    if "torch_threads" in info:
        lines.append(f"- torch threads: {info['torch_threads']}")
    return "\n".join(lines)
