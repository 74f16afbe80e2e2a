"""The CUDA decode + NMS on a real GPU against the NumPy reference: the pycuda launcher
(and CuPy, when installed) on many random batches, the edge cases and a model's outputs;
onnxruntime's CUDA outputs feeding the kernel; a TensorRT engine end to end through the
runtime's own engine runner.

Torch-free, so `pytest -m "gpu or tensorrt"` runs on the README's Jetson install: the model
comes from $SSD_EDGE_TEST_ONNX (an .onnx made by ssd-export, for example on a PC) or, where
torch is installed, is exported here. GPU tests skip only where the GPU path is absent and
TensorRT tests only where TensorRT is; a broken probe fails them (gpu_probe.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan
from ssd_edge.runtime.doctor.kernel_cases import kernel_difference, tie_aware_difference
from ssd_edge.runtime.postprocess.fast import postprocess, softmax
from ssd_edge.runtime.priors import default_boxes
from tests.helpers.decode_nms_cases import (
    agnostic_cases,
    agnostic_edge_cases,
    edge_cases,
    model_case,
    prefilter_cases,
    random_batches,
)
from tests.helpers.gpu_probe import require_gpu, require_tensorrt

MODEL_ENV = "SSD_EDGE_TEST_ONNX"  # an SSDLite .onnx from ssd-export, for torch-free machines
pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    require_gpu()


@pytest.fixture(scope="module")
def tensorrt():
    return require_tensorrt()


class PycudaKernels:
    """Raw outputs uploaded to the GPU, then decoded by the runtime's CudaDecodeNms."""

    def __init__(self):
        from ssd_edge.runtime.cuda.resources import Stream, primary_context

        self.context = primary_context()
        with self.context:
            self.stream = Stream()

    def __call__(self, case):
        from ssd_edge.runtime.cuda.decode_nms import CudaDecodeNms
        from ssd_edge.runtime.cuda.resources import DeviceBuffer

        with self.context:
            decoder = CudaDecodeNms(self.stream, case.priors, case.confs.shape[2], len(case.locs), case.config)
            locs = DeviceBuffer(case.locs.nbytes, "locs")
            confs = DeviceBuffer(case.confs.nbytes, "confs")
            try:
                self.stream.copy_to_device(locs.address, np.ascontiguousarray(case.locs, np.float32))
                self.stream.copy_to_device(confs.address, np.ascontiguousarray(case.confs, np.float32))
                found = decoder.run(locs.address, confs.address, case.image_sizes)
                self.last_scores = decoder.scores(len(case.locs))  # (B, C, P) scores, (B, P) possible
                return found
            finally:
                decoder.close()
                locs.free()
                confs.free()

    def close(self):
        with self.context:
            self.stream.close()


@pytest.fixture(scope="module")
def kernels(gpu):
    runner = PycudaKernels()
    yield runner
    runner.close()


def reference(case):
    return postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config)


def assert_kernel_agrees(kernels, case):
    """The float32 kernel's rule (kernel_difference): scores within 1e-6 of the float64
    softmax, NumPy on the kernel's scores equal to its detections, end to end tie-aware."""
    got = kernels(case)
    difference = kernel_difference(case, got, *kernels.last_scores)
    assert difference is None, f"{case.name}: {difference}"


MANY_RANDOM = [case for seed in range(4) for case in random_batches(seed=seed, classes=6 + 5 * seed)]


@pytest.mark.parametrize("case", MANY_RANDOM, ids=lambda c: c.name)
def test_kernel_equals_numpy_on_random_batches(kernels, case):
    assert_kernel_agrees(kernels, case)


@pytest.mark.parametrize("case", edge_cases(), ids=lambda c: c.name)
def test_kernel_equals_numpy_on_edge_cases(kernels, case):
    assert_kernel_agrees(kernels, case)


@pytest.mark.parametrize("case", prefilter_cases(), ids=lambda c: c.name)
def test_kernel_equals_numpy_at_the_prefilter_bound(kernels, case):
    """Scores and logits walking across the threshold and the float32 bound that decides which
    default boxes get the softmax: the GPU must keep exactly the boxes NumPy keeps."""
    assert_kernel_agrees(kernels, case)


