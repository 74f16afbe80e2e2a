"""The demo's window: shows frames, and tells the loop when the user quits (q, Esc, or
closing the window)."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from ssd_edge.common.errors import SSDEdgeError

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc


class DisplayError(SSDEdgeError, RuntimeError):
    """No window can be opened here (no display, or an OpenCV built without a GUI)."""


def check_display() -> None:
    """Raise DisplayError when this machine has no display to open a window on."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayError(
            "cannot open a window: there is no display (neither DISPLAY nor WAYLAND_DISPLAY is set; "
            "over ssh use `ssh -X`, or run on the device's desktop); or run with --headless --output out.mp4"
        )


class Window:
    """One OpenCV window; `show` and `poll` return True once the user asked to quit."""

    def __init__(self, name: str = "ssd-demo") -> None:
        check_display()
        try:
            cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)
        except cv2.error as exc:
            raise DisplayError(
                f"cannot open a window: this OpenCV has no GUI support ({str(exc).strip().splitlines()[-1]}); "
                "install opencv-python instead of opencv-python-headless, or run with --headless --output out.mp4"
            ) from None
        self.name = name
        self._shown = False

    def show(self, image: np.ndarray, wait_ms: int = 1) -> bool:
        """Show `image`, then handle the window's events for `wait_ms` (at least 1)."""
        cv2.imshow(self.name, image)
        self._shown = True
        return self.poll(wait_ms)

    def poll(self, wait_ms: int = 1) -> bool:
        """Let the window handle its events; True when q/Esc was pressed or it was closed."""
        key = cv2.waitKey(max(1, int(wait_ms))) & 0xFF
        if key in QUIT_KEYS:
            return True
        return self._shown and cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)
        except cv2.error:
            pass  # already gone (closed by the user)

    def __enter__(self) -> "Window":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
