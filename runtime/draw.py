"""Detections drawn on an image: boxes, class names and scores, and a status line (the live
demo's frame rates). Colours are fixed per class so a class looks the same in every frame."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ssd_edge.runtime.detections import Detections


def class_colour(label: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour for a class index."""
    hue = (int(label) * 47) % 180
    pixel = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _label_text(label: int, score: float, class_names: Sequence[str]) -> str:
    name = class_names[label] if 0 <= label < len(class_names) else str(label)
    return f"{name} {score:.2f}"


def draw_detections(
    image_bgr: np.ndarray,
    detections: Detections,
    class_names: Sequence[str] = (),
    status: str | None = None,
) -> np.ndarray:
    """A copy of image_bgr (H, W, 3) uint8 with every detection's box (xyxy pixels) and
    "name score" label drawn, and `status` (e.g. frame rates) in the top-left corner.
    class_names: all names, background first (default: the detections' own)."""
    canvas = np.ascontiguousarray(image_bgr).copy()
    names = tuple(class_names) or tuple(detections.class_names)
    height, width = canvas.shape[:2]
    scale = max(0.5, min(height, width) / 600.0)
    thickness = max(1, int(round(2 * scale)))
    for box, label, score in zip(detections.boxes, detections.labels.tolist(), detections.scores.tolist()):
        x1, y1, x2, y2 = (int(round(v)) for v in np.nan_to_num(box))
        colour = class_colour(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        text = _label_text(label, score, names)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, 1)
        top = y1 - text_h - baseline - 2 if y1 - text_h - baseline - 2 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + text_w + 2, top + text_h + baseline + 2), colour, cv2.FILLED)
        cv2.putText(canvas, text, (x1 + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    if status:
        draw_status(canvas, status)
    return canvas


def draw_status(image: np.ndarray, text: str) -> None:
    """Write `text` in green on a dark band into the top-left corner of image (in place)."""
    scale = max(0.4, min(image.shape[:2]) / 800.0)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale
    (width, height), baseline = cv2.getTextSize(text, font, size, 1)
    cv2.rectangle(image, (0, 0), (width + 12, height + baseline + 10), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (6, height + 5), font, size, (0, 255, 0), 1, cv2.LINE_AA)
