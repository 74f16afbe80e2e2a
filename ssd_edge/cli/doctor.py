"""ssd-doctor: check what of ssd-edge works on this machine (a Jetson, a GPU server or a
CPU box): libraries, GPU, the CUDA decode + NMS, and optionally your model and engine.
Prints one verdict per line (ok / missing / FAILED, with the fix) and writes a markdown
report to attach to a bug. Exits 1 when a check FAILED (missing optional parts do not), 2 when
the arguments are refused (a --report path that cannot be written is refused before any check
runs); a report that cannot be written after the checks keeps the verdict's status 1, else 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssd_edge.cli import EXIT_ERROR, run_command

DEFAULT_REPORT = "ssd-doctor-report.md"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-doctor", description=__doc__)
    p.add_argument("--model", metavar="X.onnx", help="also run this ONNX model on onnxruntime")
    p.add_argument("--engine", metavar="X.engine",
                   help="also run this TensorRT engine (with --model: compare it with the ONNX)")
    p.add_argument("--report", default=DEFAULT_REPORT, metavar="PATH",
                   help=f"markdown report to write (default {DEFAULT_REPORT}; an earlier ssd-doctor report "
                        "there is replaced, any other file is left alone)")
    p.add_argument("--no-nvrtc", action="store_true", help="skip the NVRTC compile of the kernel for every Jetson SM")
    p.add_argument("--kernel-runs", type=int, default=50, metavar="N", help="timed GPU decode + NMS runs per batch")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ssd_edge import __version__
    from ssd_edge.common.errors import SSDEdgeError
    from ssd_edge.common.output_paths import check_writable_file
    from ssd_edge.runtime.doctor import FAILED, diagnose
    from ssd_edge.runtime.doctor.report import check_report_path, markdown, summary, write_report

    report_path = Path(args.report)

    def check_report() -> bool:
        replacing = check_report_path(report_path)
        check_writable_file(report_path, "--report")
        return replacing

    replacing = run_command("ssd-doctor", check_report)
    verdicts = run_command("ssd-doctor", lambda: diagnose(
        args.model, args.engine, nvrtc=not args.no_nvrtc, kernel_runs=args.kernel_runs,
        progress=lambda verdict: print(verdict.line(20), flush=True),
    ))
    command = ["ssd-doctor", *(sys.argv[1:] if argv is None else argv)]
    status = 1 if any(v.status == FAILED for v in verdicts) else 0
    try:
        write_report(report_path, markdown(verdicts, command, __version__))
    except (SSDEdgeError, OSError) as exc:  # e.g. the folder went away meanwhile: a FAILED verdict stays 1
        print(f"\n{summary(verdicts)}; no report written\nssd-doctor: error: {exc}", file=sys.stderr)
        return status or EXIT_ERROR
    print(f"\n{summary(verdicts)}; report {'replaced' if replacing else 'written'}: {report_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
