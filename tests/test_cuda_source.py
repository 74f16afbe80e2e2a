"""The CUDA decode + NMS source compiles wherever a CUDA compiler is: nvcc to PTX for the
Jetson and desktop architectures, and NVRTC (what CuPy's RawModule uses) when the
cuda-python bindings are installed. No GPU needed."""

import re
import shutil
import subprocess

import pytest

from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, KERNELS

# Jetson Nano, Xavier, Orin; Hopper.
ARCHITECTURES = {"sm_53": "Jetson Nano", "sm_72": "Jetson Xavier", "sm_87": "Jetson Orin", "sm_90": "Hopper"}

NVCC = shutil.which("nvcc")


def supported_architectures() -> set[str]:
    """compute_XY names this nvcc can target, from `nvcc --list-gpu-arch`."""
    listing = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    return {name.replace("compute_", "sm_") for name in re.findall(r"compute_\d+", listing)}


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_kernel_source_compiles_to_ptx(arch, tmp_path):
    if arch not in supported_architectures():
        version = subprocess.run([NVCC, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
        pytest.skip(f"this nvcc ({version}) cannot target {arch} ({ARCHITECTURES[arch]}): "
                    "not in `nvcc --list-gpu-arch`")
    ptx = tmp_path / f"decode_nms_{arch}.ptx"
    result = subprocess.run(
        [NVCC, "--ptx", f"-arch={arch}", "-Werror", "all-warnings", str(KERNEL_SOURCE), "-o", str(ptx)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    for kernel in KERNELS:
        assert f".entry {kernel}(" in text, f"{kernel} missing from the PTX"


def test_kernel_source_compiles_with_nvrtc():
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python (NVRTC bindings) is not installed")
    program_status, program = nvrtc.nvrtcCreateProgram(KERNEL_SOURCE.read_bytes(), b"decode_nms.cu", 0, [], [])
    assert program_status == nvrtc.nvrtcResult.NVRTC_SUCCESS
    options = [b"--gpu-architecture=compute_87"]
    (status,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
    _, size = nvrtc.nvrtcGetProgramLogSize(program)
    log = bytearray(size)  # a mutable buffer: NVRTC writes into it (b" " * 1 is CPython's shared b" "!)
    nvrtc.nvrtcGetProgramLog(program, log)
    assert status == nvrtc.nvrtcResult.NVRTC_SUCCESS, bytes(log).decode(errors="replace")
