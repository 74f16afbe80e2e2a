"""ssd-doctor's checks of the user's own files.

* `--model x.onnx`: the model loads (its ModelSpec from the ONNX metadata) and detects on
  synthetic images through the runtime's `Detector` on onnxruntime (its CUDA provider
  where onnxruntime-gpu is installed).
* `--engine x.engine` (with its .engine.json): the engine runs through the runtime's own
  engine runner (`TensorRTBackend`: pycuda buffers, TensorRT, the CUDA decode + NMS).
  With `--model` too, the engine's raw outputs are compared with the ONNX model's on
  onnxruntime's CPU provider, and their detections matched (runtime.parity); and the
  kernel's detections must equal NumPy's decode of the engine's own outputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ssd_edge.runtime.doctor.checks import NVCC_FIX, ORT_FIX, PYCUDA_FIX, TENSORRT_FIX, Machine
from ssd_edge.runtime.doctor.kernel_cases import first_difference
from ssd_edge.runtime.doctor.verdict import Verdict, failed, missing, ok
from ssd_edge.runtime.model_file import read_sidecar, sidecar_path

MODEL_FIX = "check the file: re-export it with `ssd-export` (an ONNX from ssd-export carries its ModelSpec)"
ENGINE_FIX = "rebuild the engine on this machine: ssd-export --format engine (engines are tied to the " \
             "TensorRT version and GPU that built them)"
MIN_AGREEMENT = 0.9  # engine vs ONNX detections: FP16/INT8 engines move a few boxes


def synthetic_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` BGR uint8 images (H, W, 3) of varied sizes: smooth gradients with noise."""
    rng = np.random.default_rng(seed)
    images = []
    for height, width in rng.integers(200, 700, (count, 2)):
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
        noise = rng.integers(-40, 40, base.shape)
        images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return images


def _not_a_file(name: str, path: Path, kind: str, fix: str) -> Verdict | None:
    """A FAILED verdict when `path` is a folder or does not exist, else None."""
    if path.is_dir():
        return failed(name, f"{path}: is a folder, not {kind} file", f"{fix} (a file, not a folder)")
    if not path.is_file():
        return failed(name, f"{path}: no such file", fix)
    return None


def _unreadable(name: str, path: Path, exc: BaseException) -> Verdict:
    return failed(name, f"{path}: cannot be loaded ({type(exc).__name__}: {exc})", MODEL_FIX)


def check_model(machine: Machine, model: Path) -> list[Verdict]:
    """The ONNX model detects on synthetic images through Detector on onnxruntime."""
    wrong = _not_a_file("model (onnxruntime)", model, "an .onnx model", "give the path of an .onnx model")
    if wrong is not None:
        return [wrong]
    if "CPUExecutionProvider" not in machine.providers:
        return [missing("model (onnxruntime)", f"{model} cannot run: onnxruntime is not installed", ORT_FIX)]
    if not machine.opencv:
        return [missing("model (onnxruntime)", f"{model} cannot run: OpenCV is not installed",
                        "pip install 'ssd-edge[runtime]'")]
    from ssd_edge.common.errors import SSDEdgeError
    from ssd_edge.runtime.detector import Detector

    try:
        detector = Detector(model, backend="onnxruntime")
    except (SSDEdgeError, OSError) as exc:  # anything else is a bug: `checking` reports it with its traceback
        return [_unreadable("model (onnxruntime)", model, exc)]
    with detector:
        images = synthetic_images(4)
        detector(images)  # warm-up
        start = time.perf_counter()
        found = detector(images)
        seconds = time.perf_counter() - start
    spec = detector.spec
    return [ok("model (onnxruntime)", f"{model.name}: {spec.arch}, {spec.input_size[0]}x{spec.input_size[1]}, "
               f"{spec.num_classes - 1} classes; {len(images)} images in {seconds * 1e3:.1f} ms on "
               f"{detector.backend} ({sum(len(d.labels) for d in found)} detections)")]


def _engine_missing(machine: Machine) -> tuple[str, str] | None:
    """(why an engine cannot run here, the fix), or None when it can."""
    if machine.tensorrt is None:
        return "TensorRT (a supported version) is not installed", TENSORRT_FIX
    if machine.gpu is None:
        return "there is no GPU", "run ssd-doctor on the GPU machine the engine was built for"
    if not machine.pycuda:
        return "pycuda is not installed", PYCUDA_FIX
    if machine.nvcc is None:
        return "nvcc is not on PATH (the decode + NMS kernel is compiled with it)", NVCC_FIX
    return None


