"""Which TensorRT this is, and whether the toolkit supports it.

The runtime and the export need TensorRT 10 or newer (JetPack 6 on a Jetson): named
tensors, `execute_async_v3`, memory pools, strongly typed networks. An older TensorRT is
refused by its version, never met later as a missing attribute. On a Jetson whose JetPack
is too old (JetPack 4.x: Python 3.6 and TensorRT 8.2; JetPack 5.x: TensorRT 8.5), the
`tensorrt` module exists only for the system's own Python, so `import tensorrt` fails in
ours: the Jetson's L4T release (`/etc/nv_tegra_release`) then tells the user why, instead
of "TensorRT is not installed".

    trt = load_tensorrt(error=GpuError)   # the module, or `error` saying what is unsupported
    # ImportError where TensorRT is simply absent: the caller words that for its users
    Capabilities.of(trt).missing()        # what keeps it from building our engines, or None

tensorrt is imported only inside `load_tensorrt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MIN_MAJOR = 10
NOT_SUPPORTED = "this TensorRT/JetPack is not supported (needs TensorRT 10+, JetPack 6)"
TEGRA_RELEASE = Path("/etc/nv_tegra_release")  # on a Jetson: "# R32 (release), REVISION: 7.1, ..."

# L4T major release -> JetPack, for the ones with a TensorRT older than 10.
_OLD_JETPACKS = {32: "JetPack 4.x (TensorRT 8.2, Python 3.6)", 34: "JetPack 5.0 (TensorRT 8.4)",
                 35: "JetPack 5.x (TensorRT 8.5)"}


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.3.0' -> (10, 3, 0); '11.4.0.106' -> (11, 4, 0, 106); stops at the first part
    that is not a number ('8.6.1.post1' -> (8, 6, 1))."""
    numbers = []
    for part in str(version).split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.group() != part:
            break
    return tuple(numbers)


def unsupported(version: str) -> str | None:
    """Why TensorRT `version` cannot be used, or None when it can."""
    numbers = version_tuple(version)
    if not numbers or numbers[0] < MIN_MAJOR:
        return f"TensorRT {version}: {NOT_SUPPORTED}"
    return None


def old_jetpack(release_file: Path | None = None) -> str | None:
    """'L4T R32.7.1, JetPack 4.x (TensorRT 8.2, Python 3.6)' on a Jetson whose JetPack ships a
    TensorRT older than 10; None elsewhere (not a Jetson, JetPack 6 or newer, unreadable)."""
    path = release_file or TEGRA_RELEASE
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    major = int(match.group(1))
    if major not in _OLD_JETPACKS and major >= 36:
        return None
    jetpack = _OLD_JETPACKS.get(major, "a JetPack older than 6")
    return f"L4T R{major}.{match.group(2).rstrip('.')}, {jetpack}"


def no_dla_cores(version: str) -> str:
    """Why TensorRT `version` found no DLA core, and what to do. Which TensorRT drives DLA
    where is a matter of platform and package, not of the Python API (11.x keeps
    DeviceType.DLA everywhere): TensorRT 10.x on JetPack 6 (Jetson AGX Orin and Orin NX;
    Orin Nano has no DLA); none in 11.0 to 11.3, 11.4.0 only on Windows on ARM; from 11.4.1
    on Jetson AGX Orin with JetPack 7.2.2 or later (the SBSA build; Jetson Thor has no DLA)."""
    numbers = version_tuple(version)
    if numbers[:1] == (10,):
        return "this device has no DLA cores (on JetPack 6, Jetson AGX Orin and Orin NX have them; Orin Nano has none)"
    if numbers < (11, 4, 1):
        return (
            f"TensorRT {version} cannot use DLA on a Jetson (TensorRT 11.0 to 11.4.0 have no Jetson DLA support): "
            "build for the GPU (drop --dla-core), or use TensorRT 10.x on JetPack 6, or TensorRT 11.4.1 or newer "
            "on a Jetson AGX Orin with JetPack 7.2.2 or later"
        )
    return (
        "this device has no DLA cores (TensorRT 11.4.1 and newer run DLA only on Jetson AGX Orin with JetPack 7.2.2 "
        "or later; Jetson Thor has none): build for the GPU (drop --dla-core)"
    )


def load_tensorrt(error: type[Exception]) -> ModuleType:
    """`import tensorrt`, refused with `error` where its version is older than 10, or where
    the import fails on a Jetson with a JetPack older than 6. Re-raises the ImportError
    where TensorRT is simply not installed."""
    try:
        import tensorrt
    except ImportError as exc:
        jetson = old_jetpack()
        if jetson:
            raise error(
                f"{NOT_SUPPORTED}: this Jetson runs {jetson}, and `import tensorrt` fails in this Python ({exc}). "
                "Flash JetPack 6 (TensorRT 10.3), or run the ONNX model with backend='onnxruntime'"
            ) from None
        raise
    problem = unsupported(getattr(tensorrt, "__version__", "(unknown version)"))
    if problem:
        raise error(f"{problem}. Install TensorRT 10 or newer (on a Jetson: JetPack 6), "
                    "or run the ONNX model with backend='onnxruntime'")
    return tensorrt


@dataclass(frozen=True)
class Capabilities:
    """What the installed TensorRT's Python API offers, by feature."""

    fp16_flag: bool  # BuilderFlag.FP16: weak typing still there (10.x)
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    only_strongly_typed: bool  # no precision flags at all: every network is strongly typed (11.x)
    memory_pools: bool
    progress_monitor: bool
    dla: bool

    @classmethod
    def of(cls, trt: ModuleType) -> "Capabilities":
        flags, creation = trt.BuilderFlag, trt.NetworkDefinitionCreationFlag
        return cls(
            fp16_flag=hasattr(flags, "FP16"),
            strongly_typed_flag=hasattr(creation, "STRONGLY_TYPED"),
            only_strongly_typed=not hasattr(flags, "FP16") and not hasattr(flags, "INT8"),
            memory_pools=hasattr(trt.IBuilderConfig, "set_memory_pool_limit") and hasattr(trt, "MemoryPoolType"),
            progress_monitor=hasattr(trt, "IProgressMonitor"),
            dla=hasattr(trt.DeviceType, "DLA") and hasattr(flags, "GPU_FALLBACK"),
        )

    def missing(self) -> str | None:
        """What keeps this TensorRT from building our engines, or None."""
        if not self.memory_pools:
            return ("this TensorRT has no memory-pool API (IBuilderConfig.set_memory_pool_limit); "
                    "install TensorRT 10 or newer")
        if not (self.strongly_typed_flag or self.only_strongly_typed):
            return "this TensorRT cannot build strongly typed networks; install TensorRT 10 or newer"
        return None

    def fp16_from_graph(self) -> bool:
        """True when FP16 must come from an FP16 graph (no builder flag for it)."""
        return not self.fp16_flag
