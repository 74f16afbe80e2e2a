"""ssd-demo end to end, headless, on generated videos and a simulated live camera.

The model is a randomly initialised mobilenetv3_small_ssd (160x160) with calibrated
BatchNorm statistics; it is untrained, so the tests pass a low score threshold
(SCORE_THRESHOLD) for detections to exist. What they check is the demo, not the model.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from ssd_edge.cli.demo import main
from ssd_edge.runtime import Detector
from ssd_edge.runtime.demo.capture import FrameGrabber, RetryPolicy
from ssd_edge.runtime.demo.loop import DemoOptions, record_demo
from tests.helpers.demo import CLASSES, CLIP_FRAMES, CameraSite, count_frames, write_video
from tests.helpers.tracking_video import ShapeDetector

SCORE_THRESHOLD = "0.3"
RUN_WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
    "from ssd_edge.cli.demo import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", CLIP_FRAMES)


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def leftovers(directory):
    return [p.name for p in directory.iterdir() if ".partial" in p.name or ".recording" in p.name]


def wait_for_logged_frames(directory, deadline, lines=5):
    """Wait until the demo's log, still a .recording file, holds a few frames."""
    while time.monotonic() < deadline:
        partial_logs = [p for p in directory.iterdir() if p.name.endswith(".recording.jsonl")]
        if partial_logs and partial_logs[0].read_text().count("\n") >= lines:
            return
        time.sleep(0.1)
    raise AssertionError("the demo logged no frames in time")


def test_headless_file_run_without_torch_counts_every_frame(model_path, clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, "--model", model_path, "--source", str(clip), "--headless",
         "--output", str(out), "--score-threshold", SCORE_THRESHOLD],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"source {clip}: '{clip}' via cv2.CAP_FFMPEG" in result.stdout  # the chosen source is printed
    assert "stopped: end of file." in result.stdout
    assert count_frames(out) == CLIP_FRAMES
    log = read_log(out.with_suffix(".jsonl"))
    assert [r["frame"] for r in log] == list(range(CLIP_FRAMES))
    assert [r["source_frame"] for r in log] == list(range(CLIP_FRAMES))
    detections = [d for r in log for d in r["detections"]]
    assert detections, "the demo should report detections at this threshold"
    assert all(d["name"] in CLASSES[1:] and d["score"] >= float(SCORE_THRESHOLD) and len(d["box"]) == 4
               for d in detections)
    assert all(r["inference_ms"] > 0 for r in log)
    assert leftovers(tmp_path) == []


def test_loop_and_max_frames(model_path, clip, tmp_path, capsys):
    out = tmp_path / "looped.avi"
    main(["--model", model_path, "--source", str(clip), "--headless", "--output", str(out), "--loop",
          "--max-frames", "50", "--score-threshold", SCORE_THRESHOLD])
    assert "stopped: 50 frames processed (--max-frames)" in capsys.readouterr().out
    assert count_frames(out) == 50
    assert [r["source_frame"] for r in read_log(out.with_suffix(".jsonl"))] == list(range(50))


def test_truncated_file_ends_normally_with_a_finalised_video(model_path, tmp_path, capsys):
    whole = write_video(tmp_path / "whole.avi", CLIP_FRAMES)
    truncated = tmp_path / "truncated.avi"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    readable = count_frames(truncated)
    out = tmp_path / "out.mp4"
    main(["--model", model_path, "--source", str(truncated), "--headless", "--output", str(out),
          "--score-threshold", SCORE_THRESHOLD])
    printed = capsys.readouterr().out
    assert "stopped: end of file after" in printed and "may be truncated" in printed
    assert 0 < readable < CLIP_FRAMES
    assert count_frames(out) == readable == len(read_log(out.with_suffix(".jsonl")))


