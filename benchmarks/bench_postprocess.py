"""Decode + NMS micro-benchmark: ssd-edge's postprocessing against torchvision's own
`SSD.postprocess_detections` (softmax, per-class threshold and top-k, BoxCoder decode,
clip, `batched_nms`, best detections), on the same real model outputs, in one process.

    python -m benchmarks.bench_postprocess                 # CPU: NumPy reference vs torchvision
    python -m benchmarks.bench_postprocess --device cuda   # GPU: CUDA kernel vs torchvision on CUDA

Model: the SSDLite320 MobileNetV3-Large preset (3234 default boxes x 91 classes) with
BatchNorm statistics calibrated on random images, so its outputs have a realistic scale;
postprocessing at the preset's (torchvision's) values: score > 0.001, top 300 per class,
IoU 0.55, 300 detections. Timed: the postprocessing call alone, from raw outputs (host
arrays on CPU; device buffers on GPU) to final detections (on the host for both sides on
GPU). Not timed: the network. Runs alternate between the two implementations after a
warm-up; detections are asserted identical (labels, order; scores to 1e-6; boxes to 2e-3 px).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD

from ssd_edge.bench.machine import cpu_model_and_flags
from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.runtime.cuda.device import describe_gpu, gpu_text
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.postprocess.fast import postprocess
from ssd_edge.runtime.priors import default_boxes

IMAGE_HW = (480, 640)  # original image size the boxes are scaled to


def machine(device: str) -> str:
    lines = [
        f"- CPU: {cpu_model_and_flags()[0]}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()}",
        f"- Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, {platform.system()} {platform.release()}",
    ]
    if device == "cuda":
        lines.append(f"- GPU: {gpu_text(describe_gpu())}; torch built for CUDA {torch.version.cuda}")
    return "\n".join(lines)


def model_outputs(batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = calibrate_batchnorm(build_model("mobilenetv3_ssd", 91), torch.rand(4, 3, 320, 320))
    with torch.no_grad():
        locs, confs = model.raw(torch.rand(batch, 3, 320, 320))
    return model.spec, locs, confs


def torchvision_peer(config: PostprocessConfig, priors_cxcywh: torch.Tensor, batch: int):
    """torchvision's SSD.postprocess_detections, configured as the preset, on our anchors."""
    v_centre, v_size = config.variances
    peer = SimpleNamespace(
        box_coder=det_utils.BoxCoder(weights=(1 / v_centre, 1 / v_centre, 1 / v_size, 1 / v_size)),
        score_thresh=config.score_threshold,
        topk_candidates=config.top_k,
        nms_thresh=config.iou_threshold,
        detections_per_img=config.max_detections,
    )
    height, width = IMAGE_HW
    centre, size = priors_cxcywh[:, :2], priors_cxcywh[:, 2:]
    xyxy = torch.cat([centre - size / 2, centre + size / 2], 1)
    anchors = [xyxy * torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)] * batch

    def run(locs: torch.Tensor, confs: torch.Tensor):
        outputs = {"bbox_regression": locs, "cls_logits": confs}
        out = SSD.postprocess_detections(peer, outputs, anchors, [IMAGE_HW] * batch)
        return [(d["boxes"].cpu().numpy(), d["labels"].cpu().numpy(), d["scores"].cpu().numpy()) for d in out]

    return run


def assert_identical(ours, peer, what: str) -> None:
    """Same detections in the same order. Equal scores are the exception: ours orders them by
    default box, then class; torchvision's sort leaves them in no defined order (at batch
    32, 9,600 float32 scores do collide), so within equal scores the order is not compared."""
    for i, (det, (boxes, labels, scores)) in enumerate(zip(ours, peer)):
        assert len(det.labels) == len(labels), f"{what} image {i}: {len(det.labels)} vs {len(labels)} detections"
        np.testing.assert_allclose(det.scores, scores, rtol=1e-6, atol=1e-7, err_msg=f"{what} image {i}")
        mine = np.lexsort((det.boxes[:, 0], det.labels, -det.scores))
        theirs = np.lexsort((boxes[:, 0], labels, -det.scores))  # torchvision's scores equal ours (checked above)
        assert det.labels[mine].tolist() == labels[theirs].tolist(), f"{what} image {i}: labels or order differ"
        np.testing.assert_allclose(det.boxes[mine], boxes[theirs], atol=2e-3, err_msg=f"{what} image {i}")


def timed(function, runs: list[float]):
    start = time.perf_counter()
    result = function()
    runs.append(time.perf_counter() - start)
    return result


def percentiles(runs: list[float]) -> tuple[float, float, float]:
    return tuple(float(np.percentile(np.array(runs) * 1e3, q)) for q in (50, 90, 99))


