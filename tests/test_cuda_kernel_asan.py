"""runtime/cuda/decode_nms.cu under AddressSanitizer + UBSan (tests/helpers/cuda_asan.py):
every buffer at exactly its size, the dynamic shared memory exactly what the plan requests with
the slack beyond it poisoned. The real kernels run clean and agree with NumPy by the float32
kernel's rule; a planted off-by-one read at the end of the logits (the prefilter's loop) and a
plan that under-allocates a kernel's shared region are both reported (the padded emulations
miss them)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan
from ssd_edge.runtime.doctor.kernel_cases import kernel_difference
from tests.helpers import cuda_asan, cuda_tsan
from tests.helpers.decode_nms_cases import agnostic_edge_cases, edge_cases, prefilter_cases, random_batches
from tests.test_cuda_kernel_tsan import SMALL_BLOCK, agnostic_case, selecting_case

pytestmark = pytest.mark.skipif(cuda_tsan.compiler() is None, reason="no C++ compiler for the threaded emulation")

SOURCE = KERNEL_SOURCE.read_text()


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_asan")


@pytest.fixture(scope="module")
def sanitized(build_dir):
    try:
        return cuda_asan.build(build_dir)
    except cuda_asan.SanitizerUnavailable as exc:
        pytest.skip(f"cannot build with -fsanitize=address,undefined: {exc}")


def run(executable, case, work_dir, block=SMALL_BLOCK, plan=None) -> cuda_asan.AsanRun:
    plan = plan or DecodeNmsPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
    kernels = cuda_asan.AsanDecodeNms(executable, plan, case.priors, work_dir, block=block)
    return kernels(case.locs, case.confs, case.image_sizes)


CASES = [selecting_case(), random_batches(batches=(3,))[0], *edge_cases()[1:4],
         *[c for c in prefilter_cases() if c.name in ("threshold-boundary-0.3", "huge-logits")],
         agnostic_case(), *[c for c in agnostic_edge_cases() if c.name != "agnostic-identical-scores-and-boxes"]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_real_kernels_are_clean_at_exact_sizes_and_equal_numpy(sanitized, tmp_path, case):
    result = run(sanitized, case, tmp_path)
    assert result.report is None, result.report
    difference = kernel_difference(case, result.detections, result.probabilities, result.possible)
    assert difference is None, f"{case.name}: {difference}"


@pytest.mark.parametrize("make", [selecting_case, agnostic_case], ids=["per-class", "agnostic"])
def test_real_kernels_at_the_plans_block_size(sanitized, tmp_path, make):
    case = make(images=3)
    result = run(sanitized, case, tmp_path, block=None)
    assert result.report is None, result.report


def test_an_off_by_one_read_at_the_end_of_the_logits_is_reported(build_dir, tmp_path):
    """The prefilter's max loop reading one class past the row: for the last default box of
    the last image that is one float past the logits buffer."""
    find = "for (int c = lane == 0 ? 32 : lane; c < num_classes; c += 32) best"
    source, line = cuda_tsan.mutate(SOURCE, find, find.replace("c < num_classes", "c <= num_classes"))
    executable = cuda_asan.build(build_dir, source, source_name="decode_nms.cu")
    case = selecting_case()
    result = run(executable, case, tmp_path)
    assert result.report is not None, "the off-by-one read went unseen"
    assert "heap-buffer-overflow" in result.report and "READ of size 4" in result.report, result.report
    assert f"decode_nms.cu:{line}" in result.report, result.report


@pytest.mark.parametrize("kernel", ["ssd_class_nms", "ssd_merge", "ssd_agnostic_nms"])
def test_an_under_allocated_shared_region_is_reported(sanitized, tmp_path, kernel):
    """The plan asking for 8 bytes less dynamic shared memory than the kernel uses: its
    accesses reach the poisoned slack."""

    class ShortPlan(DecodeNmsPlan):
        def launches(self, *args, **kwargs):
            return [replace(launch, shared_bytes=launch.shared_bytes - 8) if launch.kernel == kernel else launch
                    for launch in super().launches(*args, **kwargs)]

    case = agnostic_case() if kernel == "ssd_agnostic_nms" else selecting_case()
    plan = ShortPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
    result = run(sanitized, case, tmp_path, plan=plan)
    assert result.report is not None, f"{kernel}'s under-allocated shared memory went unseen"
    assert "use-after-poison" in result.report, result.report
    assert kernel in result.report, result.report
