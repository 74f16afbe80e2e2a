"""Synthetic tracking sequences with known ground truth, detections made from it directly.

Objects move at constant velocity (plus a small random acceleration) in a W x H image. An
object is in the ground truth while its centre is inside the image and it is not fully
hidden; its detections are the true box with Gaussian corner noise, sometimes missed, with
a high score, or a low one in the frames where it is partly hidden. False positives come
at random places with low or mid scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ssd_edge.runtime.boxes import pairwise_iou
from ssd_edge.runtime.detections import Detections

CLASS_NAMES = ("background", "circle", "square", "triangle")


def make_detections(boxes, labels, scores, class_names=CLASS_NAMES) -> Detections:
    """A runtime Detections of these boxes (N, 4) xyxy, labels (N,) and scores (N,)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    scores = np.asarray(scores, np.float32).reshape(-1)
    confs = np.zeros((len(boxes), len(class_names)), np.float32)
    confs[np.arange(len(boxes)), labels.clip(0, len(class_names) - 1)] = scores
    return Detections(boxes, labels, scores, confs, tuple(class_names))


@dataclass
class MovingObject:
    """One object: label, first frame, box (cx, cy, w, h) there, velocity (px per frame),
    frames fully hidden (no detection, not in the ground truth) and frames partly hidden
    (detected with a low score)."""

    label: int
    first_frame: int
    box_cxcywh: tuple[float, float, float, float]
    velocity: tuple[float, float]
    last_frame: int = 10 ** 9
    hidden: frozenset[int] = field(default_factory=frozenset)
    low_score: frozenset[int] = field(default_factory=frozenset)


class Frame(NamedTuple):
    """Ground truth of one frame: ids (G,), boxes (G, 4) xyxy, labels (G,)."""

    ids: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass
class Sequence:
    truth: list[Frame]
    detections: list[Detections]


def simulate(objects: list[MovingObject], num_frames: int, size=(640, 480), seed: int = 0,
             noise_px: float = 1.5, miss_rate: float = 0.0, false_positives: float = 0.0,
             accel_px: float = 0.0, nms_iou: float | None = None) -> Sequence:
    """The ground truth and detections of `num_frames` frames. nms_iou: drop the lower-scored
    of two same-class detections overlapping more than this, as the detector's NMS would
    (a hidden object then has no detection at all)."""
    rng = np.random.default_rng(seed)
    width, height = size
    state = [[*o.box_cxcywh[:2], *o.velocity] for o in objects]
    truth, detections = [], []
    for frame in range(num_frames):
        ids, boxes, labels, det_boxes, det_labels, det_scores = [], [], [], [], [], []
        for oid, (obj, s) in enumerate(zip(objects, state)):
            if frame < obj.first_frame or frame > obj.last_frame:
                continue
            if frame > obj.first_frame:
                s[2:] = [v + rng.normal(0, accel_px) for v in s[2:]]
                s[0] += s[2]
                s[1] += s[3]
            cx, cy = s[0], s[1]
            w, h = obj.box_cxcywh[2:]
            if not (0 <= cx < width and 0 <= cy < height) or frame in obj.hidden:
                continue
            box = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, [width, height, width, height])
            ids.append(oid + 1)
            boxes.append(box)
            labels.append(obj.label)
            if rng.random() < miss_rate:
                continue
            noisy = box + rng.normal(0, noise_px, 4)
            noisy[2:] = np.maximum(noisy[2:], noisy[:2] + 1)
            det_boxes.append(noisy)
            det_labels.append(obj.label)
            det_scores.append(rng.uniform(0.15, 0.45) if frame in obj.low_score else rng.uniform(0.6, 0.95))
        for _ in range(rng.poisson(false_positives)):
            w, h = rng.uniform(20, 80, 2)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            det_boxes.append([x, y, x + w, y + h])
            det_labels.append(int(rng.integers(1, len(CLASS_NAMES))))
            det_scores.append(rng.uniform(0.1, 0.55))
        truth.append(Frame(np.array(ids, np.int64), np.array(boxes, np.float64).reshape(-1, 4),
                           np.array(labels, np.int64)))
        order = rng.permutation(len(det_boxes))  # detectors give no stable order
        if nms_iou is not None:
            order = _nms(np.reshape(det_boxes, (-1, 4)), np.array(det_labels), np.array(det_scores), nms_iou, order)
        detections.append(make_detections(np.reshape(det_boxes, (-1, 4))[order], np.array(det_labels)[order],
                                          np.array(det_scores)[order]))
    return Sequence(truth, detections)


def _nms(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, iou: float, order: np.ndarray) -> np.ndarray:
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(labels[k] != labels[i] or pairwise_iou(boxes[[k]], boxes[[i]])[0, 0] <= iou for k in keep):
            keep.append(int(i))
    return np.array([i for i in order if i in keep], np.int64)


def random_objects(count: int, num_frames: int, size=(640, 480), seed: int = 0) -> list[MovingObject]:
    """`count` objects of random class, size and speed, entering at random frames and
    positions, some leaving through an edge, some briefly hidden or partly hidden."""
    rng = np.random.default_rng(seed)
    width, height = size
    objects = []
    for _ in range(count):
        w, h = rng.uniform(24, 90), rng.uniform(24, 90)
        first = int(rng.integers(0, num_frames // 2))
        speed = rng.uniform(0.5, 4.0)
        angle = rng.uniform(0, 2 * np.pi)
        start = int(rng.integers(first + 5, first + 60))
        hidden = frozenset(range(start, start + int(rng.integers(0, 6)))) if rng.random() < 0.3 else frozenset()
        start = int(rng.integers(first + 5, first + 60))
        low = frozenset(range(start, start + int(rng.integers(0, 10)))) if rng.random() < 0.3 else frozenset()
        objects.append(MovingObject(int(rng.integers(1, len(CLASS_NAMES))), first,
                                    (rng.uniform(w, width - w), rng.uniform(h, height - h), w, h),
                                    (speed * np.cos(angle), speed * np.sin(angle)),
                                    last_frame=first + int(rng.integers(40, 200)), hidden=hidden, low_score=low))
    return objects
