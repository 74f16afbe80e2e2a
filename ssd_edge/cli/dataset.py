"""ssd-dataset: write the synthetic sample dataset, or check a dataset without changing it."""

from __future__ import annotations

import argparse
import sys

from ssd_edge.cli import run_command


def build_parser() -> argparse.ArgumentParser:
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if run_command("ssd-dataset", lambda: _run(args)) != 0:
        sys.exit(1)  # `check` found problems: the report says which
    return 0


def _run(args: argparse.Namespace) -> int:
    """The command's work; its exit status (1: `check` found problems)."""
    from ssd_edge.data.sources import describe, load_splits

    if args.command == "synth":
        from ssd_edge.data.synth import write_synthetic_dataset

        write_synthetic_dataset(args.out, args.train, args.val, args.seed, progress=True)
        print(describe(args.out, load_splits(args.out)))
        return 0
    else:
        from ssd_edge.data.check import check_dataset

        report = check_dataset(args.path)
        print(report.render())
        return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