@pytest.mark.parametrize("case", agnostic_cases() + agnostic_edge_cases(), ids=lambda c: c.name)
def test_kernel_equals_numpy_with_agnostic_nms(kernels, case):
    """NMS across the classes (ssd_class_top_k, ssd_agnostic_nms, ssd_pack) on the GPU, by the
    same rule: scores, spread and tied, under the configs the CPU paths are tested with."""
    assert_kernel_agrees(kernels, case)


def onnx_run(path, images, batch):
    """locs and confs of the ONNX model on onnxruntime's CPU provider for BGR `images`."""
    from ssd_edge.runtime import Detector
    from ssd_edge.runtime.parity import onnx_outputs
    from ssd_edge.runtime.preprocess import preprocess

    with Detector(path, backend="onnxruntime-cpu") as detector:
        spec = detector.spec
    return spec, onnx_outputs(path, preprocess(images, spec.input_size), batch)


@pytest.mark.parametrize("batch", [1, 8, 32])
@pytest.mark.parametrize("agnostic", [False, True], ids=["per-class", "agnostic"])
def test_kernel_equals_numpy_on_model_outputs(kernels, exported, batch, agnostic):
    spec, (locs, confs) = onnx_run(exported, sample_images(batch, seed=batch), batch)
    config = spec.postprocess.replace(agnostic_nms=True) if agnostic else spec.postprocess
    case = model_case(locs, confs, default_boxes(spec), config)
    assert_kernel_agrees(kernels, case)


def test_kernel_source_runs_in_cupy(gpu):
    """The .cu as CuPy's RawModule loads it (NVRTC), through the same launch plan."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    module = cupy.RawModule(code=KERNEL_SOURCE.read_text())
    for case in random_batches(seed=7, batches=(1, 4, 32))[:3] + edge_cases()[:2] + agnostic_edge_cases()[1:4]:
        plan = DecodeNmsPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
        workspace = cupy.zeros(plan.workspace_bytes, cupy.uint8)
        start = plan.offsets["priors"]
        priors = case.priors.astype(np.float32).view(np.uint8).ravel()
        workspace[start:start + priors.size] = cupy.asarray(priors)
        locs = cupy.asarray(case.locs.astype(np.float32))
        confs = cupy.asarray(case.confs.astype(np.float32))
        for launch in plan.launches(workspace.data.ptr, locs.data.ptr, confs.data.ptr, len(case.locs)):
            module.get_function(launch.kernel)(launch.grid, launch.block, launch.args, shared_mem=launch.shared_bytes)
        counts = workspace[plan.offsets["det_count"]:][: 4 * len(case.locs)].view(cupy.int32).get()
        total = int(counts.sum())
        packed = workspace[plan.offsets["packed"]:][: total * plan.record_width * 4].view(cupy.float32).get()
        got = plan.detections(counts, packed.reshape(total, plan.record_width), case.image_sizes)
        p, c, batch = plan.num_priors, plan.num_classes, len(case.locs)
        possible = workspace[plan.offsets["possible"]:][:batch * p].get().reshape(batch, p).astype(bool)
        probs = workspace[plan.offsets["probs"]:][:batch * c * p * 4].view(cupy.float32).get().reshape(batch, c, p)
        difference = kernel_difference(case, got, probs, possible)
        assert difference is None, f"cupy {case.name}: {difference}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A dynamic-batch SSDLite-COCO .onnx: $SSD_EDGE_TEST_ONNX, or exported here with torch."""
    given = os.environ.get(MODEL_ENV)
    if given:
        if not Path(given).is_file():
            pytest.fail(f"${MODEL_ENV}={given}: no such file", pytrace=False)
        return Path(given)
    try:
        import torch
    except ImportError:
        pytest.skip(f"no model: set ${MODEL_ENV} to an .onnx made by ssd-export (exporting one here needs torch)")
    from ssd_edge.export.to_onnx import export_onnx
    from ssd_edge.models import build_model
    from ssd_edge.models.calibration import calibrate_batchnorm

    torch.manual_seed(0)
    model = calibrate_batchnorm(build_model("mobilenetv3_ssd", 91), torch.rand(4, 3, 320, 320))
    path = tmp_path_factory.mktemp("gpu_models") / "ssdlite.onnx"
    return export_onnx(model, path, batch=4, dynamic=True)


def sample_images(count=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (int(h), int(w), 3), dtype=np.uint8) for h, w in rng.integers(200, 700, (count, 2))]


