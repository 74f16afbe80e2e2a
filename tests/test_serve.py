"""ssd-serve end to end: the real tritonserver (PyTriton, started from .venv-serve, which
`make setup` creates) on loopback, clients over HTTP and gRPC from this environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
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
from tests.helpers.serve_launch import free_ports, launch_server

ROOT = Path(__file__).resolve().parents[1]
SERVE_PYTHON = Path(os.environ.get("SSD_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
CLASSES = ("__background__", "circle", "square", "triangle")
SCORE = 0.05  # the server's threshold: dozens of detections per image
MAX_BATCH = 8
MAX_MEGAPIXELS = 2  # the test server's limit on one encoded image


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
                       "--score-threshold", str(SCORE), "--threads", "1", "--max-megapixels", str(MAX_MEGAPIXELS),
                       cwd=ROOT) as running:
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


def png_bomb(width: int, height: int) -> bytes:
    """A real PNG of `width` x `height` black grey pixels, compressed row by row (a 20000 x
    20000 one is about 0.4 MB and decodes to 1.2 GB of BGR)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, rows, parts = zlib.compressobj(9), b"\x00" * ((width + 1) * 250), []
    for _ in range(height // 250):
        parts.append(packer.compress(rows))
    parts.append(packer.compress(b"\x00" * ((width + 1) * (height % 250))) + packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is rewritten to claim `width` x `height`."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 127, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_the_header_reader_gives_the_size_of_every_format_it_reads():
    from ssd_edge.runtime.image_header import header_size

    image = np.zeros((37, 53, 3), np.uint8)
    for suffix in (".png", ".jpg", ".bmp", ".webp", ".tiff"):
        assert header_size(cv2.imencode(suffix, image)[1].tobytes()) == (53, 37), suffix
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert header_size(progressive) == (53, 37)
    assert header_size(jpeg_claiming(60000, 50000)) == (60000, 50000)
    assert header_size(png_bomb(20000, 20000)[:40]) == (20000, 20000)
    assert header_size(cv2.imencode(".ppm", image)[1].tobytes()) is None  # not read: OpenCV's own limit applies
    for cut in (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"BM", b"II*\x00\x08", b"not an image"):
        assert header_size(cut) is None


def test_an_image_over_the_limit_is_refused_from_its_header_with_our_message():
    from ssd_edge.runtime.serve.inputs import RequestError, decode_image_bytes

    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 2_000_000
    with pytest.raises(RequestError, match=r"^image 0: 20000x20000 exceeds the server's limit of 40 megapixels$"):
        decode_image_bytes(bomb, "image 0", 40)
    with pytest.raises(RequestError, match=r"^image 3: 60000x50000 exceeds the server's limit of 2.5 megapixels$"):
        decode_image_bytes(jpeg_claiming(60000, 50000), "image 3", 2.5)
    with pytest.raises(RequestError, match=r"^image 0: empty image \(0x16 in its header\)$"):
        decode_image_bytes(jpeg_claiming(0, 16), "image 0", 40)
    # without a limit, OpenCV's own refusal of the same header is said in our words, not OpenCV's assertion
    with pytest.raises(RequestError) as refused:
        decode_image_bytes(jpeg_claiming(60000, 50000), "image 0", None)
    assert str(refused.value).startswith("image 0: ") and "validateInputImageSize" not in str(refused.value)
    assert decode_image_bytes(jpeg_claiming(16, 16), "image 0", 40).shape == (16, 16, 3)


def test_the_cli_default_limit_is_the_servers():
    from ssd_edge.cli.serve import DEFAULT_MAX_MEGAPIXELS, build_parser
    from ssd_edge.runtime.serve import inputs

    assert DEFAULT_MAX_MEGAPIXELS == inputs.DEFAULT_MAX_MEGAPIXELS
    assert build_parser().parse_args(["--model", "m.onnx"]).max_megapixels == inputs.DEFAULT_MAX_MEGAPIXELS
    environ = {"OPENCV_IO_MAX_IMAGE_PIXELS": "1073741824"}
    inputs.limit_opencv_pixels(40, environ)
    assert environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == "40000000"
    inputs.limit_opencv_pixels(80, environ)  # never raised
    assert environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == "40000000"


def test_a_taken_port_is_named_before_anything_starts():
    from ssd_edge.runtime.serve.server import PortInUseError, ServeConfig, check_ports_free

    http, grpc, metrics = free_ports(3)
    config = ServeConfig(address="127.0.0.1", http_port=http, grpc_port=grpc, metrics_port=metrics)
    check_ports_free(config)
    for label, port in (("HTTP", http), ("gRPC", grpc), ("metrics", metrics)):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            with pytest.raises(PortInUseError, match=f"^{label} port {port} on 127.0.0.1 is already in use$"):
                check_ports_free(config)
    with socket.socket() as holder:  # a program on all interfaces also takes the loopback's port
        holder.bind(("0.0.0.0", http))
        holder.listen()
        with pytest.raises(PortInUseError, match=f"^HTTP port {http} on 127.0.0.1"):
            check_ports_free(config)


def test_tritonservers_own_port_message_is_read_back():
    from ssd_edge.runtime.serve.server import ServeConfig, _port_in_use_from_log

    config = ServeConfig(address="127.0.0.1", http_port=18000, grpc_port=18001, metrics_port=18002)
    log = ("I1207 05:01:02.000000 1 grpc_server.cc:2558] \"Started GRPCInferenceService at 127.0.0.1:18001\"\n"
           "E1207 05:00:59.588952 9490 main.cc:257] \"failed to start HTTP service: Unavailable - Socket "
           "'127.0.0.1:18000' already in use \"\n")  # tritonserver 2.6x's own line, port changed
    assert str(_port_in_use_from_log(log, config)) == "HTTP port 18000 on 127.0.0.1 is already in use"
    assert _port_in_use_from_log("E1207 main.cc] failed to load model 'ssd'\n", config) is None


def test_workspaces_of_killed_servers_go_and_a_running_ones_stay(tmp_path):
    """Workspaces made by real ssd-serve processes (PyTriton's Workspace, in .venv-serve): one
    killed with SIGKILL, one still running; only the killed one's folder and lock go."""
    if not SERVE_PYTHON.is_file():
        pytest.fail(f"{SERVE_PYTHON}: no ssd-serve environment; `make setup` creates it")
    from ssd_edge.runtime.serve.server import remove_stale_workspaces

    code = ("import sys, time; from pathlib import Path; from ssd_edge.runtime.serve.server import Workspace; "
            "w = Workspace(Path(sys.argv[1])); (w.path / 'model-store' / 'x').write_text('x'); "
            "print(w.path, flush=True); time.sleep(600)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    children = [subprocess.Popen([str(SERVE_PYTHON), "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                                 env=env, cwd=ROOT) for _ in range(2)]
    try:
        killed, running = (Path(child.stdout.readline().strip()) for child in children)
        children[0].kill()
        children[0].wait(30)
        assert killed.is_dir() and running.is_dir()
        assert remove_stale_workspaces(tmp_path) == [killed]
        assert not killed.exists() and not killed.with_name(killed.name + ".lock").exists()
        assert running.is_dir() and running.with_name(running.name + ".lock").exists()
        assert remove_stale_workspaces(tmp_path) == []
    finally:
        for child in children:
            child.kill()
            child.wait(30)


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
        ((1, 0, 0, 3), "UINT8", "image: empty images of shape (0, 0, 3)"),  # PyTriton cannot hold it: answered before
        ((2, 8, 0, 3), "UINT8", "image: empty images of shape (8, 0, 3)"),
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
    assert fragment.lower() in message.lower(), message
    assert "traceback" not in message.lower(), message
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


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def test_images_over_the_limit_fail_alone_and_the_servers_memory_stays_bounded(server, local, image_paths):
    good = image_paths[0].read_bytes()
    want = local(str(image_paths[0]))
    big = cv2.imencode(".png", np.full((1100, 2000, 3), 90, np.uint8))[1].tobytes()  # 2.2 MP, real
    items = [good, png_bomb(20000, 20000), good, jpeg_claiming(60000, 50000), big, good]
    peak_before = _vm_kib(server.process.pid, "VmHWM")
    start = time.monotonic()
    outcome = [r[0] for r in _run_clients([(server.http, [item]) for item in items])]
    took = time.monotonic() - start
    for i in (0, 2, 5):
        assert_same([outcome[i]], [want])
    limit = f"exceeds the server's limit of {MAX_MEGAPIXELS} megapixels"
    for i, size in ((1, "20000x20000"), (3, "60000x50000"), (4, "2000x1100")):
        assert isinstance(outcome[i], ServeRequestError), outcome[i]
        assert f"image 0: {size} {limit}" in str(outcome[i]) and "Traceback" not in str(outcome[i])
    grown_mib = (_vm_kib(server.process.pid, "VmHWM") - peak_before) / 1024
    print(f"6 requests in {took:.1f} s; the server's peak RSS grew {grown_mib:.0f} MiB")
    assert grown_mib < 200, f"decoding a refused image? peak RSS grew {grown_mib:.0f} MiB"


def _serve_command(model_path: Path, http: int, grpc: int, metrics: int) -> list[str]:
    return [str(SERVE_PYTHON), "-m", "ssd_edge.cli.serve", "--model", str(model_path), "--address", "127.0.0.1",
            "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", "1"]


def test_a_taken_port_ends_ssd_serve_at_once_and_the_running_server_is_left_alone(server, model_path, image_paths):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    http, grpc, metrics = (int(address.rsplit(":", 1)[1].split("/")[0]) for address in
                           (server.http, server.grpc, server.metrics))
    free_http, free_grpc, free_metrics = free_ports(3)
    with socket.socket() as holder:  # another program's port
        holder.bind(("127.0.0.1", free_grpc))
        holder.listen()
        for ports, label, port in (((http, grpc, metrics), "HTTP", http),
                                   ((free_http, free_grpc, free_metrics), "gRPC", free_grpc)):
            start = time.monotonic()
            second = subprocess.run(_serve_command(model_path, *ports), capture_output=True, text=True, env=env,
                                    cwd=ROOT, timeout=120)
            took = time.monotonic() - start
            print(f"{label} port taken: exit {second.returncode} in {took:.1f} s")
            assert second.returncode == 2, second.stderr[-3000:]
            assert f"ssd-serve: error: {label} port {port} on 127.0.0.1 is already in use" in second.stderr
            assert "Traceback" not in second.stderr + second.stdout, second.stderr[-3000:]
            assert took < 60  # Python, NumPy and OpenCV imports on a loaded machine; no Triton start
    for model in ("ssd", "ssd_raw"):  # nothing was unloaded from the running server
        assert _status(f"http://{server.http}/v2/models/{model}/ready") == 200
    with DetectionClient(server.http) as client:
        assert client(image_paths[0]).boxes.shape[1] == 4
    assert "successfully unloaded" not in server.log_tail(1_000_000)


def _start_watched(model_path: Path, log: Path, env: dict, image: Path) -> tuple[subprocess.Popen, str, dict]:
    """ssd-serve started here and watched from its first moment: at the first time
    /v2/health/ready answers 200, both models' readiness and a detection are taken at once."""
    http, grpc, metrics = free_ports(3)
    with open(log, "wb") as out:
        process = subprocess.Popen(_serve_command(model_path, http, grpc, metrics), stdout=out,
                                   stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    address = f"127.0.0.1:{http}"
    deadline = time.monotonic() + 240
    while _status(f"http://{address}/v2/health/ready") != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ssd-serve did not become ready (exit {process.poll()}): {log.read_text()[-3000:]}")
        time.sleep(0.05)
    seen = {model: _status(f"http://{address}/v2/models/{model}/ready") for model in ("ssd", "ssd_raw")}
    try:
        with DetectionClient(address, timeout_s=60) as client:
            seen["detect"] = len(client(image).boxes) >= 0
    except ServeRequestError as exc:
        seen["detect"] = str(exc)
    return process, address, seen


def test_ready_means_every_model_is_and_a_killed_servers_workspace_goes_at_the_next_start(model_path, image_paths,
                                                                                          tmp_path):
    """Two fresh servers (PyTriton's home in tmp_path): each says ready only once both models
    answer; the first, killed with SIGKILL, leaves its workspace, which the second removes."""
    if not SERVE_PYTHON.is_file():
        pytest.fail(f"{SERVE_PYTHON}: no ssd-serve environment; `make setup` creates it")
    home = Path(tempfile.mkdtemp(prefix="pyt", dir="/tmp"))  # short: PyTriton's Unix sockets live in it (108 bytes)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTRITON_HOME"] = str(home)

    def workspaces() -> list[str]:
        return sorted(p.name for p in home.iterdir() if p.is_dir()) if home.is_dir() else []

    first, _, seen = _start_watched(model_path, tmp_path / "first.log", env, image_paths[0])
    try:
        assert seen == {"ssd": 200, "ssd_raw": 200, "detect": True}, seen
        (left,) = workspaces()
        assert left.startswith(f"ssd-serve-{first.pid}-")
    finally:
        first.kill()
        first.wait(60)
    assert workspaces() == [left]  # what kill -9 leaves
    second, address, seen = _start_watched(model_path, tmp_path / "second.log", env, image_paths[0])
    try:
        assert seen == {"ssd": 200, "ssd_raw": 200, "detect": True}, seen
        (now,) = workspaces()
        assert now.startswith(f"ssd-serve-{second.pid}-") and f"removed {home / left}" in \
            (tmp_path / "second.log").read_text()
        deadline = time.monotonic() + 120
        while "serving " not in (tmp_path / "second.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)  # start() returns once PyTriton's side is connected too (a SIGTERM before: exit 130)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(60)
    assert workspaces() == [] and [p.name for p in home.iterdir()] == []
    home.rmdir()


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
