"""The demo's outputs: written beside their targets and renamed into place when closed."""

import json

import numpy as np
import pytest

from ssd_edge.runtime.demo.recording import JsonLinesLog, RecordingError, VideoRecorder
from tests.helpers.demo import count_frames, moving_shapes


def hidden_partials(directory):
    """Files of a recording in progress: hidden temporary files and visible .recording files."""
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name or ".recording" in p.name)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_appears_only_when_closed(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    recorder = VideoRecorder(target, fps=20)
    for i in range(7):
        recorder.write(moving_shapes(i))
    recorder.write(np.zeros((60, 80, 3), np.uint8))  # another size: resized to the first
    assert not target.exists() and recorder.recording_path.name == "out.recording.avi"
    assert len(hidden_partials(tmp_path)) == (1 if suffix == ".avi" else 2)
    assert recorder.close() == target
    assert recorder.close() == target  # closing twice is harmless
    assert count_frames(target) == 8
    assert hidden_partials(tmp_path) == []
    with pytest.raises(RecordingError, match="already closed"):
        recorder.write(moving_shapes(0))


def test_video_without_frames_leaves_nothing(tmp_path):
    with VideoRecorder(tmp_path / "out.mp4") as recorder:
        pass
    assert recorder.close() is None
    assert list(tmp_path.iterdir()) == []


def test_bad_outputs_are_refused_with_the_reason(tmp_path):
    with pytest.raises(RecordingError, match="out.gif: cannot tell the video format"):
        VideoRecorder(tmp_path / "out.gif")
    with pytest.raises(RecordingError, match="the directory .*missing does not exist"):
        VideoRecorder(tmp_path / "missing" / "out.mp4")


def test_json_lines_log(tmp_path):
    target = tmp_path / "out.jsonl"
    with JsonLinesLog(target) as log:
        log.write({"frame": 0, "detections": []})
        log.write({"frame": 1, "detections": [{"score": 0.5}]})
        assert not target.exists()
    lines = target.read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [0, 1]
    assert hidden_partials(tmp_path) == []
    empty = JsonLinesLog(tmp_path / "empty.jsonl")
    assert empty.close() is None and not (tmp_path / "empty.jsonl").exists()


def test_a_recording_cut_off_anywhere_plays_up_to_the_cut(tmp_path):
    """What a hard kill leaves: the .recording.avi, copied while the recorder still writes
    (as the disk holds it at that moment), opens and plays nearly every frame written."""
    recorder = VideoRecorder(tmp_path / "out.mp4", fps=20)
    for i in range(120):
        recorder.write(moving_shapes(i))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(recorder.recording_path.read_bytes())
    recorder.close()
    assert 100 <= count_frames(cut) <= 120
    assert count_frames(tmp_path / "out.mp4") == 120 and hidden_partials(tmp_path) == []


def test_recording_files_never_replace_an_existing_file(tmp_path):
    left_by_a_killed_run = tmp_path / "out.recording.avi"
    left_by_a_killed_run.write_bytes(b"the user's")
    (tmp_path / "out.recording.jsonl").write_text("the user's")
    with VideoRecorder(tmp_path / "out.mp4") as recorder, JsonLinesLog(tmp_path / "out.jsonl") as log:
        assert recorder.recording_path.name == "out.recording_1.avi"
        recorder.write(moving_shapes(0))
        log.write({"frame": 0})
    assert left_by_a_killed_run.read_bytes() == b"the user's"
    assert (tmp_path / "out.recording.jsonl").read_text() == "the user's"
    assert count_frames(tmp_path / "out.mp4") == 1 and (tmp_path / "out.jsonl").exists()


def test_a_killed_recordings_hidden_partial_is_removed_by_the_next(tmp_path):
    import os
    import time

    stale = tmp_path / ".out.mp4.abc123.partial.mp4"
    stale.write_bytes(b"an unfinalised mp4")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".out.mp4.def456.partial.mp4"  # another recorder's, still written to
    fresh.write_bytes(b"in progress")
    with VideoRecorder(tmp_path / "out.mp4") as recorder:
        recorder.write(moving_shapes(0))
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_segmented_recording_finalises_a_playable_file_per_segment_named_by_time(tmp_path, suffix):
    from ssd_edge.runtime.demo.recording import SegmentedRecorder

    clock = [1_700_000_000.0]
    target = tmp_path / f"camera{suffix}"
    recorder = SegmentedRecorder(target, fps=10, segment_s=60.0, clock=lambda: clock[0])
    frames = [moving_shapes(i) for i in range(25)]
    for i, frame in enumerate(frames):
        clock[0] = 1_700_000_000.0 + 6.0 * i  # 10 frames a minute: segments of 10, 10 and 5 frames
        recorder.write(frame)
        if i == 12:  # while the second segment is written, the first is already a finished file
            assert count_frames(recorder.segments[0]) == 10
    last = recorder.close()
    assert len(recorder.segments) == 3 and last == recorder.segments[-1]
    assert [count_frames(path) for path in recorder.segments] == [10, 10, 5]
    names = [path.name for path in recorder.segments]
    assert names == sorted(names) and all(name.startswith("camera.") and name.endswith(suffix) for name in names)
    assert not target.exists()  # the segments are the recording
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no partial or .recording file is left


def test_segment_minutes_is_checked_by_the_parser_and_the_options():
    from ssd_edge.cli.demo import build_parser
    from ssd_edge.common.errors import UsageError
    from ssd_edge.runtime.demo.loop import DemoOptions

    parser = build_parser()
    assert parser.parse_args(["--model", "m.onnx", "--segment-minutes", "30"]).segment_minutes == 30.0
    for bad in ("0", "-5", "inf", "nan", "ten"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--model", "m.onnx", "--segment-minutes", bad])
    with pytest.raises(UsageError, match="segment_minutes must be more than 0, got 0"):
        DemoOptions(model="m.onnx", source="0", segment_minutes=0)
