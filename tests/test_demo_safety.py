"""ssd-demo never destroys the user's files and leaves a playable recording after kill -9;
its streams honour the stated timeouts (loopback servers only) and SIGTERM stops it fast.

The model is the randomly initialised one of test_demo.py (what is checked is the demo)."""

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ssd_edge.cli.demo import main
from ssd_edge.runtime.demo.sources import STREAM_TIMEOUT_MS, CameraError, OpenInterrupted, open_capture, parse_source
from tests.helpers.demo import count_frames, write_video
from tests.test_demo import RUN_WITHOUT_TORCH, SCORE_THRESHOLD

TIMEOUT_S = STREAM_TIMEOUT_MS / 1000.0


def run_demo_cli(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def clip(tmp_path):
    return write_video(tmp_path / "clip.mp4", 10)


@pytest.mark.parametrize("case", ["output-is-source", "output-is-source-via-link", "output-is-source-spelled-otherwise",
                                  "log-is-model", "log-is-source", "log-is-output", "default-log-is-model"])
def test_an_output_never_replaces_an_input_or_another_output(model_path, clip, tmp_path, capsys, case):
    model = tmp_path / "model.onnx"
    shutil.copy(model_path, model)
    (tmp_path / "link.mp4").symlink_to(clip)
    (tmp_path / "sub").mkdir()
    output, log = {
        "output-is-source": (clip, None),
        "output-is-source-via-link": (tmp_path / "link.mp4", None),
        "output-is-source-spelled-otherwise": (tmp_path / "sub" / ".." / "clip.mp4", None),
        "log-is-model": (tmp_path / "out.mp4", model),
        "log-is-source": (tmp_path / "out.mp4", clip),
        "log-is-output": (tmp_path / "out.mp4", tmp_path / "out.mp4"),
        "default-log-is-model": (tmp_path / "model.avi", None),  # the log beside it would be model.jsonl
    }[case]
    if case == "default-log-is-model":
        model = tmp_path / "model.jsonl"  # an odd name for a model, but the user's file
        shutil.copy(model_path, model)
    before = {p: p.read_bytes() for p in (clip, model)}
    argv = ["--model", str(model), "--source", str(clip), "--headless", "--output", str(output)]
    assert run_demo_cli(argv + (["--log", str(log)] if log else [])) == 2
    error = capsys.readouterr().err
    assert "is the same file as the" in error and "would be replaced" in error
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if ".recording" in p.name or ".partial" in p.name]


def test_kill_9_leaves_a_playable_recording_missing_only_the_last_frames(model_path, tmp_path):
    """A real ssd-demo, killed with SIGKILL mid-recording: the .recording.avi it leaves
    opens with OpenCV and plays every frame the log recorded but the last few."""
    clip = write_video(tmp_path / "long.mp4", 3000)
    out = tmp_path / "killed.mp4"
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, "--model", model_path, "--source", str(clip), "--headless",
         "--output", str(out), "--score-threshold", SCORE_THRESHOLD],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    log = tmp_path / "killed.recording.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and log.read_text().count("\n") >= 150):
            assert time.monotonic() < deadline and process.poll() is None, "the demo recorded too few frames"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    logged = log.read_text().count("\n")
    left = tmp_path / "killed.recording.avi"
    assert left.is_file() and not out.exists()
    playable = count_frames(left)
    lost = logged - playable
    print(f"kill -9 after {logged} logged frames: {playable} playable, {lost} lost")
    assert 0 <= lost <= 20, (logged, playable)


