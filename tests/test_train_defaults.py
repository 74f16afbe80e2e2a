"""The training defaults: what the seed's command picks, that they learn faster than the
previous ones (SGD with Nesterov momentum and zero classification biases) at the same
number of steps, and the classification prior itself."""

from dataclasses import fields, replace

import pytest
import torch

from ssd_edge.cli.train import build_parser
from ssd_edge.data.dataset import DetectionDataset, collate
from ssd_edge.data.sources import load_splits
from ssd_edge.data.transforms import TrainAugment
from ssd_edge.models import build_model
from ssd_edge.models.init import background_logit
from ssd_edge.training.loss import MultiBoxLoss
from ssd_edge.training.matching import target_encoder
from ssd_edge.training.train import TrainConfig, make_optimizer, warmup_cosine

SEED_COMMAND = "--arch mobilenetv3_ssd --datapath dataset_coco --epochs 10 --batch-size 5 --lr 0.001 --save ssd.pt"
# What TrainConfig defaulted to before AdamW and the classification prior.
PREVIOUS = dict(optimizer="sgd", momentum=0.9, weight_decay=4e-5, foreground_prior=None)


def test_the_seed_command_trains_with_the_config_defaults():
    config = TrainConfig(**vars(build_parser().parse_args(SEED_COMMAND.split())))
    assert (config.optimizer, config.lr, config.foreground_prior) == ("adamw", 0.001, 0.01)
    given = {"arch", "datapath", "epochs", "batch_size", "lr", "save"}
    defaults = TrainConfig(datapath="dataset_coco")
    for field in fields(TrainConfig):
        if field.name not in given:
            assert getattr(config, field.name) == getattr(defaults, field.name), field.name


def test_flags_still_override_the_defaults():
    args = build_parser().parse_args([*SEED_COMMAND.split(), "--optimizer", "sgd", "--foreground-prior", "0"])
    config = TrainConfig(**vars(args))
    assert config.optimizer == "sgd" and not config.foreground_prior


def test_classification_prior_sets_the_foreground_probability():
    model = build_model("mobilenetv3_small_ssd", ["bg", "a", "b", "c"], 160)
    model.init_classification_prior(0.01)
    for header in model.classification_headers:
        conv = [m for m in header.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        bias = conv.bias.detach().view(-1, 4)
        torch.testing.assert_close(bias[:, 0], torch.full_like(bias[:, 0], background_logit(4, 0.01)))
        assert not bias[:, 1:].any()
        foreground = 1 - bias.softmax(dim=1)[:, 0]  # with zero input the logits are the biases
        torch.testing.assert_close(foreground, torch.full_like(foreground, 0.01))
    with pytest.raises(ValueError, match="foreground_prior"):
        model.init_classification_prior(1.0)


def _losses(config: TrainConfig, batches, steps: int) -> list[float]:
    """Train a fresh model with `config`'s optimizer, prior and warm-up + cosine schedule."""
    torch.manual_seed(0)
    model = build_model(config.arch, ["bg", "circle", "square", "triangle"], config.imgsz).train()
    if config.foreground_prior:
        model.init_classification_prior(config.foreground_prior)
    optimizer = make_optimizer(config, model)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps // 10, steps))
    criterion = MultiBoxLoss()
    losses = []
    for step in range(steps):
        x, target_locs, target_labels, _ = batches[step % len(batches)]
        loss, _ = criterion(*model(x), target_locs, target_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def test_new_defaults_lower_the_loss_faster_than_the_previous_ones(tiny_coco):
    """Same images, same steps, same seed's lr (1e-3): the loss after 40 steps is clearly lower."""
    config = TrainConfig(datapath=str(tiny_coco), arch="mobilenetv3_small_ssd", imgsz=160, lr=0.001)
    model = build_model(config.arch, ["bg", "circle", "square", "triangle"], config.imgsz)
    records = load_splits(str(tiny_coco))["train"].records
    encode = target_encoder(model.priors_cxcywh.numpy(), config.matcher, model.spec.variances)
    dataset = DetectionDataset(records, TrainAugment(model.spec.input_size), encode, seed=0)
    batches = [collate([dataset[i] for i in range(start, start + 5)]) for start in (0, 5)]

    steps = 40
    new = _losses(config, batches, steps)
    old = _losses(replace(config, **PREVIOUS), batches, steps)
    late_new, late_old = sum(new[-10:]) / 10, sum(old[-10:]) / 10
    assert late_new < 0.75 * late_old, (late_new, late_old)
    assert late_new < 0.6 * new[0]  # and it is a real fall, not a different starting point


@pytest.mark.parametrize("bad, message", [
    (dict(epochs=0), r"--epochs \(0\) and --batch-size \(8\) must be at least 1"),
    (dict(lr=0.0), "--lr must be positive, got 0.0"),
    (dict(optimizer="adam"), "--optimizer must be sgd or adamw, got 'adam'"),
    (dict(matcher="nearest"), "--matcher must be one of .*, got 'nearest'"),
    (dict(device="tpu"), "--device must be cpu, cuda or auto, got 'tpu'"),
])
def test_a_train_config_is_refused_where_it_is_built(bad, message):
    from ssd_edge.common.errors import UsageError

    with pytest.raises(UsageError, match=message):
        TrainConfig(datapath="dataset_coco", **bad)
    with pytest.raises(UsageError, match=message):
        replace(TrainConfig(datapath="dataset_coco"), **bad)
