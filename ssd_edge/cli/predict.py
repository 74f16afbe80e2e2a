"""ssd-predict: detect objects in images with an exported model (.onnx or .engine); writes
each image with its detections drawn and one detections.json into --output. With --track the
inputs are one image sequence (a folder of frames, a pattern such as img1/%06d.jpg, or files
in order): objects are tracked through it and <sequence>.txt (MOTChallenge) is written too."""

from __future__ import annotations

import argparse
import sys

from ssd_edge.cli import SHOW_SCORE_THRESHOLD, run_command
from ssd_edge.cli.backend_args import add_backend_arguments, backend_options
from ssd_edge.cli.tracker_args import add_tracker_arguments, tracker_config_from_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-predict", description=__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help=".onnx model or .engine (with its .engine.json)")
    source.add_argument("--server", metavar="HOST:PORT",
                        help="detect on an ssd-serve server instead (HTTP; grpc://HOST:PORT for gRPC)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, or folders (the images directly inside them); with --track one sequence: "
                        "a folder of frames, a pattern (img1/%%06d.jpg) or files in order")
    p.add_argument("--output", metavar="DIR",
                   help="folder for annotated images and detections.json (default: runs/predict, or runs/predict2, "
                        "... the first that does not exist)")
    p.add_argument("--score-threshold", type=float, default=SHOW_SCORE_THRESHOLD,
                   help=f"minimum class score (default {SHOW_SCORE_THRESHOLD}; the model's own is for mAP)")
    p.add_argument("--iou-threshold", type=float, help="NMS IoU threshold; default: the model's")
    p.add_argument("--max-detections", type=int, help="per image; default: the model's")
    p.add_argument("--agnostic-nms", action="store_true", default=None,
                   help="NMS across the classes: a box suppresses overlapping boxes of every class (default: "
                        "the model's, per class)")
    add_backend_arguments(p)
    p.add_argument("--batch", type=int, default=8, help="images per network run")
    p.add_argument("--quiet", action="store_true", help="print only errors (default: a line per image)")
    p.add_argument("--track", action="store_true",
                   help="track objects through the sequence: tracks drawn (#id), <sequence>.txt in MOTChallenge's "
                        "result format and the tracks in detections.json; the model runs at the tracker's low "
                        "score (--track-low), not --score-threshold")
    add_tracker_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ssd_edge.runtime.predict import new_output_folder, predict_images

    output = args.output if args.output is not None else new_output_folder()

    def on_image(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    if args.track:
        return _track(args, output, on_image)
    results = run_command("ssd-predict", lambda: predict_images(
        args.model, args.images, output, backend=args.backend, on_image=on_image, score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold, max_detections=args.max_detections, batch=args.batch,
        notify=lambda line: print(f"ssd-predict: {line}", file=sys.stderr), server=args.server,
        backend_options=backend_options(args), agnostic_nms=args.agnostic_nms,
    ))
    if not args.quiet:
        print(f"wrote {results}")
    return 0


def _track(args: argparse.Namespace, output, on_image) -> int:
    from ssd_edge.runtime.predict_tracks import track_images

    mot, results = run_command("ssd-predict", lambda: track_images(
        args.model, args.images, output, tracker_config_from_args(args), backend=args.backend,
        iou_threshold=args.iou_threshold, max_detections=args.max_detections, batch=args.batch,
        notify=lambda line: print(f"ssd-predict: {line}", file=sys.stderr), server=args.server,
        backend_options=backend_options(args), agnostic_nms=args.agnostic_nms, on_image=on_image,
    ))
    if not args.quiet:
        print(f"wrote {mot} and {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
