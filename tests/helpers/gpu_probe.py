"""Whether the GPU tests can run here, and why not: the one probe the GPU and TensorRT
tests share.

A GPU test skips only when the GPU path is truly absent (pycuda not installed, no NVIDIA
driver, no CUDA device); a TensorRT test skips only when TensorRT is not installed. A probe
that is broken (pycuda installed but not importing, cuInit failing for another reason,
TensorRT installed but not importing) fails the tests loudly instead: on a Jetson that is
exactly what the user needs to see.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

import pytest

USABLE, ABSENT, BROKEN = "usable", "absent", "broken"
NO_DEVICE_MESSAGES = ("no CUDA-capable device", "CUDA_ERROR_NO_DEVICE")


@dataclass(frozen=True)
class Probe:
    state: str  # USABLE, ABSENT or BROKEN
    reason: str


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # sys.modules[name] is None: blocked, as good as absent
        return False


def probe_gpu() -> Probe:
    """Ask pycuda (the runtime's GPU path) for a CUDA device."""
    if not _installed("pycuda"):
        return Probe(ABSENT, "pycuda is not installed")
    try:
        cuda = importlib.import_module("pycuda.driver")
    except ImportError as exc:
        if "libcuda" in str(exc):
            return Probe(ABSENT, f"no NVIDIA driver ({exc})")
        return Probe(BROKEN, f"pycuda is installed but does not import: {exc}")
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # noqa: BLE001 - pycuda.driver.Error, or anything a broken install raises
        if any(text in str(exc) for text in NO_DEVICE_MESSAGES):
            return Probe(ABSENT, f"no CUDA GPU ({exc})")
        return Probe(BROKEN, f"the CUDA driver is there but fails: {type(exc).__name__}: {exc}")
    if count == 0:
        return Probe(ABSENT, "no CUDA GPU")
    return Probe(USABLE, f"{count} CUDA device(s)")


def require_gpu(probe: Probe | None = None) -> None:
    """Skip when there is no GPU path here; fail when the probe is broken."""
    probe = probe or probe_gpu()
    if probe.state == ABSENT:
        pytest.skip(probe.reason)
    if probe.state == BROKEN:
        pytest.fail(f"GPU probe broken: {probe.reason}", pytrace=False)


def require_tensorrt(probe: Probe | None = None):
    """The tensorrt module, with a usable GPU. Skips only when TensorRT is not installed;
    a TensorRT that does not import, a broken GPU probe or no GPU beside TensorRT fail."""
    if not _installed("tensorrt"):
        pytest.skip("TensorRT is not installed")
    try:
        tensorrt = importlib.import_module("tensorrt")
    except Exception as exc:  # noqa: BLE001 - an installed TensorRT that does not load is a failure
        pytest.fail(f"TensorRT is installed but does not import: {type(exc).__name__}: {exc}", pytrace=False)
    probe = probe or probe_gpu()
    if probe.state != USABLE:
        pytest.fail(f"TensorRT {getattr(tensorrt, '__version__', '?')} is installed but the GPU probe says "
                    f"{probe.state}: {probe.reason}", pytrace=False)
    return tensorrt
