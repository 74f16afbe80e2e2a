"""MultiBoxLoss: SmoothL1 on matched default boxes plus cross-entropy with hard negative mining."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiBoxLoss(nn.Module):
    """SSD's loss on targets already matched (see `ssd_edge.training.matching.match`).

    forward(locs (B, P, 4) raw box regressions, logits (B, P, C) raw class logits,
    target_locs (B, P, 4), target_labels (B, P)) -> (total_loss, train_acc)

    total_loss = (SmoothL1 over positives + cross-entropy over positives and mined
    negatives) / number of positives in the batch. Negatives are the background default
    boxes with the highest cross-entropy, `neg_pos_ratio` per positive of their image;
    an image without objects still contributes `neg_pos_ratio` negatives, so empty
    images teach the model to stay quiet.

    train_acc is the classification accuracy (argmax of the logits against the target
    label) over the same positives and mined negatives that the loss sees; it is
    reported under no_grad and is not part of the loss.
    """

    def __init__(self, neg_pos_ratio: int = 3) -> None:
        super().__init__()
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.neg_pos_ratio = neg_pos_ratio

    def forward(self, locs: Tensor, logits: Tensor, target_locs: Tensor, target_labels: Tensor):
        batch, priors, num_classes = logits.shape
        if locs.shape != (batch, priors, 4) or target_locs.shape != (batch, priors, 4):
            raise ValueError(
                f"locs {tuple(locs.shape)} and target_locs {tuple(target_locs.shape)} "
                f"must both be (B, P, 4) = ({batch}, {priors}, 4)"
            )
        if target_labels.shape != (batch, priors):
            raise ValueError(f"target_labels {tuple(target_labels.shape)} must be (B, P) = ({batch}, {priors})")
        positives = target_labels > 0
        num_pos = positives.sum(dim=1)

        loc_loss = F.smooth_l1_loss(locs[positives].float(), target_locs[positives].float(), reduction="sum")
        ce = F.cross_entropy(logits.reshape(-1, num_classes).float(), target_labels.reshape(-1), reduction="none")
        ce = ce.view(batch, priors)

        negatives = self._hard_negatives(ce.detach(), positives, num_pos)
        selected = positives | negatives
        cls_loss = ce[selected].sum()
        total_loss = (loc_loss + cls_loss) / num_pos.sum().clamp(min=1)

        with torch.no_grad():
            correct = logits.argmax(dim=-1) == target_labels
            train_acc = correct[selected].float().mean()
        return total_loss, train_acc

    def _hard_negatives(self, ce: Tensor, positives: Tensor, num_pos: Tensor) -> Tensor:
        """(B, P) mask of the background boxes with the highest loss, neg_pos_ratio per positive."""
        ce = ce.masked_fill(positives, float("-inf"))
        rank = ce.argsort(dim=1, descending=True).argsort(dim=1)
        num_neg = torch.minimum(self.neg_pos_ratio * num_pos.clamp(min=1), positives.shape[1] - num_pos)
        return rank < num_neg[:, None]