def silent_server(send: bytes = b""):
    """A loopback TCP server that accepts every connection and never answers, except
    that the first connection receives `send` first. Returns (port, close)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held, closing = [], threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not closing.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            held.append(connection)
            if send and len(held) == 1:
                try:
                    connection.sendall(send)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close():
        closing.set()
        thread.join(2)
        for connection in held:
            connection.close()
        listener.close()

    return listener.getsockname()[1], close


def test_a_stream_that_never_answers_fails_after_the_stated_timeout():
    port, close = silent_server()
    try:
        begin = time.monotonic()
        with pytest.raises(CameraError, match="cannot open source"):
            open_capture(parse_source(f"http://127.0.0.1:{port}/live.mjpg"))
        elapsed = time.monotonic() - begin
    finally:
        close()
    assert elapsed < TIMEOUT_S + 1.5, f"took {elapsed:.1f} s"


def test_a_stop_ends_a_source_that_is_opening_at_once():
    port, close = silent_server()
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    try:
        begin = time.monotonic()
        with pytest.raises(OpenInterrupted):
            open_capture(parse_source(f"http://127.0.0.1:{port}/live.mjpg"), stop)
        elapsed = time.monotonic() - begin
    finally:
        close()
    assert elapsed < 1.0, f"took {elapsed:.1f} s"


def test_sigterm_while_the_source_opens_stops_the_demo_within_two_seconds(model_path, tmp_path):
    port, close = silent_server()
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, "--model", model_path, "--source",
         f"http://127.0.0.1:{port}/live.mjpg", "--headless", "--output", str(tmp_path / "out.mp4")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.5)  # the interpreter starts and the open is under way
        assert process.poll() is None
        begin = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        elapsed = time.monotonic() - begin
    finally:
        process.kill()
        close()
    assert elapsed < 2.0, f"took {elapsed:.1f} s"
    assert process.returncode != 0 and not (tmp_path / "out.mp4").exists()


def test_a_stream_that_stalls_mid_run_is_declared_lost_after_the_timeouts(model_path, tmp_path, capsys):
    """An HTTP server that sends a Motion-JPEG AVI's first half, then nothing: the demo
    reads those frames, waits one read timeout, tries to reconnect once (the server now
    answers nothing: one open timeout), then ends with its outputs finalised."""
    video = write_video(tmp_path / "stream.avi", 200)
    data = video.read_bytes()
    header = (b"HTTP/1.0 200 OK\r\nContent-Type: video/x-msvideo\r\nContent-Length: %d\r\n\r\n" % len(data))
    port, close = silent_server(header + data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    try:
        begin = time.monotonic()
        code = run_demo_cli(["--model", model_path, "--source", f"http://127.0.0.1:{port}/stream.avi", "--headless",
                             "--output", str(out), "--retries", "1", "--retry-delay", "0.1"])
        elapsed = time.monotonic() - begin
    finally:
        close()
    output = capsys.readouterr().out
    assert code == 1 and "source lost" in output
    assert elapsed < 3 * TIMEOUT_S + 5, f"took {elapsed:.1f} s"
    assert count_frames(out) > 0


def test_a_missing_camera_is_reported_before_a_missing_display(model_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert run_demo_cli(["--model", model_path, "--source", "/dev/video99"]) == 2
    error = capsys.readouterr().err
    assert "cannot open source '/dev/video99'" in error and "display" not in error


def test_sigterm_while_a_stream_stalls_mid_run_stops_fast_with_outputs_finalised(model_path, tmp_path):
    video = write_video(tmp_path / "stream.avi", 200)
    data = video.read_bytes()
    header = b"HTTP/1.0 200 OK\r\nContent-Type: video/x-msvideo\r\nContent-Length: %d\r\n\r\n" % len(data)
    port, close = silent_server(header + data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, "--model", model_path, "--source",
         f"http://127.0.0.1:{port}/stream.avi", "--headless", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    log = tmp_path / "out.recording.jsonl"
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        time.sleep(1.0)  # the half clip arrives in a burst (a live source keeps the newest): it stalls now
        begin = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
        elapsed = time.monotonic() - begin
    finally:
        process.kill()
        close()
    assert elapsed < 2.0, f"took {elapsed:.1f} s"
    assert "stopped: interrupted" in stdout
    assert count_frames(out) == len((tmp_path / "out.jsonl").read_text().splitlines()) > 0
