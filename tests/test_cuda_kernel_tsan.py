"""runtime/cuda/decode_nms.cu under ThreadSanitizer: every CUDA thread an OS thread, a real
barrier for __syncthreads, real (relaxed) atomics, a per-warp exchange for shuffles. The
real kernels must run race-free and agree with the NumPy reference by the float32 kernel's
rule (kernel_difference); kernels with a barrier dropped or an atomic turned into a plain
read-modify-write must draw a report naming the kernel source's line. Small cases (a few
hundred default boxes, blocks of 64 threads but one case at the plan's 256) keep the
sanitizer runs to seconds."""

from __future__ import annotations

import numpy as np
import pytest

from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.kernel_cases import kernel_difference
from tests.helpers import cuda_tsan
from tests.helpers.decode_nms_cases import Case, agnostic_edge_cases, edge_cases, prefilter_cases, random_batches
from tests.helpers.postprocess_cases import random_outputs, random_priors

pytestmark = pytest.mark.skipif(cuda_tsan.compiler() is None, reason="no C++ compiler for the threaded emulation")

SOURCE = KERNEL_SOURCE.read_text()
SMALL_BLOCK = 64


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_tsan")


@pytest.fixture(scope="module")
def sanitized(build_dir):
    try:
        return cuda_tsan.build(build_dir)
    except cuda_tsan.SanitizerUnavailable as exc:
        pytest.skip(f"cannot build with -fsanitize=thread: {exc}")


def selecting_case(images: int = 2) -> Case:
    """More candidates than top_k in every class, so the radix select and the gather run
    several passes; two images (or more: from the third on, several threads of a merge
    block add up the records of the images before it), four classes, 300 default boxes."""
    rng = np.random.default_rng(7)
    priors = random_priors(rng, 300)
    locs, confs = random_outputs(rng, images, 300, 4, logit_scale=0.5)
    sizes = ([(480, 640), (300, 300), (200, 320), (640, 480)] * 4)[:images]
    return Case("selecting", priors, locs, confs, sizes,
                PostprocessConfig(score_threshold=0.01, iou_threshold=0.5, top_k=60, max_detections=50))


def agnostic_case(images: int = 2) -> Case:
    """selecting_case with NMS across the classes at IoU 0.05: ssd_agnostic_nms keeps fewer
    than max_detections (16) from its first chunk (64 candidates) and goes through all of
    them (up to 180 per image), each later chunk checked against the boxes kept before it."""
    case = selecting_case(images)
    config = case.config.replace(agnostic_nms=True, iou_threshold=0.05, max_detections=16)
    return Case(f"agnostic-{case.name}", case.priors, case.locs, case.confs, case.image_sizes, config)


def run(executable, case: Case, work_dir, block=SMALL_BLOCK, halt_on_error=False) -> cuda_tsan.ThreadedRun:
    plan = DecodeNmsPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
    kernels = cuda_tsan.ThreadedDecodeNms(executable, plan, case.priors, work_dir, block=block)
    return kernels(case.locs, case.confs, case.image_sizes, halt_on_error=halt_on_error)


def assert_clean_and_equal(result: cuda_tsan.ThreadedRun, case: Case) -> None:
    """No sanitizer report, and the float32 kernel's rule (kernel_difference) holds."""
    assert not result.reports, result.reports[0].text
    difference = kernel_difference(case, result.detections, result.probabilities, result.possible)
    assert difference is None, f"{case.name}: {difference}"


CLEAN_CASES = [selecting_case(), random_batches(batches=(3,))[0], *edge_cases()[1:4], edge_cases()[5],
               *[c for c in prefilter_cases() if c.name in ("threshold-boundary-0.3", "huge-logits")],
               agnostic_case(), *[c for c in agnostic_edge_cases() if c.name == "agnostic-batch-5"]]


@pytest.mark.parametrize("case", CLEAN_CASES, ids=lambda c: c.name)
def test_real_kernels_are_race_free_and_equal_numpy(sanitized, tmp_path, case):
    assert_clean_and_equal(run(sanitized, case, tmp_path), case)


def test_real_kernels_at_the_plans_block_size(sanitized, tmp_path):
    case = selecting_case(images=4)
    assert_clean_and_equal(run(sanitized, case, tmp_path, block=None), case)


