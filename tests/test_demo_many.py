"""ssd-demo with several sources: one Detector batch per tick, per-source tracking,
counting lines, videos and logs; a source that ends or is lost leaves the batch while the
others go on."""

import json

import cv2
import pytest

from ssd_edge.cli.demo import main
from ssd_edge.common.output_paths import OutputPathError
from ssd_edge.runtime import Detector
from ssd_edge.runtime.demo.capture import FrameGrabber, RetryPolicy
from ssd_edge.runtime.demo.loop import DemoOptions, Presence, grid, record_demo, run_demo
from tests.helpers.demo import CameraSite, count_frames, write_video
from tests.helpers.tracking_video import ShapeDetector

SCORE_THRESHOLD = "0.3"
LINE = ((100.0, 120.0), (100.0, 0.0))


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class BatchCounter(ShapeDetector):
    """ShapeDetector that also takes a list (as a Detector does) and records batch sizes."""

    batched = True

    def __init__(self):
        self.sizes = []

    def __call__(self, images):
        if isinstance(images, list):
            self.sizes.append(len(images))
            return [super(BatchCounter, self).__call__(image) for image in images]
        self.sizes.append(1)
        return super().__call__(images)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return write_video(folder / "long.avi", 36), write_video(folder / "short.avi", 12)


def file_grabber(path, **kwargs):
    return FrameGrabber(lambda: cv2.VideoCapture(str(path)), live=False, **kwargs)


def test_two_files_go_through_one_batch_with_their_own_tracking_lines_and_outputs(clips, tmp_path):
    long, short = clips
    out = tmp_path / "out.mp4"
    settings = DemoOptions(model="unused", source=[str(long), str(short)], headless=True, output=str(out),
                            count_line=LINE, count_lines={1: ((0.0, 60.0), (160.0, 60.0))})
    detector = BatchCounter()
    lines = []
    summary = record_demo(detector, [file_grabber(long), file_grabber(short)], settings, fps=[20, 20],
                          status=lines.append)
    assert [s.video for s in summary.sources] == [tmp_path / "out.src0.mp4", tmp_path / "out.src1.mp4"]
    assert [s.log for s in summary.sources] == [tmp_path / "out.src0.jsonl", tmp_path / "out.src1.jsonl"]
    assert not out.exists() and not out.with_suffix(".jsonl").exists()
    logs = [read_log(s.log) for s in summary.sources]
    assert [len(log) for log in logs] == [36, 12] == [count_frames(s.video) for s in summary.sources]
    assert [s.frames for s in summary.sources] == [36, 12] and summary.frames == 48
    for index, log in enumerate(logs):
        assert [r["source"] for r in log] == [index] * len(log)
        assert [r["frame"] for r in log] == list(range(len(log))) == [r["source_frame"] for r in log]
    # one Detector call per tick: both sources while both have frames, then the long one alone
    assert sum(detector.sizes) == 48 and detector.sizes.count(2) >= 10 and summary.batches == len(detector.sizes)
    # source 0 counts its crossings of x = 100 as the single-source demo does; source 1 has its own line
    crossings = [(c["name"], c["direction"]) for r in logs[0] for c in r["crossings"]]
    assert crossings == [("circle", "right_to_left"), ("square", "left_to_right")]
    assert all("counts" in r and r["crossings"] == [] for r in logs[1])  # y = 60 is not crossed by these shapes
    assert sorted(e["name"] for r in logs[0] for e in r["entered"]) == ["circle", "square"]
    assert summary.sources[1].end_reason == "end of file" and summary.sources[0].end_reason == "end of file"
    assert any(line.startswith("source 1 (") and "the other sources go on" in line for line in lines), lines
    assert "2 sources" in summary.describe()


def test_a_lost_live_source_does_not_stall_a_file(clips, tmp_path):
    long, _ = clips
    site = CameraSite([8, None, None], fps=100.0)  # 8 frames, then it never opens again
    retry = RetryPolicy(attempts=2, first_delay_s=0.02, max_delay_s=0.05)
    settings = DemoOptions(model="unused", source=[str(long), "simulated"], headless=True,
                            output=str(tmp_path / "mixed.mp4"))
    camera = FrameGrabber(site.open, live=True, retry=retry)
    summary = record_demo(ShapeDetector(), [file_grabber(long), camera], settings, fps=[20, 25])
    assert summary.capture.source_lost
    assert summary.sources[1].end_reason.startswith("source lost")
    assert summary.sources[0].frames == 36 == len(read_log(summary.sources[0].log))
    assert 0 < summary.sources[1].frames <= 8


def test_the_command_line_takes_several_sources_with_a_real_detector(model_path, clips, tmp_path, capsys):
    long, short = clips
    out = tmp_path / "cli.mp4"
    code = main(["--model", model_path, "--source", str(long), "--source", str(short), "--headless",
                 "--output", str(out), "--score-threshold", SCORE_THRESHOLD, "--count-line", "1:0,60,160,60",
                 "--max-frames", "10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "source 0 (" in printed and "source 1 (" in printed
    logs = [read_log(tmp_path / f"cli.src{i}.jsonl") for i in range(2)]
    assert [len(log) for log in logs] == [10, 10]
    assert "counts" in logs[1][0] and "counts" not in logs[0][0] and "tracks" in logs[0][0]  # a line implies tracking
    # the batched Detector finds what the Detector finds frame by frame
    with Detector(model_path, score_threshold=0.1) as detector:
        first = cv2.VideoCapture(str(long)).read()[1]
        alone = detector(first).to_records()
    batched = [d for d in logs[0][0]["detections"]]
    assert [d["name"] for d in batched] == [d["name"] for d in alone if d["score"] > float(SCORE_THRESHOLD)]


def test_per_source_outputs_never_replace_a_source(clips, tmp_path):
    long, short = clips
    victim = tmp_path / "run.src1.mp4"
    victim.write_bytes(short.read_bytes())
    settings = DemoOptions(model="unused", source=[str(long), str(victim)], headless=True,
                            output=str(tmp_path / "run.mp4"))
    with pytest.raises(OutputPathError, match="run.src1.mp4"):
        run_demo(settings)


@pytest.mark.parametrize("argv, message", [
    (["--count-line", "5:0,60,160,60"], "counting line for source 5: there are 2 sources"),
    (["--count-line", "0,1,2,3", "--count-line", "4,5,6,7"], "give one line for every source"),
    (["--count-line", "x:0,60,160,60"], "a counting line is '[N:]x1,y1,x2,y2'"),
])
def test_bad_per_source_count_lines(clips, tmp_path, capsys, argv, message):
    long, short = clips
    with pytest.raises(SystemExit) as excinfo:
        main(["--model", "unused.onnx", "--source", str(long), "--source", str(short), "--headless",
              "--output", str(tmp_path / "o.mp4"), *argv])
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_presence_follows_the_trackers_removal_rule():
    presence = Presence(max_misses=2)
    car = {"id": 4, "label": 1, "name": "car"}
    assert presence.update([car], 10) == ([car], [])
    assert presence.update([], 11) == ([], []) and presence.update([], 12) == ([], [])
    assert presence.update([], 13) == ([], [car])  # 13 - 10 > 2: removed
    assert presence.update([car], 14) == ([car], [])


def test_grid_tiles_the_sources():
    import numpy as np

    a, b = np.full((20, 30, 3), 50, np.uint8), np.full((40, 60, 3), 200, np.uint8)
    canvas = grid([a, b, None])
    assert canvas.shape == (40, 60, 3)
    assert (canvas[:20, :30] == 50).all() and (canvas[:20, 30:] == 200).all() and (canvas[20:] == 0).all()
