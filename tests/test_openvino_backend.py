"""`Detector(..., backend="openvino")`: the same ONNX file on OpenVINO gives onnxruntime's raw
outputs and detections to the project's float tolerances, its INT8 QDQ copy runs, the
precision in effect is read back and reported (bf16 asked on a CPU without it: f32, and
why), a missing OpenVINO names the extra to install, and onnxruntime's spinning setting
reaches its session.

The bf16 tolerance for raw outputs (mean |diff| <= 0.06, correlation >= 0.97 against f32 on
these untrained networks) comes from running the same SSDs in torch with bfloat16 weights
and activations (mean |diff| 0.023 and correlation 0.991 for logits of max |x| about 3 at
192 x 192). It runs only on a CPU with bf16 (AMX or AVX512_BF16), and is skipped elsewhere
with that reason: no `make setup` can give a CPU bf16 units.
"""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from ssd_edge.common.errors import MissingDependency, UsageError
from ssd_edge.export.parity import FP32_RTOL
from ssd_edge.export.quantize import quantize_int8
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.runtime import Detector
from ssd_edge.runtime.backends.openvino_backend import (
    PRECISIONS,
    QUANTIZATION_KEY,
    OpenVinoError,
    choose_precision,
    openvino_core,
)
from ssd_edge.runtime.model_file import QUANTIZATION_KEY as EXPORT_QUANTIZATION_KEY
from ssd_edge.runtime.parity import OutputDifference
from ssd_edge.runtime.preprocess import preprocess
from tests.helpers.export import calibrated_model

ov = pytest.importorskip("openvino", reason="backend 'openvino' needs `pip install 'ssd-edge[openvino]'`")

SCORE_ATOL, BOX_ATOL = 1e-4, 1e-3  # Detector against the PyTorch model (test_detector.py), float rounding
BF16_MEAN_ABS, BF16_MIN_CORRELATION = 0.06, 0.97  # see the module docstring


def cpu_has_bf16() -> bool:
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 (no AMX or AVX512_BF16)")


@pytest.fixture(scope="module")
def model(images):
    return calibrated_model("mobilenetv3_ssd", images[:8], imgsz=192)


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("openvino") / "ssdlite.onnx", dynamic=True)


@pytest.fixture(scope="module")
def int8_path(onnx_path, images):
    return quantize_int8(onnx_path, onnx_path.with_name("ssdlite.int8.onnx"), images[:8], "cpu", progress=False)


def onnxruntime_outputs(path, batch):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["locs", "confs"], {"images": batch})


def correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def assert_same_detections(found, expected):
    """Equal detections image by image, to float rounding: every detection has a partner of
    the same class with its score within SCORE_ATOL and its box within BOX_ATOL. Scores
    that tie to within rounding may come in either order, and a detection at the cut (the
    lowest score kept, when max_detections cuts) may be on either side of it."""
    for ours, theirs in zip(found, expected, strict=True):
        assert abs(len(ours.scores) - len(theirs.scores)) <= 2
        cut = min(ours.scores.min(initial=1.0), theirs.scores.min(initial=1.0)) + SCORE_ATOL
        unmatched = list(range(len(theirs.scores)))
        for box, label, score in zip(ours.boxes, ours.labels, ours.scores):
            partners = [j for j in unmatched
                        if theirs.labels[j] == label and abs(theirs.scores[j] - score) <= SCORE_ATOL
                        and np.abs(theirs.boxes[j] - box).max() <= BOX_ATOL]
            if partners:
                unmatched.remove(partners[0])
            else:
                assert score <= cut, f"no partner for a detection of class {label}, score {score}, box {box}"
        assert all(theirs.scores[j] <= cut for j in unmatched), [theirs.scores[j] for j in unmatched]


def test_f32_raw_outputs_equal_onnxruntime(onnx_path, images):
    batch = preprocess(images[:6], (192, 192))
    with Detector(onnx_path, backend="openvino") as detector:
        locs, confs = detector._backend.run(batch)
        assert detector.backend.startswith("openvino ") and detector.backend.endswith("(CPU, f32)")
    expected_locs, expected_confs = onnxruntime_outputs(onnx_path, batch)
    assert OutputDifference.between(locs, expected_locs).max_rel <= FP32_RTOL
    assert OutputDifference.between(confs, expected_confs).max_rel <= FP32_RTOL


