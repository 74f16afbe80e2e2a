"""Video material for the demo tests: generated video files, a simulated live camera, and the
demo tests' model (conftest's `model_path` fixture).

The simulated camera stands in for the device only (a cv2.VideoCapture that a driver
feeds); the capture thread, its reconnection and backoff, and the demo that reads from it
are the real code."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ssd_edge.runtime.demo.sources import CameraError

FRAME_SIZE = (160, 120)  # (width, height)
CLASSES = ("__background__", "square", "circle")  # the demo model's classes: what moving_shapes draws
CLIP_FRAMES = 40  # frames of the demo tests' generated clip


def moving_shapes(index: int, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Frame `index` of a clip of a square and a circle crossing a textured background."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 60)], axis=-1).astype(np.uint8)
    shift = (3 * index) % max(width - 50, 1)
    cv2.rectangle(image, (5 + shift, 20), (45 + shift, 60), (0, 200, 255), -1)
    cv2.circle(image, (width - 30 - shift // 2, height - 35), 22, (255, 60, 0), -1)
    return image


def export_demo_model(path: Path) -> Path:
    """An untrained mobilenetv3_small_ssd (160x160, CLASSES) whose BatchNorm statistics come
    from every 4th frame of the generated clip, exported to ONNX at `path`. Needs torch
    (imported here, so that the torch-free tests can import this module)."""
    import torch

    from ssd_edge.export.to_onnx import export_onnx
    from ssd_edge.models import build_model
    from ssd_edge.models.calibration import calibrate_batchnorm
    from ssd_edge.runtime.preprocess import preprocess

    torch.manual_seed(0)
    model = build_model("mobilenetv3_small_ssd", CLASSES, imgsz=160)
    images = [moving_shapes(i) for i in range(0, CLIP_FRAMES, 4)]
    calibrate_batchnorm(model, torch.from_numpy(preprocess(images, model.spec.input_size)))
    return export_onnx(model, path, simplified=False)


def write_video(path: Path, frames: int, fps: float = 20.0, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """A clip of `frames` moving-shape frames; the codec follows the suffix (.mp4 mp4v, .avi MJPG)."""
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for i in range(frames):
        writer.write(moving_shapes(i, size))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    """Frames decodable from a video file, counted by reading them all."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


class SimulatedCamera:
    """A live camera that delivers `frames` frames at `fps`, then nothing (read() fails),
    as a camera does when its cable is pulled. Same read()/release() as cv2.VideoCapture."""

    def __init__(self, frames: int, fps: float = 200.0, first_index: int = 0) -> None:
        self.remaining = frames
        self.period = 1.0 / fps
        self.index = first_index
        self.released = threading.Event()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.remaining <= 0 or self.released.is_set():
            return False, None
        time.sleep(self.period)
        self.remaining -= 1
        self.index += 1
        return True, moving_shapes(self.index)

    def release(self) -> None:
        self.released.set()


class CameraSite:
    """Opens cameras in a scripted order: an int delivers that many frames then drops out,
    None means the camera cannot be opened at that attempt (CameraError, as open_capture
    raises). Records when each open was attempted."""

    def __init__(self, script: list[int | None], fps: float = 200.0) -> None:
        self.script = list(script)
        self.fps = fps
        self.open_times: list[float] = []
        self.cameras: list[SimulatedCamera] = []

    def open(self) -> SimulatedCamera:
        self.open_times.append(time.monotonic())
        step = self.script.pop(0) if self.script else None
        if step is None:
            raise CameraError("cannot open source 'simulated': did not open")
        camera = SimulatedCamera(step, self.fps, first_index=1000 * len(self.open_times))
        self.cameras.append(camera)
        return camera
