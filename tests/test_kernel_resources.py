"""decode_nms.cu compiled by NVRTC to a CUBIN for every Jetson SM (and Hopper), and every
launch of the decode + NMS plan's worst cases held against that SM's limits. No GPU
needed: the nvidia-cuda-nvrtc-cu12 wheel (the `dev` extra) brings NVRTC; skips only when
it is not installed."""

import struct

import pytest

from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.runtime.cuda import kernel_resources as kr
from ssd_edge.runtime.cuda.plan import (
    AGNOSTIC_MAX_CHUNK,
    ALL_KERNELS,
    BLOCK,
    KERNEL_SOURCE,
    MAX_DETECTIONS,
    MAX_TOP_K,
    DecodeNmsPlan,
)
from ssd_edge.runtime.detections import PostprocessConfig

try:
    NVRTC = kr.Nvrtc()
except (kr.KernelResourceError, OSError) as exc:  # no wheel, or a broken library
    NVRTC = None
    WHY = str(exc)

pytestmark = pytest.mark.skipif(NVRTC is None, reason=f"NVRTC not available: {WHY}" if NVRTC is None else "")

DEPRECATED = "Architectures prior to '<compute/sm>_75' are deprecated"

# (P default boxes, C classes with background, max batch, config): the models we ship and
# the plan's own limits.
WORST_CASES = {
    "ssdlite320-coco": (3234, 91, 32, PostprocessConfig(top_k=300, max_detections=300)),
    "ssd300-vgg16-coco": (8732, 91, 32, PostprocessConfig(top_k=400, max_detections=200)),
    "plan-limits": (8732, 4096, 64, PostprocessConfig(top_k=MAX_TOP_K, max_detections=MAX_DETECTIONS)),
}
WORST_CASES.update({f"{name}-agnostic": (p, c, b, config.replace(agnostic_nms=True))  # the other launch sequence
                    for name, (p, c, b, config) in list(WORST_CASES.items())})


@pytest.fixture(scope="module")
def compiled():
    """{arch: Compiled} and {arch: {kernel: KernelResources}}, compiled once."""
    source = KERNEL_SOURCE.read_text()
    return {arch: kr.kernel_resources(source, arch, nvrtc=NVRTC) for arch in kr.ARCHITECTURES}


def test_nvrtc_targets_every_jetson_architecture():
    assert NVRTC.version() >= (12, 0)
    assert set(kr.ARCHITECTURES) <= set(NVRTC.supported_architectures())


@pytest.mark.parametrize("arch", kr.ARCHITECTURES)
def test_compiles_to_cubin_without_warnings(arch):
    result = NVRTC.compile(KERNEL_SOURCE.read_text(), "decode_nms.cu", arch)
    assert result.cubin[:4] == b"\x7fELF"
    warnings = [line for line in result.log.splitlines() if "warning" in line.lower() and DEPRECATED not in line]
    assert not warnings, "\n".join(warnings)


@pytest.mark.parametrize("arch", kr.ARCHITECTURES)
def test_every_kernel_is_in_the_cubin_without_spills(compiled, arch):
    resources = compiled[arch]
    assert set(resources) == set(ALL_KERNELS)
    for r in resources.values():
        assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0, r
        assert r.registers <= kr.ARCH_LIMITS[arch].max_registers_per_thread
        # Twice the plan's largest block (256 threads) stays launchable: headroom for a register
        # more or two. (sm_53's 32K registers per block cap a 40-register kernel at 768.)
        assert r.max_threads_per_block >= 2 * BLOCK, r


@pytest.mark.parametrize("arch", kr.ARCHITECTURES)
def test_class_nms_stack_is_the_greedy_pass_bit_words(compiled, arch):
    """ssd_class_nms's only local memory is greedy_pass<8>'s `u64 removed[8]`: 8 x 64 = MAX_TOP_K
    bits. If the plan's MAX_TOP_K grows without the array, this notices."""
    assert compiled[arch]["ssd_class_nms"].local_bytes == MAX_TOP_K // 64 * 8
    assert compiled[arch]["ssd_agnostic_nms"].local_bytes == AGNOSTIC_MAX_CHUNK // 64 * 8  # its `removed[4]`
    assert all(compiled[arch][k].local_bytes == 0 for k in ("ssd_softmax", "ssd_merge", "ssd_class_top_k", "ssd_pack"))


@pytest.mark.parametrize("arch", kr.ARCHITECTURES)
@pytest.mark.parametrize("case", sorted(WORST_CASES))
def test_worst_case_launches_fit_without_shared_memory_optin(compiled, arch, case):
    priors, classes, max_batch, config = WORST_CASES[case]
    plan = DecodeNmsPlan(priors, classes, max_batch, config)
    checks = kr.check_plan(plan, max_batch, compiled[arch], kr.ARCH_LIMITS[arch])
    assert [c.kernel for c in checks] == list(plan.kernels)
    for check in checks:
        assert not check.problems, f"{case} on {arch}: {check.kernel}: {check.problems}"
        assert check.shared_bytes <= kr.ARCH_LIMITS[arch].shared_per_block_default


def test_plan_limits_leave_little_shared_memory_headroom(compiled):
    """At top_k = MAX_TOP_K the class kernel uses 46,608 of 49,152 bytes: record it, so that
    a bigger MAX_TOP_K is a conscious decision (it would need the opt-in, and Nano has none)."""
    plan = DecodeNmsPlan(8732, 91, 1, PostprocessConfig(top_k=MAX_TOP_K))
    static = compiled["sm_53"]["ssd_class_nms"].static_shared_bytes
    assert plan.class_shared_bytes + static == 46608
    bigger = kr.check_launch("ssd_class_nms", (90, 1, 1), (256, 1, 1), plan.class_shared_bytes + 8 * 1024,
                             compiled["sm_53"]["ssd_class_nms"], kr.ARCH_LIMITS["sm_53"])
    assert bigger.problems and "49152" in bigger.problems[0]


