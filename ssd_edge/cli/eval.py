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
    # before the backend flags: OpenVINO's precision option becomes --openvino-precision
    p.add_argument("--precision", metavar="P[,P]",
                   help="accuracy per precision instead: fp32, fp16, bf16 (emulated on the CPU from the FP32 ONNX), "
                        "int8 (the INT8 ONNX files given, else <stem>.int8*.onnx beside); one FP32 .onnx in --weights")
    add_backend_arguments(p, help="for .onnx/.engine models: the runtime backend (default auto)")
    p.add_argument("--json", metavar="PATH", help="write the metrics (per class too) as JSON here")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as markdown here (as ssd-bench --markdown)")
    p.add_argument("--csv", metavar="PATH", help="write the metrics as CSV here: a row per model and class")
    p.add_argument("--agnostic-nms", action="store_true", default=None,
                   help="NMS across the classes: a box suppresses overlapping boxes of every class (default: "
                        "the model's, per class)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ssd_edge.evaluation.report import evaluate_models

    if args.precision:
        from ssd_edge.evaluation.precision import evaluate_precisions

        precisions = [part.strip() for part in args.precision.split(",") if part.strip()]
        run_command("ssd-eval", lambda: evaluate_precisions(args.weights, args.datapath, precisions, split=args.split,
                                                             json_path=args.json))
        return 0
    run_command("ssd-eval", lambda: evaluate_models(
        args.weights, args.datapath, split=args.split, arch=args.arch, batch=args.batch, device=args.device,
        backend=args.backend, json_path=args.json, markdown_path=args.markdown, csv_path=args.csv,
        progress=args.progress, backend_options=backend_options(args),
        agnostic_nms=args.agnostic_nms,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
