"""What machine a benchmark ran on: CPU model and flags, cores, threads, GPU, library versions."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path


def cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", "unknown CPU", platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return model, flags


def has_vnni(flags: set[str]) -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def versions(*modules: str) -> dict[str, str]:
    found = {}
    for name in modules:
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            continue
    return found


def describe(*modules: str) -> dict[str, object]:
    model, flags = cpu_model_and_flags()
    info: dict[str, object] = {
        "cpu": model,
        "vnni": has_vnni(flags),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions("numpy", *modules),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def markdown(info: dict[str, object]) -> str:
    versions_text = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"- CPU: {info['cpu']} ({info['cores']} cores visible; VNNI: {'yes' if info['vnni'] else 'no'})",
        f"- GPU: {info.get('gpu', 'none')}",
        f"- Python {info['python']}; {versions_text}",
    ]
    if "torch_threads" in info:
        lines.append(f"- torch threads: {info['torch_threads']}")
    return "\n".join(lines)
