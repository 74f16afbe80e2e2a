"""ssd-eval: COCO mAP (pycocotools) of .pt, .onnx, int8 .onnx and .engine models on a dataset."""

from __future__ import annotations

import argparse
import sys

from ssd_edge.cli import run_command
from ssd_edge.cli.backend_args import add_backend_arguments, backend_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-eval", description=__doc__)
    p.add_argument("--weights", nargs="+", required=True, metavar="MODEL",
                   help=".pt checkpoints, .onnx models, .engine files")
    p.add_argument("--datapath", required=True, help="dataset root (COCO, flat or VOC layout)")
    p.add_argument("--split", default="val", choices=("val", "train"))
    p.add_argument("--arch", help="architecture of a torchvision state dict given as --weights")
    p.add_argument("--batch", type=int, default=8, help="images per call")
    p.add_argument("--device", default="cpu", help="for .pt models: cpu or cuda")
    add_backend_arguments(p, help="for .onnx/.engine models: the runtime backend (default auto)")
    p.add_argument("--json", metavar="PATH", help="write the metrics as JSON here")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ssd_edge.evaluation.report import evaluate_models

    run_command("ssd-eval", lambda: evaluate_models(
        args.weights, args.datapath, split=args.split, arch=args.arch, batch=args.batch, device=args.device,
        backend=args.backend, json_path=args.json, progress=args.progress, backend_options=backend_options(args),
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
