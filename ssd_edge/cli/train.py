"""ssd-train / train_ssd.py: train an SSD on a COCO, flat COCO-JSON or Pascal VOC dataset."""

from __future__ import annotations

import argparse

from ssd_edge.training.matching import MATCHERS
from ssd_edge.models.registry import ARCHS
from ssd_edge.cli import run_command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-train", description=__doc__)
    p.add_argument("--arch", default="mobilenetv3_ssd", choices=sorted(ARCHS))
    p.add_argument("--datapath", required=True, help="dataset root (COCO, flat or VOC layout)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8, help="images per process and step")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (after warm-up)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="SGD with Nesterov momentum, or AdamW")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up before the cosine decay")
    p.add_argument("--imgsz", type=int, default=None, help="input side in pixels (default: the architecture's)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matcher", choices=MATCHERS, default="hungarian_iou")
    p.add_argument("--pretrained-backbone", metavar="PATH", help="torchvision ImageNet classifier weights (a local file)")
    p.add_argument("--weights", metavar="PATH", help="start from our checkpoint or a torchvision COCO state dict")
    p.add_argument("--resume", metavar="PATH", help="continue an interrupted run exactly (epoch, optimizer, schedule, RNG)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--save", default="ssd.pt", help="checkpoint path; best, metrics.csv and curves.png go beside it")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from ssd_edge.training.train import TrainConfig, train

    run_command("ssd-train", lambda: train(TrainConfig(**vars(args))),
                interrupted="interrupted; the last checkpoint written is intact")


if __name__ == "__main__":
    main()
