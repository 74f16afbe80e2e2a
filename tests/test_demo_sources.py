"""Source parsing, the Jetson CSI pipeline, the GStreamer check, and sources that fail to open."""

import sys

import cv2
import pytest

from ssd_edge.runtime.demo.gstreamer import GStreamerUnavailable, csi_pipeline, gstreamer_available, require_gstreamer
from ssd_edge.runtime.demo.sources import CameraError, open_capture, parse_source
from tests.helpers.demo import write_video

BUILD_INFO_WITHOUT = "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   NO\n"
BUILD_INFO_WITH = "  Video I/O:\n    FFMPEG:                      NO\n    GStreamer:                   YES (1.20.3)\n"


def test_csi_pipeline_string():
    assert csi_pipeline(1, 1920, 1080, 30) == (
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )
    with pytest.raises(ValueError, match="width"):
        csi_pipeline(0, 0, 720, 30)


def test_csi_source_uses_the_pipeline_through_gstreamer():
    source = parse_source("csi://0", width=640, height=480, fps=60)
    (attempt,) = source.attempts
    assert attempt.api == cv2.CAP_GSTREAMER
    assert attempt.target == csi_pipeline(0, 640, 480, 60)
    assert source.live and source.needs_gstreamer
    assert parse_source("csi://2").attempts[0].target == csi_pipeline(2, 1280, 720, 30)
    with pytest.raises(ValueError, match="csi://N"):
        parse_source("csi://front")


def test_gstreamer_check_reads_the_build_information():
    assert not gstreamer_available(BUILD_INFO_WITHOUT)
    assert gstreamer_available(BUILD_INFO_WITH)
    assert gstreamer_available(cv2.getBuildInformation()) in (True, False)
    require_gstreamer("csi://0", BUILD_INFO_WITH)  # no error
    with pytest.raises(GStreamerUnavailable) as excinfo:
        require_gstreamer("source 'csi://0'", BUILD_INFO_WITHOUT)
    message = str(excinfo.value)
    for needed in ("built without", "pip's opencv-python", "sudo apt install python3-opencv",
                   "--system-site-packages", "pip uninstall opencv-python"):
        assert needed in message


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer: csi:// would really be tried")
def test_csi_source_without_gstreamer_says_so_before_trying():
    with pytest.raises(GStreamerUnavailable, match="JetPack"):
        open_capture(parse_source("csi://0"))


@pytest.mark.parametrize(
    ("text", "kind", "apis"),
    [
        ("0", "camera", ["CAP_V4L2", "CAP_ANY"] if sys.platform.startswith("linux") else ["CAP_ANY"]),
        ("/dev/video3", "camera", ["CAP_V4L2", "CAP_V4L2"]),
        ("rtsp://cam.local:554/stream", "stream", ["CAP_FFMPEG", "CAP_ANY"]),
        ("gst:videotestsrc ! appsink", "pipeline", ["CAP_GSTREAMER"]),
    ],
)
def test_parse_source_kinds(text, kind, apis):
    source = parse_source(text)
    assert source.kind == kind and source.live
    assert [a.api_name for a in source.attempts] == apis


def test_parse_file_source(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3)
    source = parse_source(str(video))
    assert source.kind == "file" and not source.live
    with pytest.raises(CameraError, match="does not exist.*csi://0"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="unknown scheme 'ftp://'"):
        parse_source("ftp://host/clip.mp4")
    with pytest.raises(ValueError, match="both width and height"):
        parse_source("0", width=640)


def test_camera_asks_for_size_and_rate(tmp_path):
    source = parse_source("0", width=640, height=480, fps=15)
    assert source.size == (640, 480) and source.fps == 15


@pytest.mark.parametrize(
    ("text", "tried"),
    [
        ("/dev/video99", ["'/dev/video99' via cv2.CAP_V4L2: did not open", "99 via cv2.CAP_V4L2: did not open"]),
        ("rtsp://127.0.0.1:9/none", ["'rtsp://127.0.0.1:9/none' via cv2.CAP_FFMPEG", "via cv2.CAP_ANY"]),
    ],
)
def test_a_source_that_fails_to_open_lists_what_was_tried(text, tried):
    with pytest.raises(CameraError) as excinfo:
        open_capture(parse_source(text))
    message = str(excinfo.value)
    assert message.startswith(f"cannot open source '{text}'. Tried: ")
    for attempt in tried:
        assert attempt in message


def test_a_damaged_file_fails_to_open_with_the_attempts(tmp_path):
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(CameraError, match="via cv2.CAP_FFMPEG: did not open.*codec"):
        open_capture(parse_source(str(damaged)))


def test_image_sequence_source(tmp_path):
    import numpy as np

    for i in range(1, 4):
        cv2.imwrite(str(tmp_path / f"img_{i:03d}.png"), np.full((30, 40, 3), 40 * i, np.uint8))
    source = parse_source(str(tmp_path / "img_%03d.png"))
    assert source.kind == "sequence" and not source.live
    assert source.input_files() == [tmp_path / f"img_{i:03d}.png" for i in range(1, 4)]
    capture, attempt = open_capture(source)
    read = 0
    while capture.read()[0]:
        read += 1
    capture.release()
    assert read == 3 and attempt.api_name == "CAP_IMAGES"
    with pytest.raises(CameraError, match="no image of this sequence exists"):
        parse_source(str(tmp_path / "none_%03d.png"))
