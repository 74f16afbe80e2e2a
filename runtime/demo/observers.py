"""What the demo loop hands to whoever watches it: the web viewer (`--web`) and the event
publisher (`--mqtt`) see each processed frame through this one interface.

An observer must never slow the loop: `on_frame` is called on the loop's thread after every
frame and must return at once (hand the frame to a bounded queue of its own and drop what a
slow consumer cannot take); `close()` is called once when the demo ends.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class DemoObserver(Protocol):
    def on_frame(self, source: int, annotated_bgr: np.ndarray, record: dict[str, Any]) -> None:
        """One processed frame of source number `source` (0 for the first --source):
        `annotated_bgr` is the picture the demo draws (H, W, 3) uint8 — do not modify it,
        copy or encode it; `record` is the JSON-ready line the demo logs for this frame
        (frame, time, latency_ms, inference_fps, detections, and with tracking: tracks,
        crossings, counts)."""
        ...

    def close(self) -> None:
        """The demo is ending: stop threads, release sockets (idempotent)."""
        ...