def _engine_outputs(backend, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """locs (B, P, 4) and confs (B, P, C) the engine wrote for its last run, copied back."""
    spec = backend.spec
    shapes = ((batch, spec.num_priors, 4), (batch, spec.num_priors, spec.num_classes))
    outputs = []
    with backend.context:
        for name, shape in zip(spec.output_names, shapes):
            host = np.empty(shape, np.float32)
            backend.stream.copy_to_host(host, backend.engine.buffers[name].address)
            outputs.append(host)
        backend.stream.synchronize()
    return outputs[0], outputs[1]


def check_engine(machine: Machine, engine: Path, model: Path | None) -> list[Verdict]:
    """The engine through the runtime's TensorRT backend; against the ONNX model when given."""
    name = "engine (TensorRT)"
    wrong = _not_a_file(name, engine, "a .engine", "give the path of a .engine built by ssd-export")
    if wrong is not None:
        return [wrong]
    sidecar = sidecar_path(engine)
    if not sidecar.is_file():  # the engine cannot run anywhere without it: said before what this machine lacks
        return [failed(name, f"{engine}: its sidecar is missing (expected {sidecar}, written by ssd-export beside "
                             "the engine)", f"copy {sidecar.name} from where the engine was built, or rebuild the "
                                            "engine with ssd-export --format engine")]
    from ssd_edge.common.errors import SSDEdgeError

    try:
        read_sidecar(engine)
    except SSDEdgeError as exc:
        return [failed(name, str(exc), ENGINE_FIX)]
    absent = _engine_missing(machine)
    if absent is not None:
        return [missing(name, f"{engine} cannot run here: {absent[0]}", absent[1])]
    from ssd_edge.runtime.backends.tensorrt_backend import TensorRTBackend
    from ssd_edge.runtime.postprocess.fast import postprocess
    from ssd_edge.runtime.preprocess import preprocess
    from ssd_edge.runtime.priors import default_boxes

    backend = TensorRTBackend(engine)
    try:
        spec = backend.spec
        batch = backend.batch_size or max(backend.engine.min_batch, min(backend.max_batch, 4))
        images = synthetic_images(batch, seed=1)
        sizes = [image.shape[:2] for image in images]
        preprocess(images, spec.input_size, out=backend.input_buffer(batch))
        found = backend.detect(batch, sizes)
        locs, confs = _engine_outputs(backend, batch)
    finally:
        backend.close()
    verdicts = []
    difference = first_difference(found, postprocess(locs, confs, default_boxes(spec), sizes, backend.config))
    if difference:
        verdicts.append(failed(name, f"{engine}: the CUDA decode + NMS differs from NumPy on the engine's own "
                                     f"outputs: {difference}", "attach this report to a bug report"))
    else:
        verdicts.append(ok(name, f"{engine.name}: {backend.name}, batch {batch}: runs; the CUDA decode + NMS "
                                 f"equals NumPy on its outputs ({sum(len(d.labels) for d in found)} detections)"))
    if model is not None and model.is_file():
        verdicts += _against_onnx(engine, model, spec, images, (locs, confs), batch)
    return verdicts


def _against_onnx(engine: Path, model: Path, spec, images, engine_outputs, batch: int) -> list[Verdict]:
    """The engine's raw outputs and detections against the ONNX model's on onnxruntime CPU."""
    from ssd_edge.runtime.backends.onnxruntime_backend import open_session
    from ssd_edge.runtime.model_file import spec_from_onnx_metadata
    from ssd_edge.runtime.parity import compare, onnx_outputs
    from ssd_edge.runtime.preprocess import preprocess

    name = "engine vs ONNX"
    session = open_session(model)
    onnx_spec = spec_from_onnx_metadata(session.get_modelmeta().custom_metadata_map, model)
    if onnx_spec.to_dict() != spec.to_dict():
        return [failed(name, f"{engine} was not built from {model}: their ModelSpecs differ",
                       "give the ONNX the engine was built from, or rebuild the engine from this one")]
    fixed = session.get_inputs()[0].shape[0]
    reference = onnx_outputs(model, preprocess(images, spec.input_size), fixed if isinstance(fixed, int) else batch,
                             session)
    report = compare(spec, engine_outputs, reference, [image.shape[:2] for image in images], batch)
    if report.agreement < MIN_AGREEMENT:
        return [failed(name, f"{engine} disagrees with {model}: {report.summary()}",
                       "rebuild the engine in fp32 to see whether reduced precision is the cause; attach this report")]
    return [ok(name, report.summary())]
