"""`Detector` on onnxruntime (CPU): equal to the PyTorch model's own eval output on the
sample data, batching and chunking, torch-free operation, and one clear error per kind of
bad input."""

import subprocess
import sys
import textwrap
import threading

import cv2
import numpy as np
import pytest
import torch

from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.runtime import Detections, Detector, SpecError
from ssd_edge.runtime.image_io import ImageError
from ssd_edge.runtime.preprocess import preprocess

CLASSES = ["__background__", "circle", "square", "triangle"]


def sample_images(root, count=6):
    paths = sorted((root / "val").glob("*.jpg")) + sorted((root / "train").glob("*.jpg"))
    return [cv2.imread(str(p)) for p in paths[:count]]


@pytest.fixture(scope="module")
def model(tiny_coco):
    torch.manual_seed(0)
    images = torch.from_numpy(preprocess(sample_images(tiny_coco, 8), (192, 192)))
    return calibrate_batchnorm(build_model("mobilenetv3_ssd", CLASSES, imgsz=192), images)


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("detector") / "ssdlite.onnx", batch=2, dynamic=True)


@pytest.fixture(scope="module")
def fixed_batch_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("detector") / "ssdlite_b2.onnx", batch=2, dynamic=False)


def torch_detections(model, images, config):
    model.post_processor.config = config
    with torch.no_grad():
        batch = torch.from_numpy(preprocess(images, model.spec.input_size))
        boxes, labels, scores, _ = model.eval()(batch, image_sizes=[im.shape[:2] for im in images])
    return [(b.numpy(), lab.numpy(), s.numpy()) for b, lab, s in zip(boxes, labels, scores)]


def test_detector_equals_the_pytorch_model_on_sample_data(model, onnx_path, tiny_coco):
    images = sample_images(tiny_coco)
    with Detector(onnx_path, score_threshold=0.05) as detector:
        found = detector(images)
        expected = torch_detections(model, images, detector.config)
    assert len(found) == len(images)
    assert sum(len(d.scores) for d in found) > 50
    for ours, (boxes, labels, scores) in zip(found, expected):
        np.testing.assert_array_equal(ours.labels, labels)
        np.testing.assert_allclose(ours.scores, scores, rtol=0, atol=1e-4)
        np.testing.assert_allclose(ours.boxes, boxes, rtol=0, atol=1e-3)
        np.testing.assert_allclose(ours.confs.sum(axis=1), 1.0, rtol=1e-5)


def test_one_image_gives_detections_a_list_gives_a_list(onnx_path, tiny_coco):
    image = sample_images(tiny_coco, 1)[0]
    with Detector(onnx_path, score_threshold=0.2, max_detections=10) as detector:
        single = detector(image)
        listed = detector([image])
        assert detector.class_names == tuple(CLASSES)
        assert detector.spec.input_size == (192, 192)
    assert isinstance(single, Detections) and isinstance(listed, list) and len(listed) == 1
    np.testing.assert_array_equal(single.boxes, listed[0].boxes)
    assert len(single.scores) <= 10
    assert single.names == [CLASSES[label] for label in single.labels]
    assert single.boxes.dtype == np.float32 and single.labels.dtype == np.int64


def test_fixed_batch_model_runs_in_padded_chunks(onnx_path, fixed_batch_path, tiny_coco):
    images = sample_images(tiny_coco, 5)  # chunks of 2, 2 and 1 (padded)
    with Detector(onnx_path) as dynamic, Detector(fixed_batch_path) as fixed:
        assert fixed._backend.batch_size == 2 and dynamic._backend.batch_size is None
        for a, b in zip(dynamic(images), fixed(images)):
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_image_paths_are_read(onnx_path, tiny_coco):
    path = sorted((tiny_coco / "val").glob("*.jpg"))[0]
    with Detector(onnx_path) as detector:
        np.testing.assert_array_equal(detector(path).boxes, detector(cv2.imread(str(path))).boxes)


def test_calls_from_several_threads_are_serialised(onnx_path, tiny_coco):
    images = sample_images(tiny_coco, 4)
    with Detector(onnx_path) as detector:
        expected = [d.boxes for d in detector(images)]
        results = {}

        def work(i):
            results[i] = detector(images[i]).boxes

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i])


def test_runtime_detects_with_torch_unimportable(onnx_path, tiny_coco):
    image_path = sorted((tiny_coco / "val").glob("*.jpg"))[0]
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        from ssd_edge.runtime import Detector, draw_detections, read_image
        image = read_image({str(image_path)!r})
        with Detector({str(onnx_path)!r}, score_threshold=0.05) as detector:
            found = detector(image)
            drawn = draw_detections(image, found)
        assert len(found.scores) > 0 and drawn.ndim == 3
        assert not [n for n, m in sys.modules.items() if m is not None and (n == "torch" or n.startswith("torch."))]
        print(len(found.scores))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0


