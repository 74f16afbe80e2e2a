"""The launcher's packed kernel arguments against each CUBIN's parameter layout, byte for
byte: pycuda's prepared calls pack the plan's struct formats (native alignment) into the
parameter buffer the driver copies to the kernel's parameter bank, so each argument's offset
and size must be the CUBIN's EIATTR_KPARAM_INFO entry and the packed size its
EIATTR_CBANK_PARAM_SIZE. Read from NVRTC's CUBIN for every Jetson SM and from nvcc's
(`-cubin -arch sm_XX`) where nvcc is on PATH, and cross-checked with `cuobjdump -elf` where
one is found. The emulators' hand-written adapters would hide a mismatch; this does not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ssd_edge.runtime.cuda import kernel_resources as kr
from ssd_edge.runtime.cuda.plan import ALL_KERNELS, KERNEL_SOURCE, DecodeNmsPlan
from ssd_edge.runtime.detections import PostprocessConfig

try:
    NVRTC = kr.Nvrtc()
except (kr.KernelResourceError, OSError) as exc:  # no wheel, or a broken library
    NVRTC, WHY = None, str(exc)

FORMATS = {**DecodeNmsPlan(3234, 91, 8, PostprocessConfig()).argument_formats(),  # per class and agnostic
           **DecodeNmsPlan(3234, 91, 8, PostprocessConfig(agnostic_nms=True)).argument_formats()}
NVCC_ARCHS = ("sm_87", "sm_90")  # nvcc 13 targets sm_75 and newer; NVRTC 12.9 covers the older Jetsons


def cuobjdump() -> str | None:
    """cuobjdump on PATH, or the copy some wheels ship (triton's)."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton  # noqa: F401 - only to find its bundled CUDA binary utilities
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


@pytest.fixture(scope="module")
def nvrtc_cubins():
    if NVRTC is None:
        pytest.skip(f"NVRTC not available: {WHY}")
    source = KERNEL_SOURCE.read_text()
    return {arch: NVRTC.compile(source, KERNEL_SOURCE.name, arch).cubin for arch in kr.ARCHITECTURES}


@pytest.fixture(scope="module")
def nvcc_cubins(tmp_path_factory):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on PATH")
    out = tmp_path_factory.mktemp("cubin")
    cubins = {}
    for arch in NVCC_ARCHS:
        path = out / f"decode_nms.{arch}.cubin"
        subprocess.run([nvcc, "-cubin", "-arch", arch, "-O3", "-o", str(path), str(KERNEL_SOURCE)],
                       check=True, capture_output=True, timeout=300)
        cubins[arch] = path
    return cubins


def test_every_kernel_has_a_format():
    assert set(FORMATS) == set(ALL_KERNELS)


@pytest.mark.parametrize("arch", kr.ARCHITECTURES)
def test_packed_arguments_match_nvrtc_cubin_layout(nvrtc_cubins, arch):
    layout = kr.cubin_parameters(nvrtc_cubins[arch])
    assert set(ALL_KERNELS) <= set(layout)
    assert kr.parameter_mismatches(FORMATS, nvrtc_cubins[arch], arch) == []


@pytest.mark.parametrize("arch", NVCC_ARCHS)
def test_packed_arguments_match_nvcc_cubin_layout(nvcc_cubins, arch):
    assert kr.parameter_mismatches(FORMATS, nvcc_cubins[arch].read_bytes(), arch) == []


def test_our_reading_of_kparam_info_is_cuobjdumps(nvcc_cubins):
    """The .nv.info parser against NVIDIA's own reader of the same CUBIN."""
    tool = cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or triton's copy)")
    path = nvcc_cubins["sm_87"]
    text = subprocess.run([tool, "-elf", str(path)], check=True, capture_output=True, text=True, timeout=120).stdout
    theirs: dict[str, set[tuple[int, int, int]]] = {}
    for section in re.split(r"\n(?=\.nv\.info\.)", text):
        name = re.match(r"\.nv\.info\.(\w+)", section)
        if name is None:
            continue
        entries = re.findall(r"Ordinal\s*:\s*0x([0-9a-f]+)\s+Offset\s*:\s*0x([0-9a-f]+)\s+Size\s*:\s*0x([0-9a-f]+)",
                             section)
        theirs[name.group(1)] = {tuple(int(v, 16) for v in e) for e in entries}
    ours = kr.cubin_parameters(path.read_bytes())
    for kernel in ALL_KERNELS:
        assert theirs[kernel], f"cuobjdump printed no KPARAM_INFO for {kernel}"
        assert {(p.ordinal, p.offset, p.size) for p in ours[kernel] if p.ordinal >= 0} == theirs[kernel], kernel


@pytest.mark.parametrize("planted, expected", [
    # an int32 where the kernel takes a pointer: every later offset shifts
    (lambda f: "i" + f[1:], "parameter 0: packed at offset 0, 4 bytes; the CUBIN has offset 0, 8 bytes"),
    # one argument dropped at the end
    (lambda f: f[:-1], "the plan packs 6 arguments, the kernel takes 7"),
    # a pointer where the last int32 is: it moves to the next 8-byte boundary
    (lambda f: f[:-1] + "P", "parameter 6: packed at offset 40, 8 bytes; the CUBIN has offset 36, 4 bytes"),
])
def test_a_planted_mismatch_is_reported(nvrtc_cubins, planted, expected):
    formats = dict(FORMATS, ssd_softmax=planted(FORMATS["ssd_softmax"]))
    assert FORMATS["ssd_softmax"] == "PPPiifi"  # the planted formats above assume this signature
    problems = kr.parameter_mismatches(formats, nvrtc_cubins["sm_87"], "sm_87")
    assert any(expected in p and p.startswith("sm_87 ssd_softmax") for p in problems), problems
