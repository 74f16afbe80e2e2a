"""The pycuda launcher of the CUDA decode + NMS (`decode_nms.cu`), for network outputs that
are already on the GPU (a TensorRT engine's output buffers, onnxruntime's CUDA outputs).

It runs `DecodeNmsPlan`'s five kernels on the caller's stream, right after the network,
and copies back only the detections: first the per-image counts, then exactly that many
packed records, both into pinned memory.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssd_edge.runtime.cuda.resources import DeviceBuffer, PinnedBuffer, Stream, check, compile_module
from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, KERNELS, DecodeNmsPlan
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.stage_timer import NO_TIMER, StageTimer


class CudaDecodeNms:
    """Decode + NMS on the GPU for one model.

    priors_cxcywh (P, 4) the default boxes; num_classes C with the background; batches up
    to max_batch. Construct, run and close it with the CUDA context current.
    """

    def __init__(
        self,
        stream: Stream,
        priors_cxcywh: np.ndarray,
        num_classes: int,
        max_batch: int,
        config: PostprocessConfig,
        class_names: Sequence[str] = (),
    ) -> None:
        self.plan = DecodeNmsPlan(len(priors_cxcywh), num_classes, max_batch, config)
        self.stream = stream
        self.class_names = tuple(class_names)
        module = compile_module(KERNEL_SOURCE.read_text(), KERNEL_SOURCE.name)
        self.kernels = {name: check(f"cuModuleGetFunction({name})", module.get_function, name) for name in KERNELS}
        self._module = module  # the kernels live as long as their module
        self.workspace = DeviceBuffer(self.plan.workspace_bytes, "decode + NMS workspace")
        self.det_count = PinnedBuffer((max_batch,), np.int32, "detection counts")
        rows = max_batch * self.plan.max_detections
        self.records = PinnedBuffer((rows, self.plan.record_width), np.float32, "detections")
        priors = np.ascontiguousarray(priors_cxcywh, np.float32)
        stream.copy_to_device(self.workspace.address + self.plan.offsets["priors"], priors)
        stream.synchronize()

    def run(
        self,
        locs_address: int,
        confs_address: int,
        image_sizes: Sequence[tuple[int, int]],
        timer: StageTimer = NO_TIMER,
    ) -> list[Detections]:
        """Detections of a batch whose raw outputs locs (B, P, 4) and confs (B, P, C), float32,
        are at these device addresses (written by work already queued on the stream).

        With a StageTimer: `decode_nms` times the kernels (up to a stream synchronisation)
        and the unpacking into Detections, `device_to_host` the copies of the detections."""
        batch = len(image_sizes)
        plan, stream, workspace = self.plan, self.stream, self.workspace.address
        with timer.stage("decode_nms", stream.synchronize):
            for launch in plan.launches(workspace, locs_address, confs_address, batch):
                check(
                    f"cuLaunchKernel({launch.kernel})",
                    self.kernels[launch.kernel],
                    *launch.args,
                    grid=launch.grid,
                    block=launch.block,
                    shared=launch.shared_bytes,
                    stream=stream.pycuda_stream,
                )
        with timer.stage("device_to_host"):
            counts = self.det_count.array[:batch]
            stream.copy_to_host(counts, workspace + plan.offsets["det_count"])
            stream.synchronize()
            total = int(counts.sum())
            records = self.records.array[:total]
            if total:
                stream.copy_to_host(records, workspace + plan.offsets["packed"])
                stream.synchronize()
        with timer.stage("decode_nms"):
            return plan.detections(counts.copy(), records, image_sizes, self.class_names)

    def close(self) -> None:
        for resource in (self.records, self.det_count, self.workspace):
            resource.free()
        self.kernels = {}
        self._module = None