# ---------------------------------------------------------------- bad input, one clear error each


@pytest.fixture(scope="module")
def detector(onnx_path):
    with Detector(onnx_path) as det:
        yield det


def test_unreadable_image_paths(detector, tmp_path):
    with pytest.raises(ImageError, match="missing.jpg: no such image file"):
        detector(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ImageError, match="corrupt.jpg: not a readable image"):
        detector([corrupt])


@pytest.mark.parametrize(
    "image,problem",
    [
        (np.zeros((50, 60, 3), np.float32), "dtype uint8"),
        (np.zeros((50, 60), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((50, 60, 4), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((0, 60, 3), np.uint8), "empty image"),
    ],
)
def test_wrong_dtype_or_channels(detector, image, problem):
    with pytest.raises(ValueError, match=problem):
        detector([np.zeros((10, 10, 3), np.uint8), image])


def test_not_an_image(detector):
    with pytest.raises(TypeError, match="numpy array"):
        detector([[1, 2, 3]])


@pytest.mark.parametrize("given", [None, [None]], ids=["none", "list-of-none"])
def test_none_as_image_names_imread(detector, given):
    """What cv2.imread returns for a missing file: a message about the image, not 'NoneType
    is not iterable'."""
    with pytest.raises(TypeError, match="got None instead of an image.*cv2.imread"):
        detector(given)


def test_empty_list(detector):
    with pytest.raises(ValueError, match="empty list"):
        detector([])


def test_onnx_without_model_spec(onnx_path, tmp_path):
    import onnx

    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(SpecError, match="bare.onnx: no ssd-edge metadata"):
        Detector(bare)


def test_not_a_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.onnx: no such model file"):
        Detector(tmp_path / "nothing.onnx")
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"x")
    with pytest.raises(SpecError, match="expected .onnx or .engine"):
        Detector(weights)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not protobuf")
    with pytest.raises(SpecError, match="broken.onnx: onnxruntime cannot load"):
        Detector(broken)


def test_one_session_set_up_for_runtime_and_export(onnx_path, tmp_path):
    from ssd_edge.export.parity import onnx_outputs
    from ssd_edge.runtime.backends.onnxruntime_backend import open_session

    session = open_session(onnx_path, threads=2)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 2
    assert session.get_session_options().log_severity_level == 3
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not protobuf")
    with pytest.raises(SpecError, match="broken.onnx: onnxruntime cannot load this model"):
        onnx_outputs(broken, np.zeros((1, 3, 8, 8), np.float32), batch=1)


def _gpu_and_tensorrt_present() -> bool:
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


@pytest.mark.skipif(_gpu_and_tensorrt_present(), reason="this machine has a GPU and TensorRT")
def test_engine_on_a_machine_without_gpu(detector, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    from ssd_edge.runtime.model_file import EngineSidecar

    sidecar = EngineSidecar(spec=detector.spec, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7))
    (tmp_path / "model.engine.json").write_text(sidecar.to_json())
    with pytest.raises(RuntimeError, match=r"model.engine: a TensorRT engine runs only where TensorRT and an NVIDIA"):
        Detector(engine)


def test_engine_without_its_sidecar(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    with pytest.raises(SpecError, match="model.engine.json is missing"):
        Detector(engine)


def test_bad_backend_and_closed_detector(onnx_path):
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        Detector(onnx_path, backend="tflite")
    with pytest.raises(ValueError, match="runs engines"):
        Detector(onnx_path, backend="tensorrt")
    det = Detector(onnx_path)
    det.close()
    det.close()
    with pytest.raises(RuntimeError, match="closed"):
        det(np.zeros((10, 10, 3), np.uint8))


@pytest.mark.parametrize("spinning, value", [(False, "0"), (True, "1"), (None, "default")])
def test_spinning_setting_reaches_the_onnxruntime_session(onnx_path, spinning, value):
    from ssd_edge.runtime.backends.onnxruntime_backend import DEFAULT_SPINNING, SPINNING_KEY

    if value == "default":
        value = "1" if DEFAULT_SPINNING else "0"
    with Detector(onnx_path, backend="onnxruntime-cpu", spinning=spinning) as detector:
        options = detector._backend.session.get_session_options()
        assert options.get_session_config_entry(SPINNING_KEY) == value
        assert detector._backend.spinning == (value == "1")


class _ProvidersSay:
    """An onnxruntime session (it runs on the CPU) that reports the CUDA provider first, as
    onnxruntime-gpu's does, so the backend sets up its GPU decoder."""

    def __init__(self, session):
        self._session = session

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self._session, name)


def _kernel_cannot_compile(monkeypatch, failure):
    """pycuda imports, the CUDA context and stream come up, and compiling the decode + NMS
    kernel fails in pycuda's SourceModule with `failure` (what pycuda raises: OSError when
    nvcc is not on PATH, pycuda.driver.CompileError when nvcc rejects the GPU). The project's
    own compile_module and CudaDecodeNms run unchanged. Returns the streams made."""
    import types

    import ssd_edge.runtime.backends.onnxruntime_backend as ort_backend
    import ssd_edge.runtime.cuda.resources as resources

    driver = types.ModuleType("pycuda.driver")
    driver.Error = _FakeCudaError
    driver.CompileError = _FakeCompileError
    compiler = types.ModuleType("pycuda.compiler")

    def source_module(*args, **kwargs):
        raise failure

    compiler.SourceModule = source_module
    package = types.ModuleType("pycuda")
    package.driver, package.compiler = driver, compiler
    for name, module in (("pycuda", package), ("pycuda.driver", driver), ("pycuda.compiler", compiler)):
        monkeypatch.setitem(sys.modules, name, module)
    streams = []

    class Stream:
        def __init__(self):
            self.closed = False
            streams.append(self)

        def close(self):
            self.closed = True

    class Context:
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

    monkeypatch.setattr(resources, "Stream", Stream)
    monkeypatch.setattr(resources, "primary_context", lambda device=0: Context())
    real_open_session = ort_backend.open_session
    monkeypatch.setattr(ort_backend, "open_session", lambda *a, **k: _ProvidersSay(real_open_session(*a, **k)))
    return streams


class _FakeCudaError(Exception):
    pass


class _FakeCompileError(_FakeCudaError):
    pass


@pytest.mark.parametrize("failure, reason", [
    (OSError("error invoking 'nvcc --version': [Errno 2] No such file or directory: 'nvcc'"),
     "compiling decode_nms.cu needs nvcc on PATH"),
    (_FakeCompileError("nvcc compilation of kernel.cu failed: nvcc fatal : Unsupported gpu architecture 'compute_53'"),
     "nvcc \\(decode_nms.cu\\) failed: .*Unsupported gpu architecture"),
])
def test_kernel_that_cannot_compile_falls_back_to_numpy_with_one_warning(
    onnx_path, tiny_coco, monkeypatch, failure, reason
):
    import re
    import warnings

    images = sample_images(tiny_coco, 3)
    with Detector(onnx_path, backend="onnxruntime-cpu", score_threshold=0.05) as reference:
        expected = reference(images)
    streams = _kernel_cannot_compile(monkeypatch, failure)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Detector(onnx_path, backend="onnxruntime", score_threshold=0.05) as detector:
            found = detector(images)
            again = detector(images)
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [str(caught[0].message)]
    message = str(caught[0].message)
    assert message.startswith(f"{onnx_path}: decode + NMS runs in NumPy on the CPU, not in the CUDA kernel: ")
    assert re.search(reason, message), message
    assert caught[0].filename == __file__  # points at the line that made the Detector
    assert detector._backend._gpu is None and len(streams) == 1 and streams[0].closed
    for result in (found, again):
        for ours, theirs in zip(result, expected, strict=True):
            np.testing.assert_array_equal(ours.labels, theirs.labels)
            np.testing.assert_array_equal(ours.scores, theirs.scores)
            np.testing.assert_array_equal(ours.boxes, theirs.boxes)


def test_a_detector_deploys_at_a_deployment_threshold_unless_told(onnx_path, tiny_coco):
    """A model's own score threshold (SSDLite's 0.001) is its evaluation one: a Detector runs
    at DEPLOYMENT_SCORE_THRESHOLD unless given a threshold or asked for the model's own, which
    ssd-eval's predictor does."""
    from ssd_edge.evaluation.predictor import open_predictor as open_for_evaluation
    from ssd_edge.runtime.detections import DEPLOYMENT_SCORE_THRESHOLD

    with Detector(onnx_path) as detector:
        assert detector.spec.score_threshold == 0.001
        assert detector.config.score_threshold == DEPLOYMENT_SCORE_THRESHOLD == 0.3
        assert detector.config.replace(score_threshold=0.001) == detector.spec.postprocess  # the rest is the model's
        assert all((d.scores > np.float32(0.3)).all() for d in detector(sample_images(tiny_coco, 2)))
    with Detector(onnx_path, score_threshold=0.05) as detector:
        assert detector.config.score_threshold == 0.05
    with Detector(onnx_path, model_thresholds=True) as detector:
        assert detector.config == detector.spec.postprocess
    with open_for_evaluation(onnx_path) as predictor:
        assert predictor.config.score_threshold == 0.001
