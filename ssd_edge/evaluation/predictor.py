"""`TorchPredictor`: the PyTorch model behind the same interface as the runtime's Detector
(BGR uint8 images in, `Detections` in the images' pixels out), with the runtime's own
preprocessing, so what is measured is what is deployed."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ssd_edge.models.ssd import SSD
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.preprocess import preprocess


class TorchPredictor:
    def __init__(self, model: SSD, device: str | torch.device = "cpu") -> None:
        self.model = getattr(model, "module", model)
        self.device = torch.device(device)
        self.spec = self.model.spec

    @torch.no_grad()
    def __call__(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        was_training = self.model.training
        self.model.eval()
        try:
            batch = torch.from_numpy(preprocess(images_bgr, self.spec.input_size)).to(self.device)
            sizes = [image.shape[:2] for image in images_bgr]
            boxes, labels, scores, confs = self.model(batch, image_sizes=sizes)
        finally:
            self.model.train(was_training)
        return [
            Detections(b.cpu().numpy(), l.cpu().numpy(), s.cpu().numpy(), c.cpu().numpy())
            for b, l, s, c in zip(boxes, labels, scores, confs)
        ]
