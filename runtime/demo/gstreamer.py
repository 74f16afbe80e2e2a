"""GStreamer pipelines for OpenCV: the Jetson CSI camera pipeline, and the check that the
OpenCV in use can run a GStreamer pipeline at all (pip's opencv-python wheels cannot)."""

from __future__ import annotations

import re

import cv2

from ssd_edge.common.errors import SSDEdgeError, UsageError

JETSON_OPENCV_HELP = (
    "On a Jetson use JetPack's system OpenCV, which is built with GStreamer: "
    "`sudo apt install python3-opencv`, make the virtual environment with "
    "`python3 -m venv --system-site-packages VENV`, and keep pip's opencv-python out of it "
    "(`pip uninstall opencv-python opencv-python-headless opencv-contrib-python`), "
    "so that `import cv2` finds the system OpenCV"
)


class GStreamerUnavailable(SSDEdgeError, RuntimeError):
    """The OpenCV in use was built without GStreamer, so it cannot open a pipeline."""


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The GStreamer pipeline that reads Jetson CSI camera `sensor_id` through nvarguscamerasrc
    and hands BGR frames to OpenCV's appsink (keeping only the newest frame)."""
    if sensor_id < 0:
        raise UsageError(f"csi camera sensor id must be 0 or more, got {sensor_id}")
    for name, value in (("width", width), ("height", height), ("fps", fps)):
        if value < 1:
            raise UsageError(f"csi camera {name} must be a positive integer, got {value}")
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=1 max-buffers=1"
    )


def gstreamer_available(build_information: str | None = None) -> bool:
    """Whether OpenCV was built with GStreamer, read from `cv2.getBuildInformation()`
    (the "Video I/O" section has a line `GStreamer: YES (version)` or `GStreamer: NO`)."""
    info = cv2.getBuildInformation() if build_information is None else build_information
    match = re.search(r"^\s*GStreamer:\s*(\S+)", info, flags=re.MULTILINE)
    return bool(match) and match.group(1).upper() == "YES"


def require_gstreamer(what: str, build_information: str | None = None) -> None:
    """Raise GStreamerUnavailable, saying why and what to do, unless OpenCV has GStreamer."""
    if gstreamer_available(build_information):
        return
    raise GStreamerUnavailable(
        f"{what} needs OpenCV built with GStreamer, but the OpenCV in use "
        f"({cv2.__version__} from {getattr(cv2, '__file__', '?')}) was built without it "
        "(cv2.getBuildInformation() does not say 'GStreamer: YES'); pip's opencv-python wheels "
        f"never include GStreamer. {JETSON_OPENCV_HELP}."
    )