def cpu_benchmark(batch: int, runs: int, warmup: int):
    spec, locs, confs = model_outputs(batch)
    config = spec.postprocess
    priors = default_boxes(spec)
    locs_np, confs_np = locs.numpy(), confs.numpy()
    ours = lambda: postprocess(locs_np, confs_np, priors, [IMAGE_HW] * batch, config)  # noqa: E731
    peer_run = torchvision_peer(config, torch.from_numpy(priors), batch)
    peer = lambda: peer_run(locs, confs)  # noqa: E731
    assert_identical(ours(), peer(), f"batch {batch}")
    times = {"NumPy reference (ssd_edge.runtime.postprocess.fast)": [], "torchvision SSD.postprocess_detections": []}
    for _ in range(warmup):
        ours(), peer()
    for _ in range(runs):
        timed(ours, times["NumPy reference (ssd_edge.runtime.postprocess.fast)"])
        timed(peer, times["torchvision SSD.postprocess_detections"])
    return config, times


def cuda_benchmark(batch: int, runs: int, warmup: int):
    from ssd_edge.runtime.cuda.decode_nms import CudaDecodeNms
    from ssd_edge.runtime.cuda.resources import DeviceBuffer, Stream, primary_context

    spec, locs, confs = model_outputs(batch)
    config = spec.postprocess
    priors = default_boxes(spec)
    reference = postprocess(locs.numpy(), confs.numpy(), priors, [IMAGE_HW] * batch, config)
    locs_gpu, confs_gpu = locs.cuda(), confs.cuda()
    peer_run = torchvision_peer(config, torch.from_numpy(priors).cuda(), batch)

    def peer():
        result = peer_run(locs_gpu, confs_gpu)  # ends with the copy of the detections to the host
        torch.cuda.synchronize()
        return result

    context = primary_context()
    with context:
        stream = Stream()
        decoder = CudaDecodeNms(stream, priors, spec.num_classes, batch, config)
        locs_buf, confs_buf = DeviceBuffer(locs.numpy().nbytes), DeviceBuffer(confs.numpy().nbytes)
        stream.copy_to_device(locs_buf.address, np.ascontiguousarray(locs.numpy()))
        stream.copy_to_device(confs_buf.address, np.ascontiguousarray(confs.numpy()))
        ours = lambda: decoder.run(locs_buf.address, confs_buf.address, [IMAGE_HW] * batch)  # noqa: E731
        got = ours()
        for i, (g, r) in enumerate(zip(got, reference)):
            assert g.labels.tolist() == r.labels.tolist(), f"kernel vs NumPy, image {i}"
            np.testing.assert_allclose(g.scores, r.scores, rtol=1e-6, atol=0)
            np.testing.assert_allclose(g.boxes, r.boxes, atol=1e-4)
        assert_identical(got, peer(), f"batch {batch} on CUDA")
        times = {"CUDA kernel (ssd_edge decode_nms.cu, pycuda)": [],
                 "torchvision SSD.postprocess_detections (CUDA)": []}
        for _ in range(warmup):
            ours(), peer()
        for _ in range(runs):
            timed(ours, times["CUDA kernel (ssd_edge decode_nms.cu, pycuda)"])
            timed(peer, times["torchvision SSD.postprocess_detections (CUDA)"])
        decoder.close()
        locs_buf.free()
        confs_buf.free()
        stream.close()
    return config, times


def report(device: str, results: dict, runs: int, warmup: int, command: str) -> str:
    lines = [
        f"# Decode + NMS: ssd-edge vs torchvision ({device.upper()})",
        "",
        f"Command: `{command}`",
        "",
        machine(device),
        "- Model outputs: SSDLite320 MobileNetV3-Large preset, 3234 default boxes x 91 classes, BatchNorm "
        "calibrated on random images (an untrained head: nearly every box scores above 0.001 in every class).",
        "- Postprocessing: score > 0.001, top 300 per class, IoU 0.55, 300 detections per image "
        f"(boxes scaled to {IMAGE_HW[1]}x{IMAGE_HW[0]}). Identical detections asserted before timing.",
        f"- Timed: the postprocessing call only; {warmup} warm-up rounds, then {runs} rounds alternating the two.",
        "",
        "| batch | implementation | p50 ms | p90 ms | p99 ms | p50 speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for batch, times in results.items():
        (ours_name, ours), (peer_name, peer) = times.items()
        speedup = percentiles(peer)[0] / percentiles(ours)[0]
        for name, runs_ in ((ours_name, ours), (peer_name, peer)):
            p50, p90, p99 = percentiles(runs_)
            lines.append(f"| {batch} | {name} | {p50:.2f} | {p90:.2f} | {p99:.2f} | "
                         f"{f'{speedup:.1f}x' if name == ours_name else '1.0x'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (default 1: NumPy's postprocessing is single-threaded)")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_postprocess: --device cuda needs a CUDA GPU (and pycuda)", file=sys.stderr)
        return 2
    bench = cpu_benchmark if args.device == "cpu" else cuda_benchmark
    results = {}
    for batch in args.batch:
        print(f"batch {batch}: {args.warmup} warm-up + {args.runs} timed rounds ...", file=sys.stderr, flush=True)
        _, results[batch] = bench(batch, args.runs, args.warmup)
    command = "python -m benchmarks.bench_postprocess " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(args.device, results, args.runs, args.warmup, command.strip())
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
