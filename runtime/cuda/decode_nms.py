"""The pycuda launcher of the CUDA decode + NMS (`decode_nms.cu`), for network outputs that
are already on the GPU (a TensorRT engine's output buffers, onnxruntime's CUDA outputs).

Per batch it queues `DecodeNmsPlan`'s kernels (three; four with agnostic_nms) on the
caller's stream, right after the network, as prepared calls whose argument lists were built
once (per batch size and pair of output addresses), then copies back the per-image counts
and the packed detections in one copy into pinned memory, and synchronises the stream once.
The copy covers as many records as the batches so far needed (at least 32 per image); only a
batch with more detections than that needs a second copy (and a second synchronisation),
after which the span grows to fit.

`driver` is the pycuda.driver-like module the launcher calls (pycuda.driver itself unless a
test passes a recording stand-in), `module` the compiled kernels (compiled from
decode_nms.cu unless given).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan
from ssd_edge.runtime.cuda.resources import DeviceBuffer, PinnedBuffer, Stream, check, compile_module, import_pycuda
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.stage_timer import NO_TIMER, StageTimer

FIRST_RECORDS_PER_IMAGE = 32  # records per image the first copy-back covers, before any batch asked for more
PREPARED_BATCHES = 16  # launch lists kept (one per batch size and pair of output addresses)


class CudaDecodeNms:
    """Decode + NMS on the GPU for one model.

    priors_cxcywh (P, 4) the default boxes; num_classes C with the background; batches up
    to max_batch. Construct, run and close it with the CUDA context current. A failure part
    way through construction frees what was already allocated.
    """

    def __init__(
        self,
        stream: Stream,
        priors_cxcywh: np.ndarray,
        num_classes: int,
        max_batch: int,
        config: PostprocessConfig,
        class_names: Sequence[str] = (),
        driver=None,
        module=None,
    ) -> None:
        self.plan = DecodeNmsPlan(len(priors_cxcywh), num_classes, max_batch, config)
        self.stream = stream
        self.class_names = tuple(class_names)
        self.workspace = self.result = None
        self.kernels: dict = {}
        self._module = None
        self._prepared: dict[tuple[int, int, int], list[tuple]] = {}
        try:
            cuda = driver if driver is not None else import_pycuda()
            if module is None:
                module = compile_module(KERNEL_SOURCE.read_text(), KERNEL_SOURCE.name)
            formats = self.plan.argument_formats()
            for name in self.plan.kernels:
                function = check(f"cuModuleGetFunction({name})", module.get_function, name)
                check(f"prepare({name})", function.prepare, formats[name])
                self.kernels[name] = function
            self._module = module  # the kernels live as long as their module
            self.workspace = DeviceBuffer(self.plan.workspace_bytes, "decode + NMS workspace", driver=cuda)
            self.result = PinnedBuffer((self.plan.result_bytes(max_batch, max_batch * self.plan.max_detections),),
                                       np.uint8, "detections", driver=cuda)
            self.records_per_image = min(FIRST_RECORDS_PER_IMAGE, self.plan.max_detections)
            priors = np.ascontiguousarray(priors_cxcywh, np.float32)
            stream.copy_to_device(self.workspace.address + self.plan.offsets["priors"], priors)
            stream.synchronize()
        except BaseException:
            self.close()
            raise

    def _launches(self, batch: int, locs_address: int, confs_address: int) -> list[tuple]:
        """(kernel name, function, grid, block, shared bytes, arguments) of each launch, built
        once per batch size and pair of output addresses."""
        key = (batch, int(locs_address), int(confs_address))
        launches = self._prepared.get(key)
        if launches is None:
            if len(self._prepared) >= PREPARED_BATCHES:
                self._prepared.clear()
            launches = [(launch.kernel, self.kernels[launch.kernel], launch.grid, launch.block, launch.shared_bytes,
                         launch.args)
                        for launch in self.plan.launches(self.workspace.address, locs_address, confs_address, batch)]
            self._prepared[key] = launches
        return launches

    def run(
        self,
        locs_address: int,
        confs_address: int,
        image_sizes: Sequence[tuple[int, int]],
        timer: StageTimer = NO_TIMER,
    ) -> list[Detections]:
        """Detections of a batch whose raw outputs locs (B, P, 4) and confs (B, P, C), float32,
        are at these device addresses (written by work already queued on the stream).

        With a StageTimer: `decode_nms` times the kernels (up to a stream synchronisation,
        which only a timed run adds) and the unpacking into Detections, `device_to_host` the
        copy of the detections."""
        batch = len(image_sizes)
        plan, stream = self.plan, self.stream
        launches = self._launches(batch, locs_address, confs_address)
        with timer.stage("decode_nms", stream.synchronize):
            for kernel, function, grid, block, shared, args in launches:
                check(f"cuLaunchKernel({kernel})", function.prepared_async_call, grid, block, stream.pycuda_stream,
                      *args, shared_size=shared)
        with timer.stage("device_to_host"):
            source = self.workspace.address + plan.result_offset
            covered = batch * self.records_per_image
            span = plan.result_bytes(batch, covered)
            stream.copy_to_host(self.result.array[:span], source)
            stream.synchronize()
            counts = self.result.array[:batch * 4].view(np.int32).copy()
            total = int(counts.sum())
            if total > covered:  # more detections than any batch so far: copy the rest, and cover them next time
                end = plan.result_bytes(batch, total)
                stream.copy_to_host(self.result.array[span:end], source + span)
                stream.synchronize()
                self.records_per_image = min(-(-total // batch), plan.max_detections)
        with timer.stage("decode_nms"):
            width = plan.record_width
            records = self.result.array[plan.records_offset:plan.result_bytes(batch, total)].view(np.float32)
            return plan.detections(counts, records.reshape(total, width), image_sizes, self.class_names)

    def scores(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The last run's softmax scores (B, C, P) float32 and the default boxes it computed
        them for (B, P) bool, copied back from the workspace (a diagnostic for ssd-doctor and
        the GPU tests; synchronises the stream)."""
        p, c = self.plan.num_priors, self.plan.num_classes
        possible = np.empty((batch, p), np.uint8)
        probs = np.empty((batch, c, p), np.float32)
        self.stream.copy_to_host(possible, self.workspace.address + self.plan.offsets["possible"])
        self.stream.copy_to_host(probs, self.workspace.address + self.plan.offsets["probs"])
        self.stream.synchronize()
        return probs, possible.astype(bool)

    def close(self) -> None:
        for resource in (self.result, self.workspace):
            if resource is not None:
                resource.free()
        self.kernels = {}
        self._prepared = {}
        self._module = None
