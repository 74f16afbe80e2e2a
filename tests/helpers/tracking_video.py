"""A stand-in detector for the demo's generated clip (tests/helpers/demo.py, moving_shapes): it finds
the orange square and the blue circle by colour, so the tracking tests through the demo
get the true objects every frame, as a trained model would, and not an untrained model's
noise."""

from __future__ import annotations

import numpy as np

from ssd_edge.runtime.detections import Detections

CLASSES = ("__background__", "square", "circle")


class ShapeDetector:
    """image_bgr (H, W, 3) uint8 -> Detections: one box (xyxy pixels) per shape found,
    label 1 (square) or 2 (circle), score 0.9. Same call and class_names as a Detector."""

    class_names = CLASSES

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        blue, red = image_bgr[..., 0].astype(np.int16), image_bgr[..., 2].astype(np.int16)
        # The background's red channel is 60 everywhere; the square's is 255, the circle's 0.
        masks = {1: (red > 180) & (blue < 100), 2: (red < 25) & (blue > 180)}
        boxes, labels = [], []
        for label, mask in masks.items():
            ys, xs = np.nonzero(mask)
            if len(xs) >= 50:  # not a few stray pixels of compression noise
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                labels.append(label)
        count = len(boxes)
        confs = np.zeros((count, len(CLASSES)), np.float32)
        confs[np.arange(count), labels] = 0.9
        return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                          np.full(count, 0.9, np.float32), confs, CLASSES)
