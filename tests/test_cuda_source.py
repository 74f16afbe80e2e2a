"""The CUDA decode + NMS source compiles for the Jetson and desktop architectures: with nvcc
to PTX where an nvcc on PATH can target the SM, else with NVRTC 12.9 from the
nvidia-cuda-nvrtc-cu12 wheel (the `dev` extra) straight to machine code, which reaches
sm_53 and sm_72 that CUDA 13's nvcc dropped. No GPU needed. Resources per SM and launch
limits: test_kernel_resources.py."""

import re
import shutil
import subprocess

import pytest

from ssd_edge.runtime.cuda import kernel_resources
from ssd_edge.runtime.cuda.plan import ALL_KERNELS, KERNEL_SOURCE

# Jetson Nano, Xavier, Orin; Hopper.
ARCHITECTURES = {"sm_53": "Jetson Nano", "sm_72": "Jetson Xavier", "sm_87": "Jetson Orin", "sm_90": "Hopper"}

NVCC = shutil.which("nvcc")


def supported_architectures() -> set[str]:
    """compute_XY names this nvcc can target, from `nvcc --list-gpu-arch`."""
    listing = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    return {name.replace("compute_", "sm_") for name in re.findall(r"compute_\d+", listing)}


def nvrtc_cubin_kernels(arch: str) -> set[str]:
    """Kernels in the CUBIN that NVRTC 12.9 (the nvidia-cuda-nvrtc-cu12 wheel) compiles for
    `arch`; skips only when that wheel is not installed."""
    try:
        nvrtc = kernel_resources.Nvrtc()
    except (kernel_resources.KernelResourceError, OSError) as exc:
        pytest.skip(f"neither an nvcc that targets {arch} nor NVRTC: {exc}")
    compiled = nvrtc.compile(KERNEL_SOURCE.read_text(), "decode_nms.cu", arch)
    warnings = [line for line in compiled.log.splitlines()
                if "warning" in line.lower() and "are deprecated" not in line]
    assert not warnings, "\n".join(warnings)
    return kernel_resources.cubin_kernels(compiled.cubin)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_kernel_source_compiles_for_every_jetson(arch, tmp_path):
    """nvcc to PTX where it can target `arch`; otherwise (CUDA 13 dropped sm_53 and sm_72,
    or no nvcc at all) NVRTC 12.9 straight to a CUBIN, so no SM goes unchecked."""
    if NVCC is None or arch not in supported_architectures():
        assert nvrtc_cubin_kernels(arch) == set(ALL_KERNELS)
        return
    ptx = tmp_path / f"decode_nms_{arch}.ptx"
    result = subprocess.run(
        [NVCC, "--ptx", f"-arch={arch}", "-Werror", "all-warnings", str(KERNEL_SOURCE), "-o", str(ptx)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    for kernel in ALL_KERNELS:
        assert f".entry {kernel}(" in text, f"{kernel} missing from the PTX"


def test_softmax_uses_accurate_expf_and_ieee_division(tmp_path):
    """The float32 softmax must be CUDA's accurate expf (its range reduction rounds down,
    fma.rm.f32, which __expf and fast-math lack) and IEEE division (div.rn.f32, not
    div.approx / div.full), never contracted: the comparison rule's 1e-6 is budgeted on it."""
    source = KERNEL_SOURCE.read_text()
    assert "__expf(" not in source and "use_fast_math" not in source
    if NVCC is None or "sm_87" not in supported_architectures():
        pytest.skip("no nvcc that targets sm_87 to read the PTX")
    ptx = tmp_path / "decode_nms.ptx"
    subprocess.run([NVCC, "--ptx", "-arch=sm_87", "-O3", str(KERNEL_SOURCE), "-o", str(ptx)], check=True)
    text = ptx.read_text()
    softmax = text[text.index(".entry ssd_softmax("):]
    softmax = softmax[:softmax.index("\n}\n")]
    assert "fma.rm.f32" in softmax and "ex2.approx.ftz.f32" in softmax  # libdevice __nv_expf
    assert "div.rn.f32" in softmax and "div.approx" not in softmax and "div.full" not in softmax
    assert not re.search(r"\.f64\b", softmax)  # no float64 left in the softmax
