"""ssd-serve: serve an exported model (.onnx or .engine) with Triton Inference Server, through
PyTriton, until Ctrl-C or SIGTERM. HTTP and gRPC, dynamic batching across clients, health,
statistics and Prometheus metrics as Triton has them. Needs the `serve` extra, installed in
its own environment (PyTriton 0.7 needs numpy<2)."""

from __future__ import annotations

import argparse
import logging
import sys

from ssd_edge.cli import run_command
from ssd_edge.cli.backend_args import add_backend_arguments, backend_options

LOG = logging.getLogger("ssd-serve")
DEFAULT_MAX_MEGAPIXELS = 40.0  # = runtime.serve.inputs.DEFAULT_MAX_MEGAPIXELS (a test checks)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-serve", description=__doc__)
    p.add_argument("--model", required=True, help=".onnx model or .engine (with its .engine.json)")
    add_backend_arguments(p, helps={"threads": "intra-op threads of each instance's Detector "
                                             "(onnxruntime, OpenVINO)"})
    p.add_argument("--name", default="ssd", help="Triton model name; raw BGR arrays go to NAME_raw (default ssd)")
    p.add_argument("--address", default="0.0.0.0", help="interface to listen on (default all; 127.0.0.1: loopback)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--instances", type=int, default=1, help="model instances, each with its own Detector")
    p.add_argument("--max-batch", type=int, default=8, help="most images in one execution (default 8)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="how long Triton may hold a request to form a bigger batch (default 2000)")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                   help="largest encoded image accepted, read from its header before decoding; a larger one "
                        f"is refused alone (default {DEFAULT_MAX_MEGAPIXELS:g})")
    p.add_argument("--score-threshold", type=float, help="default: the model's (clients may raise it, not lower it)")
    p.add_argument("--iou-threshold", type=float, help="NMS IoU threshold; default: the model's")
    p.add_argument("--agnostic-nms", action="store_true", default=None,
                   help="NMS across the classes: a box suppresses overlapping boxes of every class (default: "
                        "the model's, per class)")
    p.add_argument("--max-detections", type=int, help="per image; default: the model's")
    p.add_argument("--verbose", action="store_true", help="Triton's verbose log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    from ssd_edge.runtime.serve.environment import cpu_only_note, require_pytriton
    from ssd_edge.runtime.serve.server import DetectorServer, ServeConfig, stop_on_signals

    chosen = backend_options(args)
    threads = chosen.pop("threads", None)  # ServeConfig's: each instance's Detector gets it

    def serve() -> None:
        require_pytriton()  # before the model loads; names the serving environment's ssd-serve
        note = cpu_only_note()
        if note:
            LOG.info(note)
        config = ServeConfig(
            model_name=args.name, address=args.address, http_port=args.http_port, grpc_port=args.grpc_port,
            metrics_port=args.metrics_port, max_batch_size=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
            instances=args.instances, threads=threads, log_verbose=int(args.verbose),
            max_megapixels=args.max_megapixels,
        )
        server = DetectorServer(args.model, config, backend=args.backend, score_threshold=args.score_threshold,
                                iou_threshold=args.iou_threshold, max_detections=args.max_detections, options=chosen,
                                agnostic_nms=args.agnostic_nms)
        stop_on_signals(server)
        with server.start():
            LOG.info("serving %s as %s: HTTP %s:%d, gRPC %s:%d, metrics http://%s:%d/metrics", args.model,
                     args.name, server.host, config.http_port, server.host, config.grpc_port, server.host,
                     config.metrics_port)
            server.wait()
        LOG.info("stopped")

    run_command("ssd-serve", serve, interrupted="interrupted while starting; stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