@pytest.mark.parametrize("count", [1, 5])
def test_f32_detections_equal_onnxruntime(onnx_path, images, count):
    part = images[:count]
    with Detector(onnx_path, backend="onnxruntime-cpu", score_threshold=0.05) as reference, \
            Detector(onnx_path, backend="openvino", score_threshold=0.05, threads=1) as detector:
        expected, found = reference(part), detector(part)
        again = detector(part)  # the reused infer request and buffer give the same again
    assert sum(len(d.scores) for d in expected) > 10 * count
    assert_same_detections(found, expected)
    for a, b in zip(again, found):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_fixed_batch_model_runs_in_padded_chunks(model, tmp_path, images):
    fixed = export_onnx(model, tmp_path / "ssdlite_b2.onnx", batch=2, dynamic=False)
    part = images[:5]  # chunks of 2, 2 and 1 (padded)
    with Detector(fixed, backend="onnxruntime-cpu") as reference, Detector(fixed, backend="openvino") as detector:
        assert detector._backend.batch_size == 2 and detector._backend.max_batch == 2
        assert_same_detections(detector(part), reference(part))


def test_bf16_on_a_cpu_without_it_runs_f32_and_says_why(onnx_path, images):
    if cpu_has_bf16():
        pytest.skip("this CPU has bf16: the fallback cannot happen here")
    with pytest.warns(RuntimeWarning, match="runs in f32: no bf16 on this CPU.*OPTIMIZATION_CAPABILITIES") as caught:
        detector = Detector(onnx_path, backend="openvino", precision="bf16")
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert caught[0].filename == __file__  # the warning points at the caller's line
    with detector, Detector(onnx_path, backend="openvino") as f32:
        assert detector._backend.precision == "f32"  # read back from the compiled model
        assert detector.backend.endswith("(CPU, f32 instead of bf16)")
        assert "FP32" in detector._backend.precision_note and "BF16" not in detector._backend.precision_note
        for a, b in zip(detector(images[:2]), f32(images[:2])):
            np.testing.assert_array_equal(a.scores, b.scores)
            np.testing.assert_array_equal(a.boxes, b.boxes)


@needs_bf16
def test_bf16_outputs_are_within_the_bf16_tolerance(onnx_path, images):
    batch = preprocess(images[:6], (192, 192))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning where bf16 exists
        detector = Detector(onnx_path, backend="openvino", precision="bf16")
    with detector:
        assert detector._backend.precision == "bf16" and detector.backend.endswith("(CPU, bf16)")
        outputs = detector._backend.run(batch)
    for ours, expected in zip(outputs, onnxruntime_outputs(onnx_path, batch)):
        assert np.abs(ours - expected).mean() <= BF16_MEAN_ABS
        assert correlation(ours, expected) >= BF16_MIN_CORRELATION


