import numpy as np
import torch

from ssd_edge.models import build_model
from ssd_edge.training.loss import MultiBoxLoss
from ssd_edge.training.matching import match


def planted_batch(model):
    gt = [
        (np.array([[0.1, 0.1, 0.5, 0.6], [0.55, 0.5, 0.95, 0.9]]), np.array([1, 2])),
        (np.array([[0.3, 0.2, 0.7, 0.8]]), np.array([2])),
        (np.zeros((0, 4)), np.zeros((0,))),  # an image without objects
    ]
    priors = model.priors_cxcywh.numpy()
    targets = [match(boxes, labels, priors) for boxes, labels in gt]
    target_locs = torch.from_numpy(np.stack([t[0] for t in targets]))
    target_labels = torch.from_numpy(np.stack([t[1] for t in targets]))
    images = torch.rand(3, 3, *model.spec.input_size)
    return images, target_locs, target_labels


def test_loss_falls_when_overfitting_a_few_images():
    torch.manual_seed(0)
    model = build_model("mobilenetv3_small_ssd", 3, imgsz=192)
    images, target_locs, target_labels = planted_batch(model)
    criterion = MultiBoxLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(40):
        locs, logits = model(images)
        loss, acc = criterion(locs, logits, target_locs, target_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), acc.item()))
    assert all(np.isfinite(loss) for loss, _ in history)
    assert history[-1][0] < 0.3 * history[0][0]
    assert history[-1][1] > 0.9


def test_hard_negative_mining_and_accuracy_by_hand():
    # One image, 8 default boxes, 2 classes; 1 positive -> 3 mined negatives.
    logits = torch.zeros(1, 8, 2)
    logits[0, :, 1] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, -1.0, -2.0, -3.0])
    labels = torch.zeros(1, 8, dtype=torch.int64)
    labels[0, 0] = 1
    locs = torch.zeros(1, 8, 4)
    target_locs = torch.zeros(1, 8, 4)
    target_locs[0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # SmoothL1 = 0.5
    loss, acc = MultiBoxLoss()(locs, logits, target_locs, labels)
    ce = torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="none")
    expected = 0.5 + ce[0] + ce[1] + ce[2] + ce[3]  # the three hardest negatives are boxes 1..3
    assert torch.isclose(loss, expected)
    assert acc.item() == 0.25  # the positive is right, the three negatives are wrong


def test_all_background_batch_trains():
    logits = torch.randn(2, 50, 4, requires_grad=True)
    locs = torch.randn(2, 50, 4, requires_grad=True)
    loss, acc = MultiBoxLoss()(locs, logits, torch.zeros(2, 50, 4), torch.zeros(2, 50, dtype=torch.int64))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert logits.grad.abs().sum() > 0 and 0 <= acc <= 1
