"""The torch Dataset for training: read, augment, encode the targets (match to the default
boxes, in the workers, so the loss only reduces), and a collate that skips unreadable images.

The target encoder is given by the caller (training's `matching.target_encoder`): the data
layer knows images and boxes, not how a detector is trained on them."""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ssd_edge.data.sources import ImageRecord

# (boxes (G, 4) xyxy in [0, 1], labels (G,)) -> (target_locs (P, 4) float32, target_labels (P,) int64);
# picklable, since DataLoader workers receive the dataset.
TargetEncoder = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


class DetectionDataset(Dataset):
    """Items are (image (3, H, W) float32, target_locs (P, 4), target_labels (P,)), or None
    for an image that cannot be read (the collate drops and counts it).

    Each item's augmentation draws from a generator seeded by (seed, epoch, index), so
    the same epoch gives the same samples on any number of workers, and after a resume.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable,
        encode_targets: TargetEncoder,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.encode_targets = encode_targets
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        image = record.read_image()
        if image is None:
            return None
        boxes, labels = record.boxes, record.labels
        height, width = image.shape[:2]
        if (width, height) != (record.width, record.height):  # trust the pixels over the annotation
            boxes = boxes * np.array([width / record.width, height / record.height] * 2, np.float32)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        chw, boxes01, labels = self.transform(image, boxes, labels, rng)
        target_locs, target_labels = self.encode_targets(boxes01, labels)
        return torch.from_numpy(chw), torch.from_numpy(target_locs), torch.from_numpy(target_labels)


def collate(items):
    """Stack the readable items; returns (images, target_locs, target_labels, skipped)."""
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        return None, None, None, skipped
    images, locs, labels = zip(*kept)
    return torch.stack(images), torch.stack(locs), torch.stack(labels), skipped


def has_readable_image(records: Sequence[ImageRecord]) -> bool:
    """Whether any record's image decodes (stops at the first that does, so a healthy dataset
    costs one read): with none, training would skip every batch and learn nothing."""
    from ssd_edge.runtime import image_io

    for record in records:
        try:
            image_io.read_image(record.path)
            return True
        except image_io.ImageError:
            continue
    return False