def host_copy(buffer, shape):
    """A device buffer's first prod(shape) float32 values, copied to the host (test only)."""
    import pycuda.driver as cuda

    from ssd_edge.runtime.cuda.resources import primary_context

    array = np.empty(shape, np.float32)
    with primary_context():
        cuda.memcpy_dtoh(array, buffer.address)
    return array


def assert_kernel_equals_numpy_on(detector, images, locs_buffer, confs_buffer):
    """The detections equal the NumPy reference applied to the network outputs the kernel
    read from the device (copied back here only to check them)."""
    spec, batch = detector.spec, len(images)
    found = detector(images)
    locs = host_copy(locs_buffer, (batch, spec.num_priors, 4))
    confs = host_copy(confs_buffer, (batch, spec.num_priors, spec.num_classes))
    sizes = [image.shape[:2] for image in images]
    expected = postprocess(locs, confs, default_boxes(spec), sizes, detector.config)
    scores = softmax(confs).transpose(0, 2, 1)
    difference = tie_aware_difference(found, expected, detector.config, scores)  # end to end, tie-aware
    assert difference is None, f"network on GPU: {difference}"
    return found


def assert_mostly_same(got, cpu, min_iou=0.9, score=5e-3):
    """GPU and CPU networks differ by float noise (TF32 convolutions): most of the top
    detections must still have a twin (same label, IoU >= min_iou, close score)."""
    from ssd_edge.runtime.boxes import pairwise_iou

    for g, c in zip(got, cpu):
        top = min(50, len(c.scores))
        if top == 0:
            assert len(g.scores) == 0
            continue
        iou = pairwise_iou(c.boxes[:top], g.boxes)
        twin = (iou >= min_iou) & (c.labels[:top, None] == g.labels[None]) & (
            np.abs(c.scores[:top, None] - g.scores[None]) <= score)
        assert twin.any(axis=1).mean() >= 0.9


def test_onnx_on_gpu_feeds_the_kernel(gpu, exported):
    """onnxruntime's CUDA provider writes locs/confs into our device buffers; the kernel
    decodes them there."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu (CUDAExecutionProvider) is not installed")
    from ssd_edge.runtime import Detector

    images = sample_images()
    with Detector(exported, backend="onnxruntime", score_threshold=0.05) as gpu, \
            Detector(exported, backend="onnxruntime-cpu", score_threshold=0.05) as cpu:
        decode = gpu._backend._gpu
        assert decode is not None, "the CUDA decode was not used"
        found = assert_kernel_equals_numpy_on(gpu, images, decode.locs, decode.confs)
        assert_mostly_same(found, cpu(images))


@pytest.mark.tensorrt
def test_tensorrt_engine_end_to_end(tensorrt, exported, tmp_path):
    from ssd_edge.export.engine import EngineOptions, build_engine
    from ssd_edge.runtime import Detector

    options = EngineOptions(precision="fp32", batch=4, progress=False)
    engine = build_engine(exported, tmp_path / "ssdlite.engine", options)
    images = sample_images(6)
    with Detector(engine, score_threshold=0.05) as gpu, Detector(exported, backend="onnxruntime-cpu",
                                                                 score_threshold=0.05) as cpu:
        assert gpu.backend.startswith("tensorrt")
        runner, names = gpu._backend.engine, gpu.spec.output_names
        found = assert_kernel_equals_numpy_on(gpu, images[:4], runner.buffers[names[0]], runner.buffers[names[1]])
        assert_mostly_same(found, cpu(images[:4]))
        assert len(gpu(images)) == 6  # chunks of 4 and 2
        assert gpu(images[0]).boxes.shape[1] == 4


@pytest.mark.tensorrt
def test_broken_engine_reports_tensorrt_and_the_sidecar(tensorrt, exported, tmp_path):
    import json

    from ssd_edge.runtime import Detector
    from ssd_edge.runtime.backends.tensorrt_backend import EngineError

    engine = tmp_path / "other.engine"
    engine.write_bytes(b"\x00" * 4096)
    spec = Detector(exported, backend="onnxruntime-cpu").spec
    (tmp_path / "other.engine.json").write_text(json.dumps({
        "model_spec": spec.to_dict(), "tensorrt_version": "8.6.1",
        "gpu": {"name": "Orin", "compute_capability": [8, 7]},
    }))
    with pytest.raises(EngineError, match=r"TensorRT 8\.6\.1 on Orin \(sm_87\)"):
        Detector(engine)