def test_real_agnostic_kernels_at_the_plans_block_size(sanitized, tmp_path):
    case = agnostic_case(images=3)
    assert_clean_and_equal(run(sanitized, case, tmp_path, block=None), case)


def line_of_occurrence(text: str, occurrence: int) -> int:
    """The 1-based line of the kernel source holding the occurrence-th `text`."""
    at = -1
    for _ in range(occurrence):
        at = SOURCE.index(text, at + 1)
    return SOURCE.count("\n", 0, at) + 1


def lines_of(*texts: str) -> set[int]:
    """The 1-based lines of the kernel source holding each text (its first occurrence), so
    that the expected report lines follow the source as it changes."""
    lines = set()
    for text in texts:
        assert text in SOURCE, f"`{text}` is no longer in the kernel source"
        lines.add(SOURCE.count("\n", 0, SOURCE.index(text)) + 1)
    return lines


# (name, text to find, its replacement, which occurrence, lines a report must name)
MUTATIONS = [
    ("barrier-after-histogram", "__syncthreads();\n        if (threadIdx.x == 0) {\n            int above",
     None, 1, lines_of("atomicAdd(&hist[(key >> shift)", "if (above + (int)hist[digit] >= remaining)")),
    ("barrier-before-state-read", "__syncthreads();\n        prefix |= (u64)state->digit", None, 1,
     lines_of("state->digit = digit;", "state->remaining = remaining - above;", "state->done = (int)hist[digit]",
              "prefix |= (u64)state->digit", "remaining = state->remaining;", "int done = state->done;")),
    ("merge-barrier-after-prefix-sums", "__syncthreads();\n    int before = 0;", None, 1,
     lines_of("first[g] = total;", "first[groups] = total;", "records_before = 0;",
              "if (before) atomicAdd(&records_before, before);", "const int kept = first[groups];",
              "int lo = 0, hi = groups;", "if (first[mid] <= i) lo = mid;")),
    ("atomic-records-before", "atomicAdd(&records_before, before);", "(records_before += before);", 1,
     lines_of("if (before) atomicAdd(&records_before, before);")),
    ("barrier-after-decode", "    __syncthreads();\n\n    overlap_mask(boxes, k,", None, 1,
     lines_of("boxes[j] = decode_box(", "float4 a = boxes[i];", "box_iou(a, boxes[j]) > iou_threshold")),
    ("atomic-histogram", "atomicAdd(&hist[(key >> shift) & 0xFFu], 1u)", "(hist[(key >> shift) & 0xFFu] += 1u)",
     1, lines_of("atomicAdd(&hist[(key >> shift)")),
    ("atomic-gather-slot", "int slot = atomicAdd(&state->count, 1);", "int slot = state->count++;", 1,
     lines_of("int slot = atomicAdd(&state->count, 1);")),
    ("atomic-kept-slot", "int slot = atomicAdd(&state.count, 1);", "int slot = state.count++;", 1,
     lines_of("int slot = atomicAdd(&state.count, 1);")),
    # NMS across the classes (agnostic_case)
    ("agnostic-barrier-after-greedy-pass", "__syncthreads();  // also makes thread 0's out_boxes visible", None, 1,
     lines_of("state.count = kept + greedy_pass", "kept = state.count;", "out_boxes[kept + count] = boxes[i];",
              "hit = box_iou(out_boxes[i], box)")),
    ("agnostic-barrier-after-chunk-boxes", "__syncthreads();\n\n        for (int j = threadIdx.x; j < n;", None, 1,
     lines_of("boxes[j] = kept_boxes[slot_base + index[j]];", "float4 box = boxes[j];",
              "j < n && box_iou(a, boxes[j]) > iou_threshold")),
    ("agnostic-barrier-before-next-chunk", "__syncthreads();  // all have read state and keys", None, 1,
     lines_of("kept = state.count;", "source.upper = keys[n - 1];", "state.count = kept + greedy_pass",
              "keys[slot] = key;", "state->count = 0;")),
    ("pack-atomic-records-before", "atomicAdd(&records_before, before);", "(records_before += before);", 2,
     {line_of_occurrence("atomicAdd(&records_before, before);", 2)}),
]


