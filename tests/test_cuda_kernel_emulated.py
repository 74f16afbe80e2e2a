"""The CUDA decode + NMS kernels (runtime/decode_nms.cu), executed through their real launch
plan on a CPU emulation of CUDA blocks and barriers (tests/cuda_emulation, with CUDA's own
expf and exp), against the NumPy reference under the float32 kernel's rule
(runtime/doctor/kernel_cases.py, kernel_difference): scores within 1e-6 of the float64
softmax, NumPy on the kernel's scores equal to the kernel to the bit, end to end
tie-aware. This checks the kernels' logic on any machine with a C++ compiler; the GPU tests
(test_cuda_kernel_gpu.py) run the same cases on real hardware."""

import numpy as np
import pytest
import torch

from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.runtime.cuda.plan import AGNOSTIC_KERNELS, KERNEL_SOURCE, KERNELS, DecodeNmsPlan
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.kernel_cases import exact_difference, kernel_difference
from ssd_edge.runtime.postprocess.fast import postprocess, softmax
from ssd_edge.runtime.postprocess.reference import reference_postprocess
from ssd_edge.runtime.priors import default_boxes
from tests.helpers import cuda_emulator
from tests.helpers.decode_nms_cases import (
    agnostic_cases,
    agnostic_edge_cases,
    edge_cases,
    model_case,
    prefilter_cases,
    random_batches,
)

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler to build the CUDA emulation")


@pytest.fixture(scope="module")
def emulation(tmp_path_factory):
    return cuda_emulator.build(tmp_path_factory.mktemp("cuda_emulation"))


def run_case(library, case, reverse=False, scores=None, runs=None):
    """The emulated kernels' detections of `case`, held to kernel_difference's rule (which
    also checks that the kernel took the softmax of exactly `possible_boxes`). scores: a
    list that receives the kernel's (B, C, P) scores; runs: one that receives the
    EmulatedDecodeNms (its workspace)."""
    plan = DecodeNmsPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
    kernels = cuda_emulator.EmulatedDecodeNms(library, plan, case.priors)
    got = kernels(case.locs, case.confs, case.image_sizes, reverse=reverse)
    difference = kernel_difference(case, got, kernels.probabilities(), kernels.possible())
    assert difference is None, f"{case.name}: {difference}"
    if scores is not None:
        scores.append(kernels.probabilities())
    if runs is not None:
        runs.append(kernels)
    return got


@pytest.mark.parametrize("case", random_batches(), ids=lambda c: c.name)
def test_emulated_kernels_equal_numpy_on_random_batches(emulation, case):
    run_case(emulation, case)


@pytest.mark.parametrize("case", edge_cases(), ids=lambda c: c.name)
def test_emulated_kernels_equal_numpy_on_edge_cases(emulation, case):
    got = run_case(emulation, case)
    if case.name == "no-box-above-threshold":
        assert all(len(d.scores) == 0 and d.confs.shape == (0, 4) for d in got)
    if case.name == "every-box-above-threshold":
        assert all(len(d.scores) == 350 for d in got)  # 400 (box, class) pairs, cut at max_detections


@pytest.mark.parametrize("case", edge_cases()[1:4], ids=lambda c: c.name)
def test_emulated_kernels_do_not_depend_on_thread_order(emulation, case):
    """Threads resumed in reverse order between barriers: a missing __syncthreads would show."""
    run_case(emulation, case, reverse=True)


@pytest.mark.parametrize("case", prefilter_cases(), ids=lambda c: c.name)
def test_emulated_kernels_equal_numpy_at_the_prefilters_edges(emulation, case):
    """ssd_softmax takes the softmax only of the boxes `possible_boxes` keeps (run_case
    compares the two) and the detections agree with the NumPy path by the kernel's rule."""
    kernel_scores = []
    got = run_case(emulation, case, scores=kernel_scores)
    threshold = np.float32(case.config.score_threshold)
    if case.name.startswith("threshold-boundary"):
        scores = softmax(case.confs[0])[:121, 1]
        ulp = np.spacing(threshold)
        below, above = scores[scores <= threshold].max(), scores[scores > threshold].min()
        assert threshold - below <= 4 * ulp and above - threshold <= 4 * ulp  # the walk straddles t closely
        if threshold == np.float32(0.3):
            assert (scores == threshold).any()  # on the threshold: not a candidate
        # The kernel's own float32 scores straddle t too, and its lowest detection is its lowest
        # score over t, in both images (the rows are the same, permuted).
        mine = kernel_scores[0][0, 1, :121]
        mine_above = mine[mine > threshold].min()
        assert mine[mine <= threshold].max() >= threshold - 4 * ulp and mine_above - threshold <= 4 * ulp
        found = np.concatenate([d.scores for d in got])
        assert found.min() == mine_above and (found == mine_above).sum() == 2 * (mine == mine_above).sum()
    if case.name.startswith("background-only"):
        assert all(len(d.scores) == 0 and d.confs.shape == (0, 1) for d in got)
    if case.name == "all-tied-21-classes":
        assert all((d.scores == np.float32(1 / 21)).all() and len(d.scores) == 100 for d in got)
    if case.name == "huge-logits":
        assert all(((d.scores == 1) & (d.labels == 1)).any() for d in got)  # row 5: class 1 saturates to 1


