"""The built-in sample data: a synthetic COCO-layout dataset of real JPEG files.

Shapes (circle, square, triangle) of 5% to 60% of the image side, in varied colours,
rotated, overlapping, on textured backgrounds with clutter lines. Everything derives
from the seed, so the same command writes the same dataset.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ssd_edge.common.atomic import write_text_atomic

CLASSES = ("circle", "square", "triangle")
# Non-contiguous category ids, as real COCO files have, so the label mapping is exercised.
CATEGORY_IDS = (1, 3, 7)


@dataclass(frozen=True)
class SynthConfig:
    min_side: int = 240
    max_side: int = 480
    max_objects: int = 6
    min_scale: float = 0.05  # object size relative to the image's shorter side
    max_scale: float = 0.60
    max_overlap: float = 0.35  # IoU between objects
    jpeg_quality: int = 90


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.integers(4)
    base = rng.integers(0, 256, 3).astype(np.float32)
    if kind == 0:  # colour gradient
        other = rng.integers(0, 256, 3).astype(np.float32)
        t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        image = np.broadcast_to(base * (1 - t) + other * t, (height, width, 3)).copy()
    elif kind == 1:  # stripes
        period = rng.uniform(8, 40)
        angle = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)[..., None]
        image = base + wave * rng.uniform(20, 60)
    elif kind == 2:  # low-frequency coloured noise
        small = rng.uniform(0, 255, (max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    else:  # checkerboard
        cell = int(rng.integers(10, 50))
        yy, xx = np.mgrid[0:height, 0:width]
        board = (((yy // cell) + (xx // cell)) % 2)[..., None].astype(np.float32)
        image = base + board * rng.uniform(-70, 70, 3)
    image = image + rng.normal(0, rng.uniform(3, 15), (height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 6))):  # clutter lines
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(image, p1, p2, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return image


def _shape_points(kind: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray | None:
    """Polygon of a square or triangle of circumscribed diameter `size`; None for a circle."""
    if kind == "circle":
        return None
    corners = 4 if kind == "square" else 3
    radius = size / 2
    angles = angle + np.arange(corners) * 2 * math.pi / corners
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _acceptable_overlap(new: np.ndarray, old: np.ndarray, max_iou: float) -> bool:
    """New shapes are drawn over old ones: limit their IoU, and never hide most of an old one."""
    w = max(0.0, min(new[2], old[2]) - max(new[0], old[0]))
    h = max(0.0, min(new[3], old[3]) - max(new[1], old[1]))
    inter = w * h
    area_new = (new[2] - new[0]) * (new[3] - new[1])
    area_old = (old[2] - old[0]) * (old[3] - old[1])
    return inter <= max_iou * (area_new + area_old - inter) and inter <= 0.4 * area_old


def _colour(rng: np.random.Generator, background: np.ndarray, box: np.ndarray) -> tuple[int, int, int]:
    """A saturated random colour that differs from the background under the box."""
    x1, y1, x2, y2 = box.astype(int)
    under = background[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)].reshape(-1, 3).mean(axis=0)
    for _ in range(20):
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(90, 256)]]])
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        if np.abs(bgr - under).sum() > 120:
            break
    return tuple(int(c) for c in bgr)


def make_image(rng: np.random.Generator, config: SynthConfig) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image and its objects: (BGR uint8, [(class index, box xyxy pixels), ...])."""
    width = int(rng.integers(config.min_side, config.max_side + 1))
    height = int(rng.integers(config.min_side, config.max_side + 1))
    image = _background(rng, height, width)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, config.max_objects + 1))):
        for _attempt in range(30):
            kind = int(rng.integers(len(CLASSES)))
            size = rng.uniform(config.min_scale, config.max_scale) * min(height, width)
            cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
            points = _shape_points(CLASSES[kind], cx, cy, size, rng.uniform(0, 2 * math.pi))
            if points is None:
                box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
            else:
                box = np.concatenate([points.min(axis=0), points.max(axis=0)])
            box = np.clip(box, 0, [width, height, width, height])
            if all(_acceptable_overlap(box, other, config.max_overlap) for _, other in objects):
                break
        else:
            continue
        colour = _colour(rng, image, box)
        if points is None:
            cv2.circle(image, (int(round(cx * 16)), int(round(cy * 16))), int(round(size / 2 * 16)), colour, -1,
                       cv2.LINE_AA, 4)
        else:
            cv2.fillPoly(image, [np.round(points * 16).astype(np.int32)], colour, cv2.LINE_AA, 4)
        objects.append((kind, box))
    return image, objects


def _coco_split(
    out: Path, split: str, count: int, rng: np.random.Generator, config: SynthConfig
) -> Iterator[int]:
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = make_image(rng, config)
        name = f"{index:06d}.jpg"
        if not cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]):
            raise OSError(f"{folder / name}: could not write the image")
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        for kind, (x1, y1, x2, y2) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[kind],
                    "bbox": [round(float(x1), 2), round(float(y1), 2),
                             round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                    "area": round(float((x2 - x1) * (y2 - y1)), 2),
                    "iscrowd": 0,
                }
            )
        yield index
    categories = [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(CATEGORY_IDS, CLASSES)]
    (out / "annotations").mkdir(exist_ok=True)
    document = {"images": images, "annotations": annotations, "categories": categories}
    write_text_atomic(out / "annotations" / f"instances_{split}.json", json.dumps(document))



def sample_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` BGR images from the generator (shapes on textures), made in memory: real image
    statistics with nothing to download (export's parity and calibration default, ssd-bench)."""
    rng = np.random.default_rng(seed)
    return [make_image(rng, SynthConfig())[0] for _ in range(count)]

def write_synthetic_dataset(
    out: str | Path, train: int = 400, val: int = 100, seed: int = 0, config: SynthConfig = SynthConfig(),
    progress: bool = False,
) -> Path:
    """Write OUT/{train,val}/*.jpg and OUT/annotations/instances_{train,val}.json (COCO layout)."""
    from ssd_edge.common.progress import progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        if count > 0:
            steps = _coco_split(out, split, count, np.random.default_rng(rng.integers(2**63)), config)
            for _ in progress_bar(steps, total=count, desc=f"synth {split}", unit="img", disable=not progress):
                pass
    return out
