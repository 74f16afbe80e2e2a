"""How the CUDA decode + NMS (`decode_nms.cu`) is run: its limits, the layout of its one
device workspace, the kernel launches (three; four with agnostic_nms) with their grids, shared memory and
arguments, the span the host copies back (the per-image counts, then the packed records),
and the conversion of those records into `Detections`.

Pure NumPy, no CUDA: the pycuda launcher (`decode_nms.py`) executes the plan on a
GPU, and the tests execute the very same plan on a CPU emulation of the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ssd_edge.runtime.boxes import BBOX_XFORM_CLIP
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.postprocess.fast import possible_box_bound

KERNEL_SOURCE = Path(__file__).with_name("decode_nms.cu")
KERNELS = ("ssd_softmax", "ssd_class_nms", "ssd_merge")  # per class, the default
AGNOSTIC_KERNELS = ("ssd_softmax", "ssd_class_top_k", "ssd_agnostic_nms", "ssd_pack")  # with agnostic_nms
ALL_KERNELS = KERNELS + AGNOSTIC_KERNELS[1:]  # every entry point of decode_nms.cu

MAX_PRIORS = (1 << 20) - 1  # the merge key holds a default-box index in 20 bits
MAX_CLASSES = 1 << 12  # ... and a class in 12
MAX_TOP_K = 512  # candidates per class: the suppression bit matrix must fit in shared memory
MAX_DETECTIONS = 1024  # merge sort in shared memory
AGNOSTIC_MAX_CHUNK = 256  # candidates per ssd_agnostic_nms chunk (the kernel's AGNOSTIC_MAX_CHUNK)
AGNOSTIC_CHUNK_PER_DETECTION = 4  # chunk: 4 candidates per detection to keep, a power of two, up to the max
RECORD_HEAD = 6  # x1, y1, x2, y2, score, label; then the C softmax scores
SOFTMAX_ROWS = 8  # default boxes per ssd_softmax block, one warp each (the kernel's SOFTMAX_ROWS)
WARP = 32
BLOCK = 256
ALIGNMENT = 256


def _next_power_of_two(value: int) -> int:
    return 1 << max(1, int(value - 1).bit_length())


@dataclass(frozen=True)
class Launch:
    """One kernel launch: grid and block (x, y, z), dynamic shared bytes, and the kernel's
    arguments as NumPy scalars (np.uintp pointers, np.int32, np.float32)."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    args: tuple