def test_auto_precision_is_the_cpus_native_one(onnx_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns: it asks for what the device has
        detector = Detector(onnx_path, backend="openvino", precision="auto")
    with detector:
        assert detector._backend.precision == ("bf16" if cpu_has_bf16() else "f32")


def test_int8_qdq_model_runs_and_is_as_close_to_fp32_as_on_onnxruntime(onnx_path, int8_path, images):
    batch = preprocess(images[:6], (192, 192))
    fp32 = onnxruntime_outputs(onnx_path, batch)
    int8_onnxruntime = onnxruntime_outputs(int8_path, batch)
    with Detector(int8_path, backend="openvino") as detector:
        assert detector.backend.endswith("(CPU, f32, int8 QDQ)")
        int8_openvino = detector._backend.run(batch)
        assert len(detector(images[:2])) == 2
    for ours, theirs, reference in zip(int8_openvino, int8_onnxruntime, fp32):
        # Both round differently inside (OpenVINO runs the Q/DQ pairs as its own int8
        # kernels); neither may be much further from the float model than the other.
        assert correlation(ours, reference) >= correlation(theirs, reference) - 0.05
    assert QUANTIZATION_KEY == EXPORT_QUANTIZATION_KEY  # the backend reads the one key the export writes (model_file)


def test_precision_choice_from_device_capabilities():
    avx2, amx = ["FP32", "INT8", "BIN", "EXPORT_IMPORT"], ["FP32", "BF16", "INT8", "BIN", "EXPORT_IMPORT"]
    assert choose_precision("f32", "CPU", amx) == ("f32", None)
    assert choose_precision("bf16", "CPU", amx) == ("bf16", None)
    assert choose_precision("auto", "CPU", amx) == ("bf16", None)
    assert choose_precision("auto", "CPU", avx2) == ("f32", None)
    precision, reason = choose_precision("bf16", "CPU", avx2)
    assert precision == "f32" and "no bf16 on this CPU" in reason and "FP32, INT8" in reason
    assert choose_precision("auto", "GPU", ["FP32", "FP16", "INT8"]) == ("f16", None)
    assert choose_precision("auto", "AUTO", None) == (None, None)
    with pytest.raises(UsageError, match="'fp64'.*f32, bf16, auto"):
        choose_precision("fp64", "CPU", avx2)
    assert PRECISIONS == ("f32", "bf16", "auto")


def test_bad_options_are_refused_with_the_bad_value(onnx_path):
    with pytest.raises(UsageError, match="unknown OpenVINO device 'TPU'"):
        Detector(onnx_path, backend="openvino", device="TPU")
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        Detector(onnx_path, backend="openvino", precision="fp8")
    with pytest.raises(UsageError, match="backend is 'onnxruntime'"):
        Detector(onnx_path, backend="onnxruntime", precision="bf16")
    with pytest.raises(UsageError, match="spinning is an onnxruntime option"):
        Detector(onnx_path, backend="openvino", spinning=False)
    if not any(d.startswith("NPU") for d in openvino_core().available_devices):
        with pytest.raises(OpenVinoError, match="no NPU device here.*available: CPU"):
            Detector(onnx_path, backend="openvino", device="NPU")


def run_isolated(code):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_missing_openvino_names_the_extra_to_install(onnx_path):
    out = run_isolated(
        f"""
        import importlib.abc, sys

        class NoOpenVino(importlib.abc.MetaPathFinder):
            # as if openvino were not installed: the import system finds no such module
            def find_spec(self, name, path=None, target=None):
                if name == "openvino" or name.startswith("openvino."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NoOpenVino())
        from ssd_edge.runtime import Detector
        from ssd_edge.common.errors import MissingDependency
        try:
            Detector({str(onnx_path)!r}, backend="openvino")
        except MissingDependency as exc:
            print(type(exc).__name__, exc)
        with Detector({str(onnx_path)!r}) as detector:  # onnxruntime does not need it
            print(detector.backend)
        """
    )
    first, second = out.splitlines()
    assert first.startswith("MissingDependency backend 'openvino' needs the 'openvino' package")
    assert "pip install 'ssd-edge[openvino]'" in first
    assert second == "onnxruntime (CPUExecutionProvider)"
    assert issubclass(MissingDependency, ImportError)


def test_cpu_threads_are_not_pinned_unless_asked(onnx_path):
    """Issue 22 item 11: OpenVINO pins its CPU threads by default, and a pinned thread waits for
    its core while other work holds it (1.7-4x slower than onnxruntime under load); ours are not."""
    from ssd_edge.runtime.backends.openvino_backend import OpenVinoBackend, OpenVinoOptions

    assert OpenVinoBackend(onnx_path).compiled.get_property("ENABLE_CPU_PINNING") is False
    assert OpenVinoBackend(onnx_path, options=OpenVinoOptions(pinning=True)).compiled.get_property(
        "ENABLE_CPU_PINNING") is True
    with pytest.raises(UsageError, match="pinning is on"):
        OpenVinoOptions(pinning="yes")


def test_tbb_partitioner_reaches_the_compiled_model(onnx_path):
    """Issue 22 item 11: TBB_PARTITIONER (how the CPU plugin shares a layer's work between its
    threads) is OpenVINO's choice unless asked; asked, the compiled model carries it."""
    from ssd_edge.runtime.backends.openvino_backend import OpenVinoBackend, OpenVinoOptions

    def partitioner(backend):
        return str(backend.compiled.get_property("TBB_PARTITIONER")).rsplit(".", 1)[-1]

    assert OpenVinoBackend(onnx_path).options.partitioner is None
    assert partitioner(OpenVinoBackend(onnx_path, options=OpenVinoOptions(partitioner="auto"))) == "AUTO"
    assert partitioner(OpenVinoBackend(onnx_path, options=OpenVinoOptions(partitioner="static"))) == "STATIC"
    with pytest.raises(UsageError, match="unknown partitioner 'dynamic'"):
        OpenVinoOptions(partitioner="dynamic")


def test_default_threads_choose_between_all_and_one_by_latency(onnx_path, images):
    """Issue 22 item 11: with the default thread count the CPU backend also compiles the model
    for 1 thread and runs each call with whichever ThreadChoice says (on a shared CPU 1 thread
    is faster: inference_under_load.md, run 5); both give the same outputs, to the bit. A
    fixed `threads` compiles once."""
    from ssd_edge.runtime.backends.openvino_backend import OpenVinoBackend, OpenVinoOptions

    backend = OpenVinoBackend(onnx_path)
    many = int(backend.compiled.get_property("INFERENCE_NUM_THREADS"))
    if many == 1:  # one physical core: nothing to choose
        assert backend.thread_choice is None
        return
    choice = backend.thread_choice
    assert choice.many == many and choice.current == many
    backend._single_thread_job.result()  # compiled and warmed up in the background; calls do not wait
    batch = preprocess(images[:3], backend.spec.input_size)
    all_threads = backend.run(batch)  # takes the finished single-thread request
    assert choice.single_ready
    single = backend._single_thread_request.get_compiled_model()
    assert single.get_property("INFERENCE_NUM_THREADS") == 1
    for name in ("INFERENCE_PRECISION_HINT", "ENABLE_CPU_PINNING", "PERFORMANCE_HINT", "TBB_PARTITIONER"):
        assert str(single.get_property(name)) == str(backend.compiled.get_property(name)), name
    choice.current = 1  # as after a probe that found 1 thread faster
    locs, _ = backend._infer(batch)
    assert np.shares_memory(locs, backend._single_thread_request.get_output_tensor(backend._outputs[0]).data)
    one_thread = backend.run(batch)
    assert choice.calls == {many: 1, 1: 2}
    for a, b in zip(all_threads, one_thread):
        np.testing.assert_array_equal(a, b)
    for _ in range(20):  # fewer than a window and a period: no probe yet
        backend.run(batch)
    assert choice.calls[1] == 22 and choice.calls[many] == 1
    locs, confs = backend.run(batch[:0])  # an empty batch (dynamic model): empty outputs, not a division by 0
    assert locs.shape[0] == confs.shape[0] == 0 and choice.calls[1] == 22  # and it tells the choice nothing
    fixed = OpenVinoBackend(onnx_path, options=OpenVinoOptions(threads=many))
    assert fixed.thread_choice is None and fixed._single_thread_job is None


def test_a_failed_single_thread_compile_keeps_the_default_count(onnx_path, images):
    """If OpenVINO cannot compile the 1-thread copy (memory, say), the backend says so once and
    goes on with its default thread count."""
    from concurrent.futures import Future

    from ssd_edge.runtime.backends.openvino_backend import OpenVinoBackend

    backend = OpenVinoBackend(onnx_path)
    if backend.thread_choice is None:
        return  # one physical core: no 1-thread copy to compile
    failed = Future()
    failed.set_exception(RuntimeError("Exception from src/inference/src/cpp/core.cpp: out of memory"))
    backend._single_thread_job = failed
    batch = preprocess(images[:2], backend.spec.input_size)
    with pytest.warns(RuntimeWarning, match="could not compile the model for 1 thread; it keeps its 2 threads .*"
                                            "out of memory"):
        locs, _ = backend.run(batch)
    assert backend.thread_choice is None and locs.shape[0] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        backend.run(batch)