def test_a_source_that_fails_to_open_exits_with_what_was_tried(model_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["--model", model_path, "--source", "/dev/video99", "--headless", "--output", str(tmp_path / "out.mp4")])
    assert excinfo.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ssd-demo: error: cannot open source '/dev/video99'. "
                            "Tried: '/dev/video99' via cv2.CAP_V4L2")
    assert len(error.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the display check reads DISPLAY, which only Linux uses")
def test_window_mode_without_a_display_says_to_use_headless(model_path, clip, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit) as excinfo:
        main(["--model", model_path, "--source", str(clip), "--output", str(tmp_path / "out.mp4")])
    assert excinfo.value.code == 2
    error = capsys.readouterr().err
    assert "there is no display" in error and "--headless" in error
    assert list(tmp_path.iterdir()) == []


def test_live_source_lost_mid_run_retries_then_finalises(model_path, tmp_path):
    # a camera that delivers 20 frames, drops out, is back for 10 frames, then is gone for good
    site = CameraSite([20, None, 10], fps=100.0)
    events = []
    retry = RetryPolicy(attempts=3, first_delay_s=0.02, max_delay_s=0.1)
    out = tmp_path / "live.mp4"
    settings = DemoOptions(model=model_path, source="simulated", headless=True, output=str(out))
    with Detector(model_path, score_threshold=float(SCORE_THRESHOLD)) as detector:
        grabber = FrameGrabber(site.open, live=True, retry=retry, notify=events.append)
        summary = record_demo(detector, grabber, settings, fps=25, status=events.append)
    assert summary.capture.source_lost
    assert summary.end_reason == "source lost: no frames after 3 reconnection attempts"
    assert summary.capture.reconnects == 1
    assert summary.capture.frames_read == 30
    assert summary.frames + summary.capture.frames_dropped == 30
    assert summary.video == out and summary.log == out.with_suffix(".jsonl")
    assert count_frames(out) == summary.frames == len(read_log(summary.log))
    announced = [line.split()[2] for line in events if line.startswith("reconnection attempt") and " in " in line]
    assert announced == ["1/3", "2/3", "1/3", "2/3", "3/3"]  # the count starts again once frames came back
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_finalise_the_outputs(model_path, clip, tmp_path, signum):
    out = tmp_path / "interrupted.mp4"
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, "--model", model_path, "--source", str(clip), "--headless",
         "--output", str(out), "--loop"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_logged_frames(tmp_path, deadline=time.monotonic() + 60)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    reason = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "interrupted (SIGTERM)"  # the signal named
    assert f"stopped: {reason}." in stdout
    frames = count_frames(out)
    assert frames > 0 and frames == len(read_log(out.with_suffix(".jsonl")))
    assert leftovers(tmp_path) == []


TRACKED_FRAMES = 36  # the clip's square jumps back to the left edge at frame 37


def test_track_keeps_ids_and_counts_crossings_on_a_clip_of_moving_shapes(tmp_path):
    # The square moves right at 3 px a frame, the circle left at 1.5: both cross x = 100,
    # the square at about frame 25, the circle at about frame 20. The line is drawn upwards,
    # so its left side is the image's left.
    import cv2

    clip = write_video(tmp_path / "shapes.avi", TRACKED_FRAMES)
    out = tmp_path / "tracked.mp4"
    settings = DemoOptions(model="unused", source=str(clip), headless=True, output=str(out), track=True,
                            count_line=((100.0, 120.0), (100.0, 0.0)))
    grabber = FrameGrabber(lambda: cv2.VideoCapture(str(clip)), live=False)
    summary = record_demo(ShapeDetector(), grabber, settings, fps=20)
    log = read_log(summary.log)
    assert count_frames(out) == len(log) == TRACKED_FRAMES
    # the first frame's detections start confirmed tracks at once (as ByteTrack's first frame does)
    assert sorted(t["name"] for t in log[0]["tracks"]) == ["circle", "square"]
    ids = {"square": set(), "circle": set()}
    for record in log[1:]:
        assert sorted(t["name"] for t in record["tracks"]) == ["circle", "square"]
        for track in record["tracks"]:
            ids[track["name"]].add(track["id"])
            detection = record["detections"][track["detection"]]
            assert detection["name"] == track["name"] and track["age"] == record["source_frame"]
            assert max(abs(a - b) for a, b in zip(track["box"], detection["box"])) < 3.0
        assert record["tracking_ms"] >= 0
    assert ids == {"square": {1}, "circle": {2}} or ids == {"square": {2}, "circle": {1}}
    crossings = [(r["source_frame"], c["name"], c["direction"]) for r in log for c in r["crossings"]]
    assert [(name, direction) for _, name, direction in crossings] == [("circle", "right_to_left"),
                                                                     ("square", "left_to_right")]
    # counted once the box has cleared the dead band round the line, max(2 px, 0.1 x its ~41 px
    # height) = 4.1 px: about 3 frames after the geometric crossing for the circle (1.5 px a
    # frame), 2 for the square (3 px a frame)
    assert 21 <= crossings[0][0] <= 26 and 25 <= crossings[1][0] <= 30
    assert log[-1]["counts"] == {"square": {"left_to_right": 1, "right_to_left": 0},
                                 "circle": {"left_to_right": 0, "right_to_left": 1}}


def test_track_and_count_line_from_the_command_line_with_a_model(model_path, clip, tmp_path, capsys):
    out = tmp_path / "tracked.mp4"
    main(["--model", model_path, "--source", str(clip), "--headless", "--output", str(out),
          "--score-threshold", SCORE_THRESHOLD, "--count-line", "0,60,160,60", "--max-frames", "20"])
    assert "stopped: 20 frames processed (--max-frames)" in capsys.readouterr().out
    log = read_log(out.with_suffix(".jsonl"))
    assert count_frames(out) == len(log) == 20
    assert all({"tracks", "tracking_ms", "crossings", "counts"} <= set(r) for r in log)  # --count-line implies --track
    for record in log:
        track_ids = [t["id"] for t in record["tracks"]]
        assert len(set(track_ids)) == len(track_ids)
        assert all(record["detections"][t["detection"]]["label"] == t["label"] for t in record["tracks"])
    assert any(r["tracks"] for r in log), "an untrained model's boxes at this threshold still form some tracks"


@pytest.mark.parametrize("line, message", [
    ("0,60,160", "argument --count-line: a counting line is 'x1,y1,x2,y2' in pixels, got '0,60,160'"),
    ("5,5,5,5", "argument --count-line: a counting line needs two different ends, got 5,5,5,5 (zero length)"),
])
def test_bad_count_line_is_one_line_and_writes_nothing(model_path, clip, tmp_path, capsys, line, message):
    with pytest.raises(SystemExit) as excinfo:
        main(["--model", model_path, "--source", str(clip), "--headless", "--output", str(tmp_path / "out.mp4"),
              "--count-line", line])
    assert excinfo.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1]
    assert list(tmp_path.iterdir()) == []
