"""ssd-serve end to end: the real tritonserver (PyTriton, started from .venv-serve, which
`make setup` creates) on loopback, clients over HTTP and gRPC from this environment."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import tritonclient.http as triton_http

from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.runtime import Detections, Detector
from ssd_edge.runtime.preprocess import preprocess
from ssd_edge.runtime.serve.client import DetectionClient, ServeRequestError, parse_server
from ssd_edge.runtime.serve.protocol import first_error, pack, pack_error, unpack
from tests.helpers.serve_launch import launch_server

ROOT = Path(__file__).resolve().parents[1]
SERVE_PYTHON = Path(os.environ.get("SSD_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
CLASSES = ("__background__", "circle", "square", "triangle")
SCORE = 0.05  # the server's threshold: dozens of detections per image
MAX_BATCH = 8


@pytest.fixture(scope="module")
def image_paths(tiny_coco):
    return sorted((tiny_coco / "val").glob("*.jpg")) + sorted((tiny_coco / "train").glob("*.jpg"))[:4]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, image_paths):
    torch.manual_seed(0)
    model = build_model("mobilenetv3_ssd", CLASSES, imgsz=160)
    pictures = [cv2.imread(str(p)) for p in image_paths]
    model = calibrate_batchnorm(model, torch.from_numpy(preprocess(pictures, model.spec.input_size)))
    return export_onnx(model, tmp_path_factory.mktemp("serve") / "model.onnx", dynamic=True)


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    if not SERVE_PYTHON.is_file():
        pytest.fail(f"{SERVE_PYTHON}: no ssd-serve environment; `make setup` creates it")
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    with launch_server(SERVE_PYTHON, model_path, log, "--max-batch", str(MAX_BATCH), "--max-queue-delay-us", "100000",
                       "--score-threshold", str(SCORE), "--threads", "1", cwd=ROOT) as running:
        yield running


@pytest.fixture(scope="module")
def local(model_path):
    with Detector(model_path, score_threshold=SCORE, threads=1) as detector:
        yield detector


def assert_same(got: list[Detections], want: list[Detections]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.boxes.shape == w.boxes.shape
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)
        np.testing.assert_array_equal(g.labels, w.labels)
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)
        np.testing.assert_allclose(g.confs, w.confs, atol=1e-5)
        assert g.class_names == w.class_names == CLASSES


# --- without a server


def test_parse_server_takes_host_port_with_an_optional_scheme():
    assert parse_server("10.0.0.2:9000") == ("http", "10.0.0.2:9000")
    assert parse_server("grpc://host") == ("grpc", "host:8001")
    assert parse_server("http://host:81/") == ("http", "host:81")
    for bad in ("ftp://host:1", "host:port", ":8000"):
        with pytest.raises(ValueError, match="server"):
            parse_server(bad)


def test_pack_and_unpack_round_trip_padded_detections():
    one = Detections(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([1, 3]),
                     np.array([0.9, 0.5], np.float32), np.full((2, 4), 0.25, np.float32))
    none = Detections.empty(4)
    packed = pack([one, none], 4)
    assert packed["boxes"].shape == (2, 2, 4) and packed["count"][:, 0].tolist() == [2, 0]
    assert first_error(packed["error"]) is None
    back = unpack(packed, CLASSES)
    np.testing.assert_array_equal(back[0].boxes, one.boxes)
    assert back[0].names == ["circle", "triangle"] and len(back[1].scores) == 0
    assert first_error(pack_error(0, 4, "image 0: empty bytes")["error"]) == "image 0: empty bytes"


def test_the_python_library_directory_goes_first_once():
    import sysconfig

    from ssd_edge.runtime.serve.server import python_library_first

    libdir = sysconfig.get_config_var("LIBDIR")
    environ = {"LD_LIBRARY_PATH": f"/opt/a:{libdir}:/opt/b"}
    if python_library_first(environ) is None:
        pytest.skip(f"this interpreter has no shared libpython in {libdir}")
    assert environ["LD_LIBRARY_PATH"] == f"{libdir}:/opt/a:/opt/b"
    empty: dict[str, str] = {}
    python_library_first(empty)
    assert empty["LD_LIBRARY_PATH"] == libdir


# --- the server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_detections_equal_the_local_detectors(server, local, image_paths, protocol):
    arrays = [cv2.imread(str(p)) for p in image_paths[:4]]
    assert len({a.shape for a in arrays}) > 1, "the images should differ in size"
    want = local(arrays)
    assert sum(len(d.scores) for d in want) > 10
    with DetectionClient(getattr(server, protocol)) as client:
        assert client.class_names == CLASSES
        assert client.server_config == local.config
        assert_same(client(image_paths[:4]), want)  # files' bytes, decoded by the server
        assert_same(client(arrays), want)  # raw BGR, one request per image size
        assert_same([client(arrays[1])], want[1:2])
        strict = DetectionClient(getattr(server, protocol), score_threshold=0.3)
        with Detector(local.model_path, score_threshold=0.3, threads=1) as higher:
            assert_same(strict(arrays), higher(arrays))
        strict.close()
        with pytest.raises(ValueError, match="below the server's"):
            DetectionClient(getattr(server, protocol), score_threshold=0.01)


def _send(address: str, items: list, results: list, index: int, start: threading.Barrier) -> None:
    with DetectionClient(address) as client:
        start.wait()
        for item in items:
            try:
                results[index].append(client(item))
            except ServeRequestError as exc:
                results[index].append(exc)


def _run_clients(jobs: list[tuple[str, list]]) -> list[list]:
    results: list[list] = [[] for _ in jobs]
    start = threading.Barrier(len(jobs))
    threads = [threading.Thread(target=_send, args=(address, items, results, i, start))
               for i, (address, items) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_clients_are_batched(server, local, image_paths):
    payload = [p.read_bytes() for p in image_paths[:3]]
    want = local([str(p) for p in image_paths[:3]])
    with DetectionClient(server.http) as client:
        before = client.statistics()
        results = _run_clients([(server.grpc if i % 2 else server.http, payload) for i in range(8)])
        after = client.statistics()
    for got in results:
        assert not [r for r in got if isinstance(r, Exception)], got
        assert_same(got, want)
    formed = {size: after[size] - before.get(size, 0) for size in after if after[size] > before.get(size, 0)}
    print("batches formed (images: executions):", formed)
    assert sum(size * n for size, n in formed.items()) == 24
    assert max(formed) > 1, formed


def test_bad_requests_fail_alone(server, local, image_paths):
    good = image_paths[0].read_bytes()
    want = local(str(image_paths[0]))
    items = [good, b"not an image", good, b"", good, np.zeros((4, 4, 3), np.uint8)[:0], good]
    with DetectionClient(server.http) as probe:
        for _ in range(3):  # until one execution took several of them (the first time, as a rule)
            before = probe.statistics()
            outcome = [r[0] for r in _run_clients([(server.http, [item]) for item in items])]
            for i in (0, 2, 4, 6):
                assert_same([outcome[i]], [want])
            assert isinstance(outcome[1], ServeRequestError) and "cannot decode" in str(outcome[1])
            assert isinstance(outcome[3], ServeRequestError) and "empty bytes" in str(outcome[3])
            assert isinstance(outcome[5], ServeRequestError)
            after = probe.statistics()
            if any(size > 1 and after[size] > before.get(size, 0) for size in after):
                break
        else:
            pytest.fail(f"no execution took more than one request: {after}")


@pytest.mark.parametrize(
    "shape, datatype, fragment",
    [
        ((1, 8, 8, 3), "FP32", "data-type"),  # wrong dtype: Triton refuses it before batching
        ((1, 8, 8, 4), "UINT8", "shape"),  # 4 channels
        ((8, 8, 3), "UINT8", "shape"),  # no batch axis
        ((0, 8, 8, 3), "UINT8", ""),  # no image at all
        ((MAX_BATCH + 1, 8, 8, 3), "UINT8", "batch"),  # over max_batch_size
    ],
)
def test_malformed_raw_tensors_are_refused_and_the_server_goes_on(server, image_paths, shape, datatype, fragment):
    client = triton_http.InferenceServerClient(server.http)
    request = triton_http.InferInput("image", list(shape), datatype)
    request.set_data_from_numpy(np.zeros(shape, {"FP32": np.float32, "UINT8": np.uint8}[datatype]))
    try:
        result = client.infer("ssd_raw", [request])
    except Exception as exc:  # noqa: BLE001 - Triton's refusal, as tritonclient raises it
        message = str(exc)
    else:
        message = first_error(result.as_numpy("error")) or ""
        assert message, f"a malformed request {shape} {datatype} must not succeed"
    finally:
        client.close()
    assert fragment in message.lower(), message
    with DetectionClient(server.http) as good:
        assert good(image_paths[0]).boxes.shape[1] == 4


def test_health_config_and_metrics_as_triton_has_them(server):
    with urllib.request.urlopen(f"http://{server.http}/v2/health/ready", timeout=10) as answer:
        assert answer.status == 200
    with DetectionClient(server.grpc) as client:
        assert client.is_ready()
        config = client.model_config()
        assert config["max_batch_size"] == MAX_BATCH
        assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 100000
        assert json.loads(client.parameters["input_size"]) == [160, 160]
    with urllib.request.urlopen(server.metrics, timeout=10) as answer:
        text = answer.read().decode()
    assert 'nv_inference_request_success{model="ssd"' in text


def _predict(argv: list[str]) -> int:
    from ssd_edge.cli.predict import main

    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("scheme", ["", "grpc://"])
def test_ssd_predict_on_a_server_writes_what_local_predict_writes(server, model_path, image_paths, tmp_path, scheme):
    address = server.http if not scheme else server.grpc
    images = [str(p) for p in image_paths[:3]]
    assert _predict(["--model", str(model_path), *images, "--output", str(tmp_path / "local"), "--quiet"]) == 0
    assert _predict(["--server", address, *images, "--output", str(tmp_path / "remote"), "--quiet"]) == 0
    local, remote = (json.loads((tmp_path / name / "detections.json").read_text()) for name in ("local", "remote"))
    assert remote["backend"].startswith("ssd-serve") and remote["model"] == remote["backend"]
    for key in ("classes", "postprocess"):
        assert remote[key] == local[key]
    assert sum(len(entry["detections"]) for entry in local["images"]) > 0
    for mine, theirs in zip(remote["images"], local["images"]):
        assert (mine["image"], mine["width"], mine["height"]) == (theirs["image"], theirs["width"], theirs["height"])
        assert ([(d["label"], d["name"]) for d in mine["detections"]]
                == [(d["label"], d["name"]) for d in theirs["detections"]])
        for d, e in zip(mine["detections"], theirs["detections"]):
            np.testing.assert_allclose(d["box"], e["box"], atol=0.011)
            assert abs(d["score"] - e["score"]) <= 1.1e-5
    refused = tmp_path / "refused"
    assert _predict(["--server", address, *images, "--output", str(refused), "--iou-threshold", "0.123"]) == 2
    assert not refused.exists()


def test_sigterm_stops_the_server(server):
    process = server.process
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    rc = process.wait(timeout=60)
    took = time.monotonic() - start
    log = server.log.read_text()
    assert rc == 0, log[-3000:]
    assert "stopped" in log and took < 30
    with DetectionClient(server.http) as client:
        assert not client.is_ready()
    print(f"stopped in {took:.1f} s")
