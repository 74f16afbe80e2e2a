"""The demo loop's observers (runtime/demo/observers.py): every processed frame is handed
over with its source number and the record the log gets; observers are closed once the
demo ends, whatever ends it."""

import json

import cv2
import pytest

from ssd_edge.runtime.demo.capture import FrameGrabber
from ssd_edge.runtime.demo.loop import DemoOptions, record_demo
from tests.helpers.demo import write_video
from tests.helpers.tracking_video import ShapeDetector


class Recorder:
    """An observer that keeps what it is given (copies, as the contract asks)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, tuple[int, ...], dict]] = []
        self.closed = 0

    def on_frame(self, source, annotated_bgr, record):
        self.frames.append((source, annotated_bgr.shape, json.loads(json.dumps(record))))

    def close(self):
        self.closed += 1


def test_observers_get_every_frame_and_the_logged_record(tmp_path):
    clip = write_video(tmp_path / "shapes.avi", 12)
    settings = DemoOptions(model="unused", source=str(clip), headless=True, output=str(tmp_path / "out.mp4"),
                            count_line=((100.0, 120.0), (100.0, 0.0)))
    observers = [Recorder(), Recorder()]
    summary = record_demo(ShapeDetector(), FrameGrabber(lambda: cv2.VideoCapture(str(clip)), live=False), settings,
                          fps=20, observers=observers)
    log = [json.loads(line) for line in summary.log.read_text().splitlines()]
    for observer in observers:
        assert observer.closed >= 1
        assert [source for source, _, _ in observer.frames] == [0] * 12
        assert [shape for _, shape, _ in observer.frames] == [(120, 160, 3)] * 12
        assert [record for _, _, record in observer.frames] == log
    assert "source" not in log[0]  # a single source's records are as before


class Failing:
    def __call__(self, image):
        raise RuntimeError("the model broke")


def test_observers_are_closed_when_the_loop_fails(tmp_path):
    clip = write_video(tmp_path / "shapes.avi", 5)
    settings = DemoOptions(model="unused", source=str(clip), headless=True, output=str(tmp_path / "out.mp4"))
    observer = Recorder()
    with pytest.raises(RuntimeError, match="the model broke"):
        record_demo(Failing(), FrameGrabber(lambda: cv2.VideoCapture(str(clip)), live=False), settings,
                    observers=[observer])
    assert observer.closed >= 1 and observer.frames == []