def test_check_launch_reports_what_a_gpu_would_refuse(compiled):
    def heavy_on(arch):
        return kr.KernelResources("k", arch, registers=64, static_shared_bytes=1040, reserved_shared_bytes=0,
                                  local_bytes=0, spill_store_bytes=0, spill_load_bytes=0, param_bytes=0,
                                  launch_bound_threads=None,
                                  max_threads_per_block=kr.ARCH_LIMITS[arch].max_threads_for(64))

    heavy = heavy_on("sm_53")
    assert heavy.max_threads_per_block == 512  # 32K registers per block on the Nano
    check = kr.check_launch("k", (1, 1, 1), (1024, 1, 1), 0, heavy, kr.ARCH_LIMITS["sm_53"])
    assert any("at most 512" in p for p in check.problems)
    assert any("65536 registers per block" in p for p in check.problems)
    on_orin = kr.check_launch("k", (1, 1, 1), (1024, 1, 1), 0, heavy_on("sm_87"), kr.ARCH_LIMITS["sm_87"])
    assert not on_orin.problems
    big_grid = kr.check_launch("ssd_class_nms", (90, 70000, 1), (256, 1, 1), 0, compiled["sm_87"]["ssd_class_nms"],
                               kr.ARCH_LIMITS["sm_87"])
    assert any("65535" in p for p in big_grid.problems)  # batch is grid y of ssd_class_nms
    shared = kr.check_launch("k", (1, 1, 1), (128, 1, 1), 60 * 1024, heavy_on("sm_87"), kr.ARCH_LIMITS["sm_87"])
    assert not shared.problems and shared.needs_shared_optin  # fits Orin, but only with the opt-in


def test_max_threads_follows_register_allocation_granularity():
    nano, orin = kr.ARCH_LIMITS["sm_53"], kr.ARCH_LIMITS["sm_87"]
    assert nano.max_threads_for(32) == 1024 and nano.max_threads_for(33) == 768  # 40 x 32 per warp, warps by 4
    assert orin.max_threads_for(64) == 1024 and orin.max_threads_for(65) == 896  # 72 x 32 per warp
    assert orin.max_threads_for(255) == 256


def test_ptxas_report_parsing():
    log = """ptxas info    : Compiling entry function 'ssd_merge' for 'sm_87'
ptxas info    : Function properties for ssd_merge
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 1040 bytes smem, 424 bytes cmem[0]
"""
    assert kr.parse_ptxas_log(log) == {"ssd_merge": {"static_shared_bytes": 1040, "local_bytes": 16,
                                                     "spill_store_bytes": 8, "spill_load_bytes": 4,
                                                     "registers": 40}}


def test_not_a_cubin_is_refused():
    with pytest.raises(kr.KernelResourceError, match="ELF") as raised:
        kr.parse_cubin(b"\x00" * 64, "sm_87")
    assert isinstance(raised.value, SSDEdgeError)


def test_unknown_architecture_is_named():
    with pytest.raises(kr.KernelResourceError, match="sm_99"):
        kr.kernel_resources(KERNEL_SOURCE.read_text(), "sm_99", nvrtc=NVRTC)


def test_cubin_and_ptxas_disagreeing_is_an_error(monkeypatch):
    real = kr.parse_ptxas_log

    def off_by_one(log):
        parsed = real(log)
        parsed["ssd_merge"]["registers"] += 1
        return parsed

    monkeypatch.setattr(kr, "parse_ptxas_log", off_by_one)
    with pytest.raises(kr.KernelResourceError, match="ssd_merge: registers"):
        kr.kernel_resources(KERNEL_SOURCE.read_text(), "sm_87", nvrtc=NVRTC)


def test_elf_register_count_is_read_from_nv_info(compiled):
    """The register count comes from EIATTR_REGCOUNT; on pre-Hopper CUBINs the .text
    section's sh_info top byte holds it too: a third, independent reading."""
    cubin = NVRTC.compile(KERNEL_SOURCE.read_text(), "decode_nms.cu", "sm_87").cubin
    for name, _type, _offset, _size, _link, info in kr._elf_sections(cubin):
        if name.startswith(".text."):
            assert info >> 24 == compiled["sm_87"][name[len(".text."):]].registers
    assert struct.unpack_from("<H", cubin, 0x12)[0] == 190  # e_machine EM_CUDA


@pytest.mark.parametrize("arch", kr.ARCHITECTURES)
def test_prepared_call_argument_sizes_match_the_cubin(compiled, arch):
    """The launcher's prepared calls pack each kernel's arguments with `struct` in the plan's
    format (native alignment, as pycuda's prepared_async_call does): the packed size must be
    the CUBIN's parameter bank size (EIATTR_CBANK_PARAM_SIZE). Sizes only: the per-parameter
    offsets (EIATTR_KPARAM_INFO) are left to a fuller layout check."""
    formats = {**DecodeNmsPlan(3234, 91, 8, PostprocessConfig()).argument_formats(),
               **DecodeNmsPlan(3234, 91, 8, PostprocessConfig(agnostic_nms=True)).argument_formats()}
    assert set(formats) == set(ALL_KERNELS)
    for kernel, fmt in formats.items():
        assert struct.calcsize(fmt) == compiled[arch][kernel].param_bytes, (kernel, fmt)
