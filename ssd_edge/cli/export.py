"""ssd-export: weights -> ONNX / INT8 ONNX / TensorRT engine. Parses arguments and calls
`ssd_edge.export.pipeline.run_export`."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from ssd_edge.cli import run_command
from ssd_edge.export.onnx_model import ExportError
from ssd_edge.export.pipeline import FORMATS, ExportOptions, run_export


def parse_formats(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssd-export",
        description="Export an SSD to ONNX (network only, no postprocessing), INT8 QDQ ONNX and TensorRT engines.",
    )
    parser.add_argument("--weights", type=Path, required=True,
                        help="our checkpoint (.pt), torchvision's SSDLite320/SSD300 COCO state dict (with --arch), "
                             "or an exported .onnx (to quantize it or build an engine without torch)")
    parser.add_argument("--arch", help="architecture of a torchvision state dict: mobilenetv3_ssd or vgg16_ssd")
    parser.add_argument("--format", dest="formats", action="append", type=parse_formats, metavar="FORMAT",
                        help=f"{' | '.join(FORMATS)}; repeat it or give a comma list (default: onnx)")
    parser.add_argument("--imgsz", type=int, nargs="+", metavar="N",
                        help="input size: one number (square) or H W (default: the model's own)")
    parser.add_argument("--batch", type=int,
                        help="batch size (default 1); with --dynamic the largest batch an engine takes (default 8)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    parser.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                        help="simplify the ONNX with onnxsim (default: on)")
    parser.add_argument("--half", action="store_true", help="FP16 TensorRT engine")
    parser.add_argument("--int8", action="store_true", help="INT8 TensorRT engine (calibrated on --calib-data)")
    parser.add_argument("--calib-data", type=Path, metavar="DIR",
                        help="images for INT8 calibration and parity checks (searched recursively)")
    parser.add_argument("--calib-images", type=int, default=300, metavar="N",
                        help="calibration images to use (default 300)")
    parser.add_argument("--int8-flavour", metavar="FLAVOUR[,FLAVOUR]",
                        help="INT8 ONNX flavour: tensorrt or cpu (default: tensorrt for an INT8 engine, else cpu); "
                             "a comma list also writes <name>.int8-<flavour>.onnx for the others")
    parser.add_argument("--calib-method", metavar="METHOD[,METHOD]",
                        help="calibration methods to try: minmax, percentile, entropy (default: minmax and "
                             "percentile, chosen by mAP, when --calib-data is a labelled dataset; else minmax; "
                             "entropy is slow: minutes per layer set)")
    parser.add_argument("--select-images", type=int, default=50, metavar="N",
                        help="labelled images after the calibration ones that choose the method and the layers "
                             "kept float (default 50)")
    parser.add_argument("--int8-budget", type=float, default=0.003, metavar="DROP",
                        help="largest INT8 drop from FP32 in mAP@0.5 and mAP@0.5:0.95 before layers go back to "
                             "float (default 0.003, 0.3 points)")
    parser.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True,
                        help="end with the accuracy table (FP32, FP16/bf16 emulated, INT8) written as "
                             "<name>.accuracy.md/.json (default: on, with a labelled --calib-data)")
    parser.add_argument("--workspace", type=float, metavar="GiB", help="TensorRT builder workspace limit")
    parser.add_argument("--dla-core", type=int, metavar="N", help="build for this DLA core (Jetson), GPU fallback on")
    parser.add_argument("--output", type=Path, metavar="DIR", help="output folder (default: beside the weights)")
    return parser


def options_from(args: argparse.Namespace) -> ExportOptions:
    formats = tuple(f for group in (args.formats or [["onnx"]]) for f in group)
    imgsz = None
    if args.imgsz is not None:
        if len(args.imgsz) > 2:
            raise ExportError(f"--imgsz takes one number or H W, got {' '.join(map(str, args.imgsz))}")
        imgsz = (args.imgsz[0], args.imgsz[-1])
    return ExportOptions(
        weights=args.weights, arch=args.arch, formats=formats, imgsz=imgsz, batch=args.batch, dynamic=args.dynamic,
        opset=args.opset, simplify=args.simplify, half=args.half, int8=args.int8, calib_data=args.calib_data,
        calib_images=args.calib_images, int8_flavour=args.int8_flavour, workspace=args.workspace,
        dla_core=args.dla_core, output=args.output,
        calib_methods=tuple(parse_formats(args.calib_method)) if args.calib_method else None,
        select_images=args.select_images, int8_budget=args.int8_budget, accuracy=args.accuracy,
    )


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        run_command("ssd-export", lambda: run_export(options_from(args), echo=print))
    return 0


if __name__ == "__main__":
    sys.exit(main())