def mutated_source(find: str, replace: str | None, occurrence: int) -> tuple[str, int]:
    if replace is None:  # drop the leading __syncthreads() of a multi-line anchor, in place
        anchor_at = SOURCE.index(find)
        line = SOURCE.count("\n", 0, anchor_at + len(find) - len(find.lstrip())) + 1
        head = find.lstrip()
        assert head.startswith("__syncthreads();")
        mutated = SOURCE[:anchor_at] + find.replace("__syncthreads();", ";", 1) + SOURCE[anchor_at + len(find):]
        return mutated, line
    return cuda_tsan.mutate(SOURCE, find, replace, occurrence)


# Mutants whose race needs several threads of a merge block adding up the images before it
# (from the third image on: the more images, the more threads meet there at once).
MORE_IMAGES = {"merge-barrier-after-prefix-sums": 4, "atomic-records-before": 12, "pack-atomic-records-before": 12}
RUNS = 3  # sanitizer runs per mutant before its race must have been named at its line


@pytest.mark.parametrize("name,find,replace,occurrence,lines", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_sanitizer_reports_a_planted_race_at_its_line(build_dir, tmp_path, name, find, replace, occurrence, lines):
    source, line = mutated_source(find, replace, occurrence)
    assert source.count("\n") == SOURCE.count("\n")  # line numbers are the real file's
    original = SOURCE.splitlines()[line - 1]
    assert ("__syncthreads();" if replace is None else find) in original, original  # the line we meant
    try:
        executable = cuda_tsan.build(build_dir, source=source, source_name="decode_nms.cu")
    except cuda_tsan.SanitizerUnavailable as exc:
        pytest.skip(f"cannot build with -fsanitize=thread: {exc}")
    # The whole run, not just up to the first report: which race a missing barrier shows
    # depends on the threads' timing (ThreadSanitizer keeps a few past accesses per word, so
    # an interleaving can push the mutated line's pair out of its history). The race at the
    # mutated line must be named in one of up to RUNS runs (a run may report none: on a
    # loaded machine the emulated threads can happen to run one after another, e.g. the
    # agnostic chunk loop's, and a run in which the pair never meets shows nothing); a
    # sanitizer that never bites there still fails.
    named: set[int] = set()
    stderr = ""
    for attempt in range(RUNS):
        work = tmp_path / f"run{attempt}"
        work.mkdir()
        make = agnostic_case if name.startswith(("agnostic", "pack")) else selecting_case
        case = make(images=MORE_IMAGES[name]) if name in MORE_IMAGES else make()
        result = run(executable, case, work, halt_on_error=False)
        races = [r for r in result.reports if r.kind == "data race"]
        stderr = stderr or (result.stderr[-3000:] if not races else "")
        named |= {n for r in races for n in r.lines_in("decode_nms.cu")}
        if named & lines:
            break
    assert named, f"{name}: no data race reported in {RUNS} runs\n{stderr}"
    assert named & lines, f"{name}: races name decode_nms.cu lines {sorted(named)}, expected one of {sorted(lines)}"


def test_barrier_in_divergent_code_is_an_error(build_dir, tmp_path):
    """A __syncthreads() that only some threads reach (here: threads other than 0 return
    before the merge's sort) is reported instead of hanging."""
    source, _ = cuda_tsan.mutate(SOURCE, "    sort_descending(keys, index, m);",
                                 "    if (threadIdx.x) return; sort_descending(keys, index, m);")
    executable = cuda_tsan.build(build_dir, source=source, source_name="decode_nms.cu")
    with pytest.raises(RuntimeError, match="reached by some threads after others returned"):
        run(executable, selecting_case(), tmp_path)


def test_shuffle_in_divergent_code_is_an_error(build_dir, tmp_path):
    """A warp shuffle that some lanes never reach (here lane 5 of every warp returns before
    the softmax's first shuffle) is reported instead of hanging."""
    source, _ = cuda_tsan.mutate(SOURCE, "    float best = minus_inf;",
                                 "    if (lane == 5) return; float best = minus_inf;")
    executable = cuda_tsan.build(build_dir, source=source, source_name="decode_nms.cu")
    with pytest.raises(RuntimeError, match="shuffle reached by some lanes after others returned"):
        run(executable, selecting_case(), tmp_path)