class DecodeNmsPlan:
    """Everything about a decode + NMS run for P default boxes, C classes (background
    included), batches up to `max_batch`, and one postprocessing config.

    Per class (the default): ssd_softmax, ssd_class_nms, ssd_merge. With `agnostic_nms`:
    ssd_softmax, ssd_class_top_k (per class the top_k candidates, decoded, no NMS),
    ssd_agnostic_nms (per image, greedy NMS across the classes in the final order, in
    chunks of `agnostic_chunk` candidates) and ssd_pack (the records, packed): one launch
    more, as an image's records can only be placed once the earlier images' NMS has ended.

    Raises ValueError naming the limit when the kernels cannot serve the model.
    """

    def __init__(self, num_priors: int, num_classes: int, max_batch: int, config: PostprocessConfig) -> None:
        if not 1 <= num_priors <= MAX_PRIORS:
            raise ValueError(
                f"the CUDA decode + NMS handles up to {MAX_PRIORS} default boxes, the model has {num_priors}"
            )
        if not 1 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"the CUDA decode + NMS handles 1 to {MAX_CLASSES} classes, the model has {num_classes}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.num_priors, self.num_classes, self.max_batch, self.config = num_priors, num_classes, max_batch, config
        self.top_k = min(config.top_k, num_priors)
        if self.top_k > MAX_TOP_K:
            raise ValueError(
                f"the CUDA decode + NMS keeps at most {MAX_TOP_K} candidates per class; top_k={config.top_k} "
                f"with {num_priors} default boxes needs {self.top_k}: lower top_k or decode on the CPU"
            )
        if config.max_detections > MAX_DETECTIONS:
            raise ValueError(
                f"the CUDA decode + NMS returns at most {MAX_DETECTIONS} detections per image, "
                f"max_detections={config.max_detections}: lower it or decode on the CPU"
            )
        self.agnostic = bool(config.agnostic_nms)
        self.max_detections = config.max_detections
        self.k_pad = _next_power_of_two(self.top_k)
        self.m_pad = _next_power_of_two(self.max_detections)
        self.record_width = RECORD_HEAD + num_classes
        groups = num_classes - 1
        self.agnostic_chunk = min(AGNOSTIC_MAX_CHUNK, _next_power_of_two(
            max(2, min(groups * self.top_k, AGNOSTIC_CHUNK_PER_DETECTION * self.max_detections))))
        sizes = {
            "priors": num_priors * 4 * 4,
            "probs": max_batch * num_classes * num_priors * 4,  # (B, C, P): classes first
            "possible": max_batch * num_priors,  # (B, P) uint8: rows whose softmax is computed
            # per class its kept boxes (with agnostic_nms: its top_k candidates), as merge keys
            "kept_keys": max_batch * groups * self.top_k * 8,
            "kept_boxes": max_batch * groups * self.top_k * 16,
            "kept_count": max_batch * groups * 4,
        }
        if self.agnostic:  # what ssd_agnostic_nms keeps, per image, in the final order
            sizes["agnostic_best"] = max_batch * num_priors * 8  # per default box its best candidate's key
            sizes["nms_keys"] = max_batch * self.max_detections * 8
            sizes["nms_boxes"] = max_batch * self.max_detections * 16
        sizes.update({
            # det_count and packed last and back to back: the host copies both in one span.
            "det_count": max_batch * 4,
            "packed": max_batch * self.max_detections * self.record_width * 4,
        })
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, size in sizes.items():
            self.offsets[name] = offset
            offset += -(-size // ALIGNMENT) * ALIGNMENT
        self.workspace_bytes = offset

    @property
    def class_shared_bytes(self) -> int:
        """Dynamic shared memory of ssd_class_nms: keys, boxes, suppression bits, keep flags."""
        words = -(-self.top_k // 64)
        return self.k_pad * (8 + 16) + self.top_k * words * 8 + self.k_pad

    @property
    def agnostic_shared_bytes(self) -> int:
        """Dynamic shared memory of ssd_agnostic_nms: a chunk's boxes, keys, suppression bits
        and slots, the candidate counts' prefix sums, the chunk's flags."""
        chunk = self.agnostic_chunk
        return chunk * (16 + 8) + chunk * -(-chunk // 64) * 8 + chunk * 4 + self.num_classes * 4 + chunk

    @property
    def kernels(self) -> tuple[str, ...]:
        """The kernels of this plan (launches() leaves out ssd_class_nms or ssd_class_top_k for C = 1)."""
        return AGNOSTIC_KERNELS if self.agnostic else KERNELS

    @property
    def merge_shared_bytes(self) -> int:
        """Dynamic shared memory of ssd_merge: keys, their slots, the kept counts' prefix sums."""
        return self.m_pad * (8 + 4) + self.num_classes * 4

    @property
    def result_offset(self) -> int:
        """Workspace offset of what the host copies back: det_count (max_batch int32), padded
        to the alignment, then the packed records."""
        return self.offsets["det_count"]

    @property
    def records_offset(self) -> int:
        """Where the packed records start, in bytes from `result_offset`."""
        return self.offsets["packed"] - self.offsets["det_count"]

    def result_bytes(self, batch: int, records: int) -> int:
        """Bytes to copy back for a batch's counts and its first `records` records."""
        if not 0 <= records <= batch * self.max_detections:
            raise ValueError(f"{records} records outside 0..{batch * self.max_detections} for a batch of {batch}")
        return self.records_offset + records * self.record_width * 4

    def argument_formats(self) -> dict[str, str]:
        """Each kernel's argument list as a `struct` format (P pointer, i int32, f float32),
        for pycuda's prepared calls: the same for every batch."""
        codes = {np.uintp: "P", np.int32: "i", np.float32: "f"}
        return {launch.kernel: "".join(codes[type(arg)] for arg in launch.args)
                for launch in self._launches(0, 0, 0, 1)}

    def launches(self, workspace: int, locs: int, confs: int, batch: int) -> list[Launch]:
        """The kernel launches for one batch. workspace: device address of the workspace
        (with the default boxes already at offsets["priors"]); locs (B, P, 4) and confs
        (B, P, C): device addresses of float32 network outputs.

        ssd_softmax marks the default boxes that the NumPy path's `possible_box_bound`
        cannot rule out (every box when the threshold is <= 0) and takes the float32
        softmax of those only, one warp per box; ssd_merge writes the records packed, so
        that det_count and the records are one span (`result_offset`, `result_bytes`)."""
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"batch {batch} outside 1..{self.max_batch}")
        launches = self._launches(workspace, locs, confs, batch)
        if self.num_classes == 1:  # background only: no class to search (a grid of 0 blocks is not a launch)
            launches = [launch for launch in launches if launch.kernel not in ("ssd_class_nms", "ssd_class_top_k")]
        return launches

    def _launches(self, workspace: int, locs: int, confs: int, batch: int) -> list[Launch]:
        at = {name: np.uintp(workspace + offset) for name, offset in self.offsets.items()}
        cfg, p, c, i32, f32 = self.config, self.num_priors, self.num_classes, np.int32, np.float32
        log_bound = possible_box_bound(cfg.score_threshold)
        every_row = log_bound is None
        softmax = Launch(
            "ssd_softmax", (-(-p // SOFTMAX_ROWS), batch, 1), (SOFTMAX_ROWS * WARP, 1, 1), 0,
            (np.uintp(confs), at["possible"], at["probs"], i32(p), i32(c),
             f32(0.0 if every_row else log_bound), i32(every_row)),
        )
        if self.agnostic:
            return [softmax] + self._agnostic_launches(at, locs, batch)
        launches = [
            softmax,
            Launch(
                "ssd_class_nms", (c - 1, batch, 1), (BLOCK, 1, 1), self.class_shared_bytes,
                (at["probs"], at["possible"], np.uintp(locs), at["priors"], i32(p), i32(c), i32(self.top_k),
                 i32(self.k_pad), f32(cfg.score_threshold), f32(cfg.iou_threshold), f32(cfg.variances[0]),
                 f32(cfg.variances[1]), f32(BBOX_XFORM_CLIP), at["kept_keys"], at["kept_boxes"], at["kept_count"]),
            ),
            Launch(
                "ssd_merge", (batch, 1, 1), (BLOCK, 1, 1), self.merge_shared_bytes,
                (at["probs"], at["kept_keys"], at["kept_boxes"], at["kept_count"], i32(p), i32(c), i32(self.top_k),
                 i32(self.max_detections), i32(self.m_pad), at["packed"], at["det_count"]),
            ),
        ]
        return launches

    def _agnostic_launches(self, at: dict, locs: int, batch: int) -> list[Launch]:
        cfg, p, c, i32, f32 = self.config, self.num_priors, self.num_classes, np.int32, np.float32
        return [
            Launch(
                "ssd_class_top_k", (c - 1, batch, 1), (BLOCK, 1, 1), 0,
                (at["probs"], at["possible"], np.uintp(locs), at["priors"], i32(p), i32(c), i32(self.top_k),
                 f32(cfg.score_threshold), f32(cfg.variances[0]), f32(cfg.variances[1]), f32(BBOX_XFORM_CLIP),
                 at["kept_keys"], at["kept_boxes"], at["kept_count"]),
            ),
            Launch(
                "ssd_agnostic_nms", (batch, 1, 1), (BLOCK, 1, 1), self.agnostic_shared_bytes,
                (at["kept_keys"], at["kept_boxes"], at["kept_count"], i32(p), i32(c), i32(self.top_k),
                 i32(self.max_detections), i32(self.agnostic_chunk), f32(cfg.iou_threshold), at["agnostic_best"],
                 at["nms_keys"], at["nms_boxes"], at["det_count"]),
            ),
            Launch(
                "ssd_pack", (batch, 1, 1), (BLOCK, 1, 1), 0,
                (at["probs"], at["nms_keys"], at["nms_boxes"], at["det_count"], i32(p), i32(c),
                 i32(self.max_detections), at["packed"]),
            ),
        ]

    def detections(
        self, det_count: np.ndarray, records: np.ndarray, image_sizes: Sequence[tuple[int, int]],
        class_names: Sequence[str] = (),
    ) -> list[Detections]:
        """Detections from the copied-back det_count (B,) and packed records (N, 6 + C),
        boxes scaled to each image's (H, W) exactly as the NumPy reference scales them."""
        results, start = [], 0
        names = tuple(class_names)
        for count, (height, width) in zip(det_count.tolist(), image_sizes):
            rows = records[start:start + count]
            start += count
            scale = np.array([width, height, width, height], np.float32)
            results.append(
                Detections(
                    boxes=(rows[:, :4] * scale).astype(np.float32),
                    labels=rows[:, 5].astype(np.int64),
                    scores=rows[:, 4].copy(),
                    confs=rows[:, RECORD_HEAD:].copy(),
                    class_names=names,
                )
            )
        return results
