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
from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.kernel_cases import kernel_difference
from ssd_edge.runtime.postprocess.fast import softmax
from ssd_edge.runtime.priors import default_boxes
from tests.helpers import cuda_emulator
from tests.helpers.decode_nms_cases import edge_cases, model_case, prefilter_cases, random_batches

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler to build the CUDA emulation")


@pytest.fixture(scope="module")
def emulation(tmp_path_factory):
    return cuda_emulator.build(tmp_path_factory.mktemp("cuda_emulation"))


def run_case(library, case, reverse=False, scores=None):
    """The emulated kernels' detections of `case`, held to kernel_difference's rule (which
    also checks that the kernel took the softmax of exactly `possible_boxes`). scores: a
    list that receives the kernel's (B, C, P) scores."""
    plan = DecodeNmsPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
    kernels = cuda_emulator.EmulatedDecodeNms(library, plan, case.priors)
    got = kernels(case.locs, case.confs, case.image_sizes, reverse=reverse)
    difference = kernel_difference(case, got, kernels.probabilities(), kernels.possible())
    assert difference is None, f"{case.name}: {difference}"
    if scores is not None:
        scores.append(kernels.probabilities())
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
    with pytest.raises(ValueError, match="agnostic_nms"):
        DecodeNmsPlan(3000, 21, 1, PostprocessConfig(agnostic_nms=True))
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