def test_emulated_kernels_equal_numpy_on_model_outputs(emulation):
    torch.manual_seed(0)
    model = calibrate_batchnorm(build_model("mobilenetv3_ssd", 91), torch.rand(2, 3, 320, 320))
    with torch.no_grad():
        locs, confs = model.raw(torch.rand(1, 3, 320, 320))
    config = model.spec.postprocess  # SSDLite: 3234 boxes x 91 classes, top_k 300
    got = run_case(emulation, model_case(locs.numpy(), confs.numpy(), default_boxes(model.spec), config))
    assert len(got[0].scores) == config.max_detections


def test_plan_refuses_what_the_kernels_cannot_hold():
    with pytest.raises(ValueError, match="top_k"):
        DecodeNmsPlan(3000, 21, 1, PostprocessConfig(top_k=600))
    with pytest.raises(ValueError, match="max_detections"):
        DecodeNmsPlan(3000, 21, 1, PostprocessConfig(max_detections=2000))
    with pytest.raises(ValueError, match="classes"):
        DecodeNmsPlan(3000, 5000, 1, PostprocessConfig())
    plan = DecodeNmsPlan(8732, 91, 8, PostprocessConfig(top_k=400, max_detections=200))  # SSD300 VGG16
    assert plan.class_shared_bytes + 1040 <= 48 * 1024  # + static shared: within every GPU's 48 KiB


def test_a_shuffle_some_lanes_never_reach_is_an_error(tmp_path):
    """The emulation reports a warp shuffle that only part of a warp reaches (here lane 5
    of every softmax warp returns first) instead of hanging or inventing a value."""
    source = KERNEL_SOURCE.read_text()
    anchor = "    float best = minus_inf;"
    assert source.count(anchor) == 1
    library = cuda_emulator.build(tmp_path, source.replace(anchor, "    if (lane == 5) return;" + anchor))
    case = random_batches(batches=(1,))[0]
    plan = DecodeNmsPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
    with pytest.raises(RuntimeError, match="shuffle reached by some lanes of a warp after others returned"):
        cuda_emulator.EmulatedDecodeNms(library, plan, case.priors)(case.locs, case.confs, case.image_sizes)


@pytest.mark.parametrize("case", agnostic_cases(), ids=lambda c: c.name)
def test_emulated_agnostic_nms_equals_the_fast_path(emulation, case):
    """NMS across the classes (ssd_class_top_k, ssd_agnostic_nms, ssd_pack) by the kernel's
    rule: NumPy's fast path on the kernel's scores to the bit, float64 NumPy tie-aware. Where
    the float32 softmax is exact (every logit tied: 1/C) the kernel equals fast.postprocess
    itself to the bit."""
    got = run_case(emulation, case)
    if case.name.startswith("agnostic-tied"):
        difference = exact_difference(got, postprocess(case.locs, case.confs, case.priors, case.image_sizes,
                                                       case.config))
        assert difference is None, difference
        if case.config.iou_threshold < 1:  # a box overlaps itself: its lowest class of the tie stays
            assert all(len(d.labels) and (d.labels == 1).all() for d in got)


