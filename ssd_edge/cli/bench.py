"""ssd-bench: latency percentiles, stage breakdown, formats and peers side by side.

    ssd-bench --model ssd.onnx --model ssd.int8.onnx --batch 1,8 --peer torchvision
    ssd-bench --model ssd.onnx --compare-torch ssd.pt --data dataset_coco --json bench.json --plot bench.png

Parses arguments and calls `ssd_edge.bench.run.run_bench`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ssd_edge.cli import run_command
from ssd_edge.cli.backend_args import add_backend_arguments, backend_options


def batch_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes batch sizes like 1,8; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-bench", description=__doc__.splitlines()[0],
                                epilog="Timed: BGR images in memory -> final detections, after warm-up; the stages "
                                       "preprocess / host->device / network / device->host / decode+NMS.")
    p.add_argument("--model", dest="models", action="append", type=Path, required=True, metavar="PATH",
                   help="an exported .onnx (FP32 or INT8) or .engine; repeat for several models")
    add_backend_arguments(p, several=True, helps={
        "threads": "intra-op threads of onnxruntime and OpenVINO, and of the torch peers "
                   "(default: every logical core)"})
    p.add_argument("--batch", type=batch_sizes, default=(1,), metavar="B[,B...]", help="batch sizes (default 1)")
    p.add_argument("--runs", type=int, default=300, help="timed calls per model and batch size (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="untimed calls first (default 30)")
    p.add_argument("--source", default="images", metavar="images|DIR",
                   help="'images': built-in synthetic sample images; or a folder of images (default: images)")
    p.add_argument("--peer", dest="peers", action="append", default=[], metavar="NAME",
                   help="a peer in the same run: torchvision (its eager ssdlite320_mobilenet_v3_large)")
    p.add_argument("--peer-weights", type=Path, metavar="PATH",
                   help="the torchvision peer's weights: torchvision's SSDLite320 state dict (the file the model "
                        "was exported from) or our mobilenetv3_ssd checkpoint (default: --compare-torch when it "
                        "converts, else random)")
    p.add_argument("--compare-torch", type=Path, metavar="CKPT", help="also run this PyTorch checkpoint eager")
    p.add_argument("--data", type=Path, metavar="DIR", help="add mAP columns: ssd-eval on this dataset's val split")
    p.add_argument("--score-threshold", type=float, help="override every model's (and peer's) score threshold")
    p.add_argument("--agnostic-nms", action="store_true", default=None,
                   help="NMS across the classes in every model (and the PyTorch checkpoint peer; torchvision's "
                        "has none) (default: each model's)")
    p.add_argument("--json", dest="json_path", type=Path, metavar="PATH", help="write the report as JSON")
    p.add_argument("--markdown", dest="markdown_path", type=Path, metavar="PATH", help="write the report as markdown")
    p.add_argument("--plot", dest="plot_path", type=Path, metavar="PATH", help="plot the latency distributions (PNG)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ssd_edge.bench.run import BenchOptions, command_line, run_bench

    chosen = backend_options(args)
    threads = chosen.pop("threads", None)  # also the peers': BenchOptions.threads (default: every logical core)

    def work():
        _check_reports(args)  # before the run: a report that cannot be written is found out now
        options = BenchOptions(  # refuses impossible settings as it is built
            models=tuple(args.models), backend=args.backend, backend_options=chosen,
            batches=args.batch, runs=args.runs, warmup=args.warmup, threads=threads,
            source=args.source, peers=tuple(args.peers), peer_weights=args.peer_weights,
            compare_torch=args.compare_torch, data=args.data, score_threshold=args.score_threshold,
            agnostic_nms=args.agnostic_nms,
            json_path=args.json_path, markdown_path=args.markdown_path, plot_path=args.plot_path,
            progress=args.progress, command=command_line(None if argv is None else list(argv)),
        )
        return run_bench(options)

    run_command("ssd-bench", work)
    return 0


def _check_reports(args: argparse.Namespace) -> None:
    """Before the work: the report files can be written and replace no input."""
    from ssd_edge.common.output_paths import check_outputs, check_writable_file

    reports = {"--json": args.json_path, "--markdown": args.markdown_path, "--plot": args.plot_path}
    for label, path in reports.items():
        if path is not None:
            check_writable_file(path, label)
    check_outputs(reports, {"--model": list(args.models), "--compare-torch": args.compare_torch,
                            "--peer-weights": args.peer_weights, "--data": args.data,
                            "--source": None if args.source == "images" else args.source})


if __name__ == "__main__":
    sys.exit(main())
