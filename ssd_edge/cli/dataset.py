"""ssd-dataset: write the synthetic sample dataset, or check a dataset without changing it."""

from __future__ import annotations

import argparse
import sys

from ssd_edge.cli import run_command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-dataset", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="write a synthetic COCO-layout dataset of JPEG images")
    synth.add_argument("out", help="output directory")
    synth.add_argument("--train", type=int, default=400, help="training images")
    synth.add_argument("--val", type=int, default=100, help="validation images")
    synth.add_argument("--seed", type=int, default=0)
    check = commands.add_parser("check", help="report problems in a dataset (nothing is changed)")
    check.add_argument("path", help="dataset root (COCO, flat or VOC layout)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_command("ssd-dataset", lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    from ssd_edge.data.sources import describe, load_splits

    if args.command == "synth":
        from ssd_edge.data.synth import write_synthetic_dataset

        write_synthetic_dataset(args.out, args.train, args.val, args.seed, progress=True)
        print(describe(args.out, load_splits(args.out)))
    else:
        from ssd_edge.data.check import check_dataset

        report = check_dataset(args.path)
        print(report.render())
        if not report.ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