@pytest.mark.parametrize("case", agnostic_edge_cases(), ids=lambda c: c.name)
def test_emulated_agnostic_nms_on_edge_cases(emulation, case):
    got = run_case(emulation, case)
    if case.name == "agnostic-one-box-two-classes":
        assert got[0].labels.tolist() == [2, 1]  # box 0 as class 2 (better), box 1 as class 1 (lower of a tie)
    if case.name in ("agnostic-one-box-two-classes", "agnostic-identical-scores-and-boxes"):
        expected = reference_postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config)
        assert [d.labels.tolist() for d in got] == [d.labels.tolist() for d in expected]
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.boxes, e.boxes, rtol=1e-6)
    if case.name == "agnostic-wild-regressions":  # an empty box does not suppress its other classes
        empty = got[3].boxes[:, 0] == got[3].boxes[:, 2]
        _, repeats = np.unique(got[3].boxes[empty], axis=0, return_counts=True)
        assert repeats.size and repeats.max() >= 2
    if case.name == "agnostic-batch-5":
        counts = [len(d.labels) for d in got]
        assert counts[3] == 0 and 0 < counts[1] < counts[0], counts
    if case.name == "agnostic-background-only":
        assert all(len(d.labels) == 0 and d.confs.shape == (0, 1) for d in got)


@pytest.mark.parametrize("case", [c for c in agnostic_cases() if c.config.max_detections == 500][:2],
                         ids=lambda c: c.name)
def test_emulated_agnostic_nms_goes_on_past_its_first_chunk(emulation, case):
    """More candidates taking part (each default box's best, its box overlapping itself) than
    one chunk of ssd_agnostic_nms, and detections found beyond it: the later chunks are
    selected below the earlier ones and checked against the boxes kept before them. Threads
    resumed in reverse order too (a missing barrier would show)."""
    for reverse in (False, True):
        runs = []
        got = run_case(emulation, case, reverse=reverse, runs=runs)
        plan = runs[0].plan
        groups, batch = plan.num_classes - 1, len(case.locs)
        counts = runs[0].view("kept_count", np.int32, batch * groups).reshape(batch, groups)
        keys = runs[0].view("kept_keys", np.uint64, batch * groups * plan.top_k).reshape(batch, groups, plan.top_k)
        kept = runs[0].view("nms_keys", np.uint64, batch * plan.max_detections).reshape(batch, -1)
        best = runs[0].view("agnostic_best", np.uint64, batch * plan.num_priors).reshape(batch, -1)
        for b in range(batch):  # merge keys: larger is better (score, then lower default box, then class)
            candidates = np.concatenate([keys[b, g, :counts[b, g]] for g in range(groups)])
            prior = (1 << 20) - 1 - ((candidates >> np.uint64(12)) & np.uint64((1 << 20) - 1)).astype(np.int64)
            assert (best[b][prior] == candidates).sum() == np.unique(prior).size  # one best per box (boxes overlap)
            candidates = candidates[(best[b][prior] == 0) | (best[b][prior] == candidates)]  # those taking part
            assert candidates.size > plan.agnostic_chunk
            first_chunk_worst = np.sort(candidates)[::-1][plan.agnostic_chunk - 1]
            assert kept[b, len(got[b].labels) - 1] < first_chunk_worst  # the last one kept: from a later chunk


def test_emulated_agnostic_nms_reverse_thread_order(emulation):
    for case in agnostic_edge_cases()[1:4]:
        run_case(emulation, case, reverse=True)


def test_the_plan_launches_the_agnostic_kernels():
    """agnostic_nms: four launches (the records of an image are placed after the earlier
    images' NMS), the per-class plan unchanged: three launches, the same workspace."""
    per_class = DecodeNmsPlan(3234, 91, 8, PostprocessConfig())
    agnostic = DecodeNmsPlan(3234, 91, 8, PostprocessConfig(agnostic_nms=True))
    assert per_class.kernels == KERNELS and agnostic.kernels == AGNOSTIC_KERNELS
    assert [launch.kernel for launch in agnostic.launches(0, 0, 0, 8)] == list(AGNOSTIC_KERNELS)
    assert [launch.kernel for launch in per_class.launches(0, 0, 0, 8)] == list(KERNELS)
    assert "nms_keys" not in per_class.offsets and agnostic.workspace_bytes > per_class.workspace_bytes
    assert agnostic.agnostic_chunk == 256 and agnostic.agnostic_shared_bytes + 1040 <= 48 * 1024
    widest = DecodeNmsPlan(3000, 4096, 1, PostprocessConfig(top_k=512, max_detections=1024, agnostic_nms=True))
    assert widest.agnostic_shared_bytes + 1040 <= 48 * 1024  # C int prefix sums: the most classes
    background_only = DecodeNmsPlan(100, 1, 2, PostprocessConfig(agnostic_nms=True))
    assert [launch.kernel for launch in background_only.launches(0, 0, 0, 2)] == [
        "ssd_softmax", "ssd_agnostic_nms", "ssd_pack"]
